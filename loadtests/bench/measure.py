"""Measuring the servers: start one, run every mix x concurrency level against it, stop it; rounds of that."""

import asyncio
import time
from pathlib import Path
from typing import Any

from loadtests.bench import machine
from loadtests.bench.catalog import IMGSERVE_ENV, IMGSERVE_EXTRA_ARGS, TRITON_SERVERS
from loadtests.bench.console import log, oneline
from loadtests.bench.report import level_record
from loadtests.bench.senders import make_triton_sender
from loadtests.bench.servers import Server
from loadtests.closed_loop import SenderFactory, run_level
from loadtests.images import MIX_NAMES, Mix


def start_server(server: Server, log_dir: Path, attempts: int, result: dict[str, Any]) -> None:
    """Start `server`, once more if a start fails (each failure goes to result['failed_starts']); sets startup_s."""
    for attempt in range(1, attempts + 1):
        log(f"{server.name}: starting (attempt {attempt} of {attempts})")
        started = time.perf_counter()
        try:
            server.start(log_dir)
            break
        except RuntimeError as exc:
            # A slow or overloaded machine can miss a start deadline (Ray Serve gives a deploy 60 s): say so
            # in the results and start it once more, fresh, before giving up on this server.
            result.setdefault("failed_starts", []).append(oneline(str(exc), 600))
            server.stop()
            if attempt == attempts:
                raise
            log(f"{server.name}: start failed, retrying: {oneline(str(exc), 200)}")
    result["startup_s"] = round(time.perf_counter() - started, 1)
    log(f"{server.name}: ready after {result['startup_s']} s ({server.url})")


def measure_level(server: Server, mix: Mix, conc: int, seconds: float, sender: SenderFactory | None) -> dict[str, Any]:
    """One level, after the quiet-machine gate: the client's numbers plus the server tree's CPU and RSS."""
    assert server.monitor is not None
    probe_before = machine.QUIET.wait()
    cpu0, _, mon0 = server.monitor.mark()
    times0 = machine.cpu_times()
    level = asyncio.run(run_level(server.url, mix.images, conc, seconds, sender))
    cpu1, peak_rss, mon1 = server.monitor.mark()
    steal = machine.steal_pct(times0, machine.cpu_times())
    probes = (probe_before, machine.QUIET.probe())
    record = level_record(level, cpu1 - cpu0, peak_rss, mon1 - mon0, steal, probes)
    parts = sorted(server.monitor.last_peak_parts.items(), key=lambda kv: -kv[1])
    record["peak_rss_by_process"] = {label: round(mb, 1) for label, mb in parts}
    pss = server.monitor.last_peak_pss
    record["pss_at_peak_mb"] = round(pss, 1) if pss is not None else None
    log(
        f"{server.name} {mix.name} c{conc}: {record['images_per_s']} img/s, p50 {record['p50_ms']} ms, "
        f"p99 {record['p99_ms']} ms, errors {record['errors']}, server {record['server_cores']} cores "
        f"{record['peak_rss_mb']:.0f} MB (PSS {record['pss_at_peak_mb']}), client {record['client_cores']} cores, "
        f"steal {record['steal_pct']} %, speed probe {probes[0]}/{probes[1]} ms"
    )
    return record


def measure_server(
    server: Server,
    mixes: dict[str, Mix],
    concurrency: list[int],
    seconds: float,
    warmup: float,
    log_dir: Path,
    start_attempts: int = 2,
) -> dict[str, Any]:
    """Start `server`, run every mix x concurrency level against it, stop it; {mix: {conc: record}}."""
    result: dict[str, Any] = {mix: {} for mix in mixes}
    if server.name in IMGSERVE_EXTRA_ARGS:
        result["args"] = server.args
    if server.name in IMGSERVE_ENV:
        result["env"] = IMGSERVE_ENV[server.name]  # what sets it apart from its twin (never the key)
    try:
        start_server(server, log_dir, start_attempts, result)
        if server.name in TRITON_SERVERS:
            sender = make_triton_sender(img for mix in mixes.values() for img in mix.images)
        else:
            sender = server.client_sender  # an *_auth server's sender carries its key
        assert server.monitor is not None
        for mix_name, mix in mixes.items():
            if warmup > 0:
                asyncio.run(run_level(server.url, mix.images, max(concurrency), warmup, sender))
            for conc in concurrency:
                result[mix_name][str(conc)] = measure_level(server, mix, conc, seconds, sender)
        result["processes"] = len(server.monitor.pids())
    except Exception as exc:  # noqa: BLE001 - one server failing must not lose the others' results
        result["error"] = f"{type(exc).__name__}: {exc}"
        log(f"{server.name}: FAILED: {oneline(result['error'])}")
    finally:
        server.stop()
        log(f"{server.name}: stopped")
    return result


def best_of_rounds(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One server's rounds merged: per mix and concurrency the round with the most images/s (the level measured
    when the shared machine was fastest, as the limits take their fastest window), with every round's rate
    kept in `round_rates`. Other keys come from the first round; errors from any round are kept."""
    merged = dict(results[0])
    for mix in MIX_NAMES:
        levels = [r.get(mix) or {} for r in results]
        concs = {conc for level in levels for conc in level}
        if not concs:
            continue
        merged[mix] = {}
        for conc in sorted(concs, key=int):
            candidates = [level[conc] for level in levels if conc in level]
            best = dict(max(candidates, key=lambda record: record["images_per_s"]))
            if len(results) > 1:
                best["round_rates"] = [level[conc]["images_per_s"] if conc in level else None for level in levels]
            merged[mix][conc] = best
    errors = [r["error"] for r in results if r.get("error")]
    if errors:
        merged["error"] = "; ".join(errors)
    if len(results) > 1:
        merged["rounds"] = len(results)
    return merged


def measure_rounds(
    built: list[Server],
    rounds: int,
    mixes: dict[str, Mix],
    concurrency: list[int],
    seconds: float,
    warmup: float,
    log_dir: Path,
) -> dict[str, dict[str, Any]]:
    """Every server `rounds` times, alternating the order; {server: its rounds merged by best_of_rounds}."""
    results: dict[str, list[dict[str, Any]]] = {}
    for round_index in range(rounds):
        # Alternate the order so no server is always measured first (or last) in a round.
        for server in built if round_index % 2 == 0 else built[::-1]:
            if rounds > 1:
                log(f"round {round_index + 1} of {rounds}: {server.name}")
            results.setdefault(server.name, []).append(
                measure_server(server, mixes, concurrency, seconds, warmup, log_dir)
            )
    return {name: best_of_rounds(server_rounds) for name, server_rounds in results.items()}
