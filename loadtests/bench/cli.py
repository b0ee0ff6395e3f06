"""`python -m loadtests.bench`: the flags, the run's plan, and `main` (measure, write bench.json, render)."""

import argparse
import json
import os
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import loadtests.bench
from loadtests.bench import machine
from loadtests.bench.catalog import (
    AUTH_P50_GOAL_MS,
    AUTH_PAIRS,
    BENCHMARKS_MD,
    CONCURRENCY,
    IMGSERVE_EXTRA_ARGS,
    LOG_DIR,
    PLACEMENT_CONCURRENCY,
    QUICK_CONCURRENCY,
    RESULTS_DIR,
    SERVERS,
    TRITON_SERVERS,
    TRITON_VENV,
    imgserve_command_line,
    key_command_line,
)
from loadtests.bench.console import log
from loadtests.bench.limits import measure_limits
from loadtests.bench.markdown import render_markdown, update_markdown
from loadtests.bench.measure import measure_rounds
from loadtests.bench.report import build_report, summarise_contention, write_json
from loadtests.bench.servers import build_servers
from loadtests.bench.triton_venv import ensure_triton_venv
from loadtests.images import DATA_DIR, MIX_NAMES, Mix, load_mix
from loadtests.server_process import PROJECT_ROOT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtests.bench",
        description=loadtests.bench.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke run: short levels, subsets, concurrency 1, 8 and 16")
    add("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    add("--mixes", nargs="+", choices=MIX_NAMES, default=list(MIX_NAMES))
    add(
        "--concurrency",
        type=int,
        nargs="+",
        default=None,
        help=f"default {' '.join(map(str, CONCURRENCY))} (quick: {' '.join(map(str, QUICK_CONCURRENCY))}); "
        f"{PLACEMENT_CONCURRENCY} is always added (the placement ratios compare it)",
    )
    add("--seconds", type=float, default=None, help="per level (default 20, quick 4)")
    add("--warmup", type=float, default=None, help="per server and mix (default 10, quick 2)")
    add("--limit-seconds", type=float, default=None, help="per limit measurement (default 5)")
    add("--web-images", type=int, default=None, help="web mix subset (default all 1000, quick 100)")
    add("--camera-images", type=int, default=None, help="camera mix subset (default all, quick 8)")
    add("--data", type=Path, default=DATA_DIR, help="shared real-photo folder")
    add("--triton-venv", type=Path, default=TRITON_VENV)
    add("--out", type=Path, default=None, help="results JSON (default bench.json; --quick: bench_quick.json)")
    add(
        "--markdown",
        type=Path,
        default=None,
        help="file whose generated section to update (default BENCHMARKS.md; --quick updates none unless given)",
    )
    add("--max-steal", type=float, default=10.0, help="wait before a measurement while CPU steal exceeds this %%")
    add(
        "--rounds",
        type=int,
        default=1,
        help="measure every server this many times, alternating the order; each level keeps its best round",
    )
    add(
        "--max-slowdown",
        type=float,
        default=1.25,
        help="wait before a measurement while the speed probe is slower than this x the run's fastest",
    )
    add(
        "--steal-wait",
        type=float,
        default=None,
        help="most seconds to wait per measurement (default 60, quick 0; 600 s per run at most)",
    )
    add("--no-markdown", action="store_true")
    add("--render-only", action="store_true", help="only regenerate the markdown from --out's JSON")
    return parser.parse_args(argv)


@dataclass(frozen=True)
class Plan:
    """The run's levels and subsets: the flags, or their full-run / --quick defaults."""

    quick: bool
    concurrency: list[int]
    seconds: float
    warmup: float
    limit_seconds: float
    web_images: int | None
    camera_images: int | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "Plan":
        quick = args.quick
        concurrency = args.concurrency or (QUICK_CONCURRENCY if quick else CONCURRENCY)
        return cls(
            quick=quick,
            concurrency=sorted({*concurrency, PLACEMENT_CONCURRENCY}),
            seconds=args.seconds or (4.0 if quick else 20.0),
            warmup=args.warmup if args.warmup is not None else (2.0 if quick else 10.0),
            limit_seconds=args.limit_seconds or (1.0 if quick else 5.0),
            web_images=args.web_images or (100 if quick else None),
            camera_images=args.camera_images or (8 if quick else None),
        )


def configure_gate(args: argparse.Namespace, quick: bool) -> None:
    machine.QUIET.max_steal_pct = args.max_steal
    machine.QUIET.max_slowdown = args.max_slowdown
    machine.QUIET.max_wait_s = args.steal_wait if args.steal_wait is not None else (0.0 if quick else 60.0)


def command_lines(argv: list[str] | None) -> tuple[str, str]:
    """(the python command this run is, the `make bench` line that runs it) for the report."""
    python = sys.executable
    python_rel = os.path.relpath(python, PROJECT_ROOT) if python.startswith(str(PROJECT_ROOT)) else python
    bench_args = argv if argv is not None else sys.argv[1:]
    command = shlex.join([python_rel, "-m", "loadtests.bench", *bench_args])
    make_command = "make bench" + (f" BENCH_ARGS={shlex.quote(shlex.join(bench_args))}" if bench_args else "")
    return command, make_command


def mix_source(name: str) -> str:
    if name == "web":
        return "../shared/data/imagenet-samples/*.JPEG (1000 ImageNet sample photos)"
    return "../shared/data/{blur-samples,exif-samples}/**/*.jpg with >= 3 MP that decode cleanly (Pillow + libjpeg)"


def load_mixes(names: list[str], data: Path, plan: Plan) -> dict[str, Mix]:
    mixes: dict[str, Mix] = {}
    for name in names:
        mixes[name] = load_mix(name, data, plan.web_images if name == "web" else plan.camera_images)
        log(f"mix {name}: {len(mixes[name].images)} images")
    return mixes


def settings_record(plan: Plan, rounds: int, make_command: str, servers: list[str]) -> dict[str, Any]:
    """bench.json's `settings`: how the run was measured, in words and numbers."""
    return {
        "quick": plan.quick,
        "make_command": make_command,
        "concurrency": plan.concurrency,
        "seconds": plan.seconds,
        "warmup": plan.warmup,
        "limit_seconds": plan.limit_seconds,
        "rounds": rounds,
        "images_per_request": 1,
        "imgserve": "the better of imgserve_http and imgserve_grpc (the default placement) at its peak "
        "(see peaks.<mix>.imgserve.server)",
        "imgserve_commands": {name: imgserve_command_line(name) for name in IMGSERVE_EXTRA_ARGS if name in servers},
        "steal_pct": "share of the machine's CPU time stolen by the hypervisor during the level (/proc/stat)",
        "probe_ms": "speed probe before/after the level: ms per fixed single-thread JPEG decode (speed_probe_ms)",
        "steal_gate": {
            "max_steal_pct": machine.QUIET.max_steal_pct,
            "max_slowdown": machine.QUIET.max_slowdown,
            "max_wait_s_per_measurement": machine.QUIET.max_wait_s,
            "waited_s_total": round(machine.QUIET.waited_s, 1),
        },
        "cpu_s": "user+system CPU seconds of the server's process tree during the level (psutil)",
        "peak_rss_mb": "highest sum of RSS over the server's process tree during the level, sampled every 0.5 s",
        "peak_rss_by_process": "that peak split by process (Ray process title or executable), MB",
        "pss_at_peak_mb": "summed PSS of the tree at the moment of that peak (a page shared by several processes "
        "counted once in all, split between them; /proc/PID/smaps_rollup), MB; null where unreadable",
        "client": "loadtests.closed_loop.run_level: asyncio, one connection pool (HTTP) or channel (gRPC) per level",
        **({"auth": auth_record(servers)} if any(name in AUTH_PAIRS for name in servers) else {}),
    }


def auth_record(servers: list[str]) -> dict[str, Any]:
    """bench.json's `settings.auth`: how the auth-on servers differ from their twins (never the key itself)."""
    return {
        "pairs": {name: twin for name, twin in AUTH_PAIRS.items() if name in servers},
        "key_command": key_command_line(),
        "database": "a fresh SQLite file per start (IMGSERVE_DATABASE_URL in a temp folder), the key made in it "
        "before the server starts, both removed when it stops",
        "check": "after each start a call without the key must be refused (401 / UNAUTHENTICATED) and one with it "
        "answered, else the server is recorded as not measured",
        "client": "the same closed-loop clients, sending Authorization: Bearer <key> (HTTP) or authorization "
        "metadata (gRPC) on every request",
        "p50_goal_ms": AUTH_P50_GOAL_MS,
    }


def render_only(args: argparse.Namespace) -> int:
    """Re-render the markdown from a stored bench.json (today's contention rule on the stored levels)."""
    out, markdown = args.out or RESULTS_DIR / "bench.json", args.markdown or BENCHMARKS_MD
    report = json.loads(out.read_text())
    summarise_contention(report["machine"], report["servers"])
    update_markdown(markdown, render_markdown(report))
    log(f"updated {markdown} from {out}")
    return 0


def int8_model_path() -> Path | None:
    """The INT8 ONNX file imgserve serves on CPU (built by `make models`), for Triton to serve the same model."""
    from loadtests.baselines.naive_server import MODEL_NAME
    from serving.repository import ModelRepository

    entry = ModelRepository.scan().entries.get(MODEL_NAME)
    return entry.artifacts.onnx_int8 if entry is not None else None


def measure_servers(
    args: argparse.Namespace, plan: Plan, mixes: dict[str, Mix], model: Path, labels: Path, int8: Path | None
) -> dict[str, dict[str, Any]]:
    """Every server requested, in rounds; a Triton that cannot be set up is recorded with its reason."""
    triton_python, reasons = None, {}
    tritons = [name for name in args.servers if name in TRITON_SERVERS]
    if tritons:
        triton_python, why = ensure_triton_venv(args.triton_venv, create=not plan.quick)
        reasons = dict.fromkeys(tritons, why) if why else {}
    if "triton_int8" in tritons and int8 is None and "triton_int8" not in reasons:
        reasons["triton_int8"] = "no INT8 variant of the model is built (`make models` builds it)"
    for name, why in reasons.items():
        log(f"{name}: skipped: {why}")
    built = build_servers(args.servers, model, labels, triton_python, int8)
    servers = measure_rounds(built, args.rounds, mixes, plan.concurrency, plan.seconds, plan.warmup, LOG_DIR)
    for name, why in reasons.items():
        servers[name] = {**{m: {} for m in mixes}, "error": why}
    return {name: servers[name] for name in SERVERS if name in servers}


def result_files(args: argparse.Namespace, quick: bool) -> tuple[Path, Path | None]:
    """Where a run writes its JSON and which markdown it updates (None: none). A smoke run (--quick) keeps the full
    run's bench.json and the tables BENCHMARKS.md's text refers to (it replaced them) unless told otherwise."""
    out = args.out or RESULTS_DIR / ("bench_quick.json" if quick else "bench.json")
    markdown = args.markdown or (None if quick else BENCHMARKS_MD)
    return out, None if args.no_markdown else markdown


def run(args: argparse.Namespace, argv: list[str] | None) -> int:
    plan = Plan.from_args(args)
    configure_gate(args, plan.quick)
    command, make_command = command_lines(argv)
    machine_info = machine.describe_machine()
    cpus, load = machine_info["logical_cpus"], machine_info["loadavg_start"]
    log(f"machine: {machine_info['cpu_model']}, {cpus} CPUs, load {load}")

    from loadtests.baselines.naive_server import model_files

    model_path, labels_path = model_files()
    mixes = load_mixes(args.mixes, args.data, plan)
    mix_info = {name: {**mix.describe(args.data), "source": mix_source(name)} for name, mix in mixes.items()}
    int8_path = int8_model_path()  # the INT8 ceiling and Triton INT8 both use it
    limit = measure_limits(
        mixes, model_path, plan.limit_seconds, tensors_from=64 if plan.quick else 256, int8_path=int8_path
    )
    servers = measure_servers(args, plan, mixes, model_path, labels_path, int8_path)

    machine_info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    summarise_contention(machine_info, servers)
    settings = settings_record(plan, args.rounds, make_command, args.servers)
    report = build_report(
        machine=machine_info, command=command, mixes=mix_info, servers=servers, limit=limit, settings=settings
    )
    out, markdown = result_files(args, plan.quick)
    write_json(report, out)
    log(f"wrote {out}")
    if markdown is not None:
        update_markdown(markdown, render_markdown(report))
        log(f"updated {markdown}")
    print(json.dumps(report["ratios"], indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    return render_only(args) if args.render_only else run(args, argv)
