"""Peaks, ratios and the bench.json document (pure functions: unit-tested on synthetic numbers)."""

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from loadtests.bench import machine
from loadtests.bench.catalog import (
    AUTH_P50_GOAL_MS,
    AUTH_PAIRS,
    GRAPH_SERVER,
    IMGSERVE_SERVERS,
    PLACEMENT_CONCURRENCY,
    PLACEMENT_SERVERS,
)
from loadtests.closed_loop import LevelResult
from loadtests.images import MIX_NAMES

BOTTLENECK_CORES = 0.5  # a generator using less than this many cores of CPU per wall second is not the bottleneck


def peak(levels: dict[str, dict[str, Any]] | None) -> tuple[int, float] | None:
    """(concurrency, images/s) of the level with the highest images/s; None when there is none."""
    best: tuple[int, float] | None = None
    for conc, level in (levels or {}).items():
        rate = level.get("images_per_s")
        if rate is None or not np.isfinite(rate):
            continue
        if best is None or rate > best[1]:
            best = (int(conc), float(rate))
    return best


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return round(a / b, 2)


def mix_peaks(servers: dict[str, dict[str, Any]], limit: dict[str, Any], mix: str) -> dict[str, Any]:
    """Every server's peak on `mix`, imgserve's (the better default-placement edge), the combined limit and the
    INT8 ceiling."""
    per_mix: dict[str, Any] = {}
    for name, result in servers.items():
        found = peak(result.get(mix))
        if found:
            per_mix[name] = {"concurrency": found[0], "images_per_s": found[1]}
    candidates = [(per_mix[n]["images_per_s"], n) for n in IMGSERVE_SERVERS if n in per_mix]
    if candidates:
        _, best = max(candidates)
        per_mix["imgserve"] = {"server": best, **per_mix[best]}
    combined = (limit.get("combined") or {}).get(mix)
    if combined:
        per_mix["limit"] = {"images_per_s": combined, "kind": "combined decode+model limit"}
    int8_ceiling = (limit.get("parallel_int8") or {}).get(mix)
    if int8_ceiling:
        per_mix["int8_ceiling"] = {"images_per_s": int8_ceiling, "kind": "decode on all cores + INT8 model limit"}
    return per_mix


def cpu_ms_per_image(level: dict[str, Any]) -> float | None:
    """Server CPU-ms per answered image at a level: server cores / images per second."""
    cores, rate = level.get("server_cores"), level.get("images_per_s")
    if cores is None or not rate or rate <= 0:
        return None
    return 1000.0 * cores / rate


def _best_at(servers: dict[str, dict[str, Any]], names: Iterable[str], conc: int) -> dict[str, Any] | None:
    """{server, concurrency, images_per_s} of the fastest of `names` on the web mix at `conc`; None if none ran it."""
    found = []
    for name in names:
        rate = ((servers.get(name) or {}).get("web") or {}).get(str(conc), {}).get("images_per_s")
        if rate is not None and np.isfinite(rate):
            found.append((float(rate), name))
    if not found:
        return None
    rate, name = max(found)
    return {"server": name, "concurrency": conc, "images_per_s": rate}


def placement_ratios(
    servers: dict[str, dict[str, Any]], web_peaks: dict[str, Any]
) -> tuple[dict[str, float | None], dict[str, Any]]:
    """(ratios, figures) comparing imgserve's placements on the web mix.

    default_c16_vs_best_placement_c16: the default placement (better of imgserve_http / imgserve_grpc) at
    concurrency 16 over the best imgserve server of any placement at 16; default_c16_vs_naive_peak: the same
    numerator over naive's peak; graph_images_per_cpu_s: the graph placement's images per server CPU-second
    at its own peak (1000 / its CPU-ms per image). Figures: what each ratio was computed from (for the table).
    """
    figures: dict[str, Any] = {}
    default = _best_at(servers, IMGSERVE_SERVERS, PLACEMENT_CONCURRENCY)
    best = _best_at(servers, PLACEMENT_SERVERS, PLACEMENT_CONCURRENCY)
    if default:
        figures["default_c16"] = default
    if best:
        figures["best_c16"] = best
    default_rate = default["images_per_s"] if default else None
    naive = web_peaks.get("naive")
    cpu_ms = None
    graph = web_peaks.get(GRAPH_SERVER)
    if graph:
        level = ((servers.get(GRAPH_SERVER) or {}).get("web") or {}).get(str(graph["concurrency"])) or {}
        cpu_ms = cpu_ms_per_image(level)
        if cpu_ms:
            figures["graph_cpu"] = {
                "server": GRAPH_SERVER,
                **graph,
                "server_cores": level.get("server_cores"),
                "cpu_ms_per_image": round(cpu_ms, 1),
            }
    ratios = {
        "default_c16_vs_best_placement_c16": ratio(default_rate, best["images_per_s"] if best else None),
        "default_c16_vs_naive_peak": ratio(default_rate, naive["images_per_s"] if naive else None),
        "graph_images_per_cpu_s": ratio(1000.0, cpu_ms),
    }
    return ratios, figures


def compute_ratios(
    servers: dict[str, dict[str, Any]], limit: dict[str, Any]
) -> tuple[dict[str, float | None], dict[str, Any]]:
    """(ratios, peaks). imgserve = the better of imgserve_http / imgserve_grpc at its own peak, per mix; each
    baseline at its own peak; the limit is the combined decode+model limit of that mix, the INT8 ceiling the
    decode-on-all-cores + INT8 model limit (where the INT8 model was measured). Then the placement
    ratios (`placement_ratios`), whose figures go into peaks.web.{default_c16, best_c16, graph_cpu}."""
    peaks = {mix: mix_peaks(servers, limit, mix) for mix in MIX_NAMES}

    def rate(mix: str, name: str) -> float | None:
        entry = peaks[mix].get(name)
        return entry["images_per_s"] if entry else None

    ratios = {
        "imgserve_vs_naive": ratio(rate("web", "imgserve"), rate("web", "naive")),
        "imgserve_vs_triton": ratio(rate("web", "imgserve"), rate("web", "triton")),
        "imgserve_vs_triton_int8": ratio(rate("web", "imgserve"), rate("web", "triton_int8")),
        "imgserve_vs_limit": ratio(rate("web", "imgserve"), rate("web", "limit")),
        "imgserve_vs_int8_ceiling": ratio(rate("web", "imgserve"), rate("web", "int8_ceiling")),
        "camera_imgserve_vs_naive": ratio(rate("camera", "imgserve"), rate("camera", "naive")),
        "camera_imgserve_vs_triton": ratio(rate("camera", "imgserve"), rate("camera", "triton")),
        "camera_imgserve_vs_triton_int8": ratio(rate("camera", "imgserve"), rate("camera", "triton_int8")),
        "camera_imgserve_vs_limit": ratio(rate("camera", "imgserve"), rate("camera", "limit")),
        "camera_imgserve_vs_int8_ceiling": ratio(rate("camera", "imgserve"), rate("camera", "int8_ceiling")),
    }
    placement, figures = placement_ratios(servers, peaks["web"])
    ratios.update(placement)
    peaks["web"].update(figures)
    return ratios, peaks


def auth_overhead(servers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Auth on vs off, per *_auth server and mix both it and its twin measured: the single-image p50 (concurrency
    1) of each and the difference in ms (goal: at most AUTH_P50_GOAL_MS more), and each one's peak images/s with
    the change in %. A figure either side lacks is None (and so is the verdict)."""
    rows = []
    for auth_name, plain_name in AUTH_PAIRS.items():
        for mix in MIX_NAMES:
            on, off = (servers.get(auth_name) or {}).get(mix), (servers.get(plain_name) or {}).get(mix)
            if not on or not off:
                continue
            p50_on, p50_off = (on.get("1") or {}).get("p50_ms"), (off.get("1") or {}).get("p50_ms")
            delta = round(p50_on - p50_off, 2) if p50_on is not None and p50_off is not None else None
            peak_on, peak_off = peak(on), peak(off)
            change = None
            if peak_on and peak_off and peak_off[1] > 0:
                change = round(100.0 * (peak_on[1] - peak_off[1]) / peak_off[1], 1)
            rows.append(
                {
                    "server": auth_name,
                    "baseline": plain_name,
                    "mix": mix,
                    "p50_c1_off_ms": p50_off,
                    "p50_c1_on_ms": p50_on,
                    "p50_c1_delta_ms": delta,
                    "p50_goal_ms": AUTH_P50_GOAL_MS,
                    "p50_goal_met": None if delta is None else delta <= AUTH_P50_GOAL_MS,
                    "peak_off": {"concurrency": peak_off[0], "images_per_s": peak_off[1]} if peak_off else None,
                    "peak_on": {"concurrency": peak_on[0], "images_per_s": peak_on[1]} if peak_on else None,
                    "peak_change_pct": change,
                }
            )
    return rows


def finite(value: float | None) -> float | None:
    """JSON has no NaN: a level without a single answer has no latency."""
    return value if value is not None and np.isfinite(value) else None


def level_record(
    result: LevelResult,
    cpu_s: float,
    peak_rss_mb: float,
    monitor_cpu_s: float = 0.0,
    steal: float | None = None,
    probe_ms: tuple[float, float] | None = None,
) -> dict[str, Any]:
    """One (server, mix, concurrency) entry of bench.json."""
    client_cpu = max(0.0, result.client_cpu_s - monitor_cpu_s)
    seconds = result.seconds or float("nan")
    return {
        "images_per_s": result.images_per_s,
        "p50_ms": finite(result.p50_ms),
        "p99_ms": finite(result.p99_ms),
        "errors": result.errors,
        "cpu_s": round(cpu_s, 2),
        "peak_rss_mb": round(peak_rss_mb, 1),
        "requests": result.requests,
        "seconds": result.seconds,
        "server_cores": finite(round(cpu_s / seconds, 2)),
        "client_cpu_s": round(client_cpu, 2),
        "client_cores": finite(round(client_cpu / seconds, 3)),
        "steal_pct": steal,
        # Speed probe just before and just after the level (ms, lower = faster machine): see speed_probe_ms.
        "probe_ms": list(probe_ms) if probe_ms else None,
    }


def all_levels(servers: dict[str, dict[str, Any]]) -> Iterator[tuple[str, str, str, dict[str, Any]]]:
    """(server, mix, concurrency, record) of every measured level in a report's `servers`."""
    for name, result in servers.items():
        for mix in MIX_NAMES:
            for conc, level in (result.get(mix) or {}).items():
                if isinstance(level, dict):
                    yield name, mix, conc, level


def generator_summary(servers: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The load generator's worst CPU use over all levels and whether it could have been the bottleneck."""
    worst: tuple[float, str] = (0.0, "")
    for name, mix, conc, level in all_levels(servers):
        cores = level.get("client_cores") or 0.0
        if cores > worst[0]:
            worst = (cores, f"{name}/{mix}/c{conc}")
    return {
        "max_client_cores": worst[0],
        "at": worst[1],
        "bottleneck": worst[0] >= BOTTLENECK_CORES,
        "criterion": f"generator CPU seconds / wall seconds < {BOTTLENECK_CORES} of one core at every level",
    }


def summarise_contention(machine_info: dict[str, Any], servers: dict[str, Any]) -> None:
    """Set machine['max_steal_pct'], ['probe_ms_range'], ['slowdown_max'] and ['contended'] from the levels."""
    levels = [level for _, _, _, level in all_levels(servers)]
    steals = [level["steal_pct"] for level in levels if level.get("steal_pct") is not None]
    if steals:
        # On a VM the load average counts the benchmark's own processes; steal says whether others took the CPU.
        machine_info["max_steal_pct"] = max(steals)
        machine_info["contended"] = max(steals) > machine.QUIET.max_steal_pct
    # The probe before each level (after the gate) says what machine the level ran on; the probe after it can
    # still see the server winding down (in-flight answers, Ray's metric pushes), so it is shown, not judged.
    probes = [level["probe_ms"][0] for level in levels if level.get("probe_ms")]
    if probes:
        machine_info["probe_ms_range"] = [min(probes), max(probes)]
        machine_info["slowdown_max"] = round(max(probes) / min(probes), 2)
        slower = machine_info["slowdown_max"] > machine.QUIET.max_slowdown
        machine_info["contended"] = machine_info.get("contended", False) or slower


def build_report(
    *,
    machine: dict[str, Any],
    command: str,
    mixes: dict[str, Any],
    servers: dict[str, dict[str, Any]],
    limit: dict[str, Any],
    settings: dict[str, Any],
) -> dict[str, Any]:
    """The bench.json document: machine, command, mixes, servers, limit, ratios (+ peaks, auth overhead, generator,
    settings)."""
    ratios, peaks = compute_ratios(servers, limit)
    return {
        "machine": machine,
        "command": command,
        "mixes": mixes,
        "servers": servers,
        "limit": limit,
        "ratios": ratios,
        "peaks": peaks,
        "auth_overhead": auth_overhead(servers),
        "generator": generator_summary(servers),
        "settings": settings,
    }


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, allow_nan=False, default=str) + "\n")
