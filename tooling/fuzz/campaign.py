"""Coverage-guided fuzzing campaigns (atheris, i.e. libFuzzer over Python) of the targets in `tooling.fuzz.targets`.

    python -m tooling.fuzz.campaign --runs 150000              # every target, one after another (`make fuzz`)
    python -m tooling.fuzz.campaign --target decode --runs 1000 # one target
    python -m tooling.fuzz.campaign --runs 2000 --jobs 2        # two targets at a time (the CI test's form)
    python -m tooling.fuzz.campaign --merge                     # fold the grown corpora into the committed one
    python -m tooling.fuzz.campaign --replay                    # seeds + committed corpus only (CI)

Each target runs in its own process, started from its seeds (`tooling.fuzz.seeds`), the committed regression
corpus (`tests/fuzz/corpus/<target>/`) and the corpus earlier campaigns grew (`build/fuzz/<target>/corpus`).
The code under test is instrumented (pipelines, serving, Pillow's Python plugins) so libFuzzer steers towards
new branches. An input the server would answer with a 5xx, an input slower than `--timeout` seconds, or memory
above `--rss-limit-mb` is a finding, saved as `build/fuzz/<target>/crash-*` (or `timeout-*`, `oom-*`): copy it into
`tests/fuzz/corpus/<target>/` with the fix, and CI replays it forever. Figures go to `build/fuzz/summary.json`.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORK = ROOT / "build" / "fuzz"
CORPUS = ROOT / "tests" / "fuzz" / "corpus"
STAT = re.compile(r"stat::(\w+):\s*(\d+)")


def _child(target: str, args: list[str]) -> None:
    """Inside the campaign process: instrument, then hand over to libFuzzer (which exits the process)."""
    import logging
    import warnings

    import atheris

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    with atheris.instrument_imports(include=["pipelines", "serving", "PIL", "tooling"]):
        from tooling.fuzz.targets import check

    def one(data: bytes) -> None:
        check(target, data)

    # libFuzzer re-runs argv[0] for -merge: a wrapper that lands back here (see `_wrapper`)
    atheris.Setup([os.environ.get("IMGSERVE_FUZZ_ARGV0", sys.argv[0]), *args], one)
    atheris.Fuzz()


def _write_seeds(target: str) -> Path:
    from tooling.fuzz.seeds import SEEDS

    folder = WORK / target / "seeds"
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in SEEDS[target]():
        (folder / name).write_bytes(data)
    return folder


def run_target(target: str, runs: int, timeout_s: int, rss_limit_mb: int, max_len: int) -> dict[str, object]:
    """One campaign in a child process; returns its figures (executions, peak RSS, findings)."""
    work = WORK / target
    corpus = work / "corpus"
    corpus.mkdir(parents=True, exist_ok=True)
    committed = CORPUS / target
    committed.mkdir(parents=True, exist_ok=True)
    seeds = _write_seeds(target)
    before = {p.name for p in work.glob("*-*") if p.is_file()}
    args = [
        f"-runs={runs}",
        f"-timeout={timeout_s}",
        f"-rss_limit_mb={rss_limit_mb}",
        f"-max_len={max_len}",
        "-print_final_stats=1",
        f"-artifact_prefix={work}/",
        "-close_fd_mask=1",  # the code under test writes nothing to stdout worth keeping
        str(corpus),
        str(seeds),
        str(committed),
    ]
    start = time.monotonic()
    command = [sys.executable, "-m", "tooling.fuzz.campaign", "--child", target, "--", *args]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    elapsed = time.monotonic() - start
    stats = {name: int(value) for name, value in STAT.findall(result.stderr)}
    findings = sorted(p.name for p in work.glob("*-*") if p.is_file() and p.name not in before)
    figures = {
        "target": target,
        "executions": stats.get("number_of_executed_units", 0),
        "peak_rss_mb": stats.get("peak_rss_mb"),
        "new_units": stats.get("new_units_added"),
        "seconds": round(elapsed, 1),
        "exit_code": result.returncode,
        "findings": findings,
    }
    if result.returncode != 0 or findings:
        figures["log_tail"] = result.stderr[-4000:]
    return figures


def _wrapper(target: str) -> Path:
    """An executable that runs this target's child process with the arguments libFuzzer gives it."""
    script = WORK / target / "run-target"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(
        f'#!/bin/sh\ncd {ROOT}\nexec {sys.executable} -m tooling.fuzz.campaign --child {target} -- "$@"\n'
    )
    script.chmod(0o755)
    return script


def replay(targets: list[str]) -> dict[str, object]:
    """Every seed and committed corpus input through its target, in this process: {target: inputs or finding}."""
    import warnings

    from tooling.fuzz.seeds import SEEDS

    warnings.simplefilter("ignore")  # Pillow warns on every damaged input: the point of the corpus
    from tooling.fuzz.targets import FuzzFinding, check

    results: dict[str, object] = {}
    for target in targets:
        inputs = list(SEEDS[target]())
        folder = CORPUS / target
        inputs += [(p.name, p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()] if folder.is_dir() else []
        results[target] = len(inputs)
        for name, data in inputs:
            try:
                check(target, data)
            except FuzzFinding as exc:
                results[target] = f"{name}: {exc}"
                break
    return results


def merge(target: str) -> int:
    """Minimise seeds + grown corpus into the committed corpus (only inputs that add coverage); returns its size."""
    committed = CORPUS / target
    committed.mkdir(parents=True, exist_ok=True)
    seeds = _write_seeds(target)
    grown = WORK / target / "corpus"
    grown.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tooling.fuzz.campaign", "--child", target, "--"]
    command += ["-merge=1", "-max_len=16384", str(committed), str(seeds), str(grown)]
    env = {**os.environ, "IMGSERVE_FUZZ_ARGV0": str(_wrapper(target))}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        print(result.stderr[-2000:], file=sys.stderr)
    return len(list(committed.iterdir()))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        _child(argv[1], argv[3:])
        return 0
    from tooling.fuzz.targets import TARGETS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", choices=sorted(TARGETS), action="append", help="default: every target")
    parser.add_argument("--runs", type=int, default=150_000, help="inputs per target")
    parser.add_argument("--timeout", type=int, default=10, help="seconds one input may take (a hang otherwise)")
    parser.add_argument("--rss-limit-mb", type=int, default=2048, help="memory bound of the campaign process")
    parser.add_argument("--max-len", type=int, default=65536, help="largest input libFuzzer makes")
    parser.add_argument("--merge", action="store_true", help="minimise the grown corpora into tests/fuzz/corpus")
    parser.add_argument("--replay", action="store_true", help="run the seeds and the committed corpus only")
    parser.add_argument("--summary", type=Path, default=WORK / "summary.json")
    parser.add_argument("--jobs", type=int, default=1, help="targets fuzzed at once (each in its own process)")
    options = parser.parse_args(argv)
    targets = options.target or sorted(TARGETS)
    if options.replay:
        results = replay(targets)
        print(json.dumps(results))
        return 0 if all(isinstance(v, int) for v in results.values()) else 1
    if options.merge:
        for target in targets:
            print(f"{target}: {merge(target)} inputs in {CORPUS / target}")
        return 0

    def campaign(target: str) -> dict[str, object]:
        figures = run_target(target, options.runs, options.timeout, options.rss_limit_mb, options.max_len)
        print(json.dumps({k: v for k, v in figures.items() if k != "log_tail"}), flush=True)
        if "log_tail" in figures:
            print(figures["log_tail"], file=sys.stderr)
        return figures

    # Each target's campaign is a child process with its own work folder: several can run at once.
    with ThreadPoolExecutor(max_workers=max(1, options.jobs)) as pool:
        results = list(pool.map(campaign, targets))
    total = sum(int(r["executions"]) for r in results)  # type: ignore[call-overload]
    failed = [r["target"] for r in results if r["exit_code"] != 0 or r["findings"]]
    options.summary.parent.mkdir(parents=True, exist_ok=True)
    options.summary.write_text(json.dumps({"total_executions": total, "targets": results}, indent=2) + "\n")
    print(f"{total} inputs over {len(results)} targets; findings in: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
