"""`imgserve batch DIR --url ... --out results.jsonl`: one batch job for a folder, with a progress bar.

The SDK (and its HTTP stack) loads when the command runs, not when `imgserve` builds its parser: `imgserve convert`
and the other local commands do not carry it."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from serving.client.batch import BatchJob

OUT_SUFFIXES = (".csv", ".jsonl")  # the results files `imgserve batch --out` writes

BAR_WIDTH = 30


def progress_line(job: BatchJob) -> str:
    finished = job.done + job.failed
    filled = int(BAR_WIDTH * job.progress)
    rate = f"  {job.images_per_s:.1f} img/s" if job.images_per_s else ""
    failed = f"  {job.failed} failed" if job.failed else ""
    return f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {finished}/{job.total} {job.status}{failed}{rate}"


class ProgressBar:
    """Redraws one line on a terminal; elsewhere (logs, CI) prints a line every `every_s` seconds."""

    def __init__(self, stream: TextIO | None = None, every_s: float = 5.0):
        # sys.stderr when called, not when this module was imported (a redirected stderr may be closed by now)
        self.stream, self.every_s, self._last = stream or sys.stderr, every_s, 0.0
        self.tty = self.stream.isatty()

    def __call__(self, job: BatchJob) -> None:
        if self.tty:
            self.stream.write("\r" + progress_line(job) + ("\n" if job.finished else ""))
            self.stream.flush()
        elif job.finished or time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            print(progress_line(job), file=self.stream, flush=True)


def _cmd_batch(args: argparse.Namespace) -> int:
    from serving.client import Client, ImgServeError
    from serving.client.errors import error_line

    stages = [s.strip() for value in args.stages or () for s in value.split(",") if s.strip()] or None
    out = Path(args.out)
    if out.is_dir() or not out.resolve().parent.is_dir():  # found out before the upload and the wait, not after
        print(f"imgserve: error: --out {args.out}: not a file in an existing folder", file=sys.stderr)
        return 2
    if out.suffix.lower() not in OUT_SUFFIXES:  # results.xlsx got JSON lines
        print(f"imgserve: error: --out {args.out}: not a {' or '.join(OUT_SUFFIXES)} file", file=sys.stderr)
        return 2
    key_sent = False
    job: BatchJob | None = None
    try:
        with Client(args.url, timeout=args.timeout, api_key=args.api_key) as client:
            key_sent = client.authenticated
            job = client.submit_batch(args.inputs, model=args.model, top_k=args.top_k, stages=stages)
            print(f"job {job.job_id}: {job.total} images submitted", file=sys.stderr)
            job = client.wait(job, poll_s=args.poll, on_progress=ProgressBar())
            if out.suffix.lower() == ".csv":
                out.write_text(client.batch.results_csv(job))
            else:
                with out.open("w") as handle:
                    for result in client.job_results(job):
                        handle.write(_json_line(result.raw))
    except (ValueError, FileNotFoundError) as exc:
        print(f"imgserve: error: {exc}", file=sys.stderr)
        _where_results_are(job)
        return 2
    except (ImgServeError, OSError) as exc:
        print(f"imgserve: error: {error_line(exc, key_sent)}", file=sys.stderr)
        _where_results_are(job)
        return 1
    print(f"job {job.job_id} {job.status}: {job.done} done, {job.failed} failed -> {out}", file=sys.stderr)
    return 0 if job.status == "completed" else 1


def _where_results_are(job: BatchJob | None) -> None:
    """After a failure once the job has ended (its results could not be fetched or saved): where they are."""
    if job is not None and job.finished:
        print(f"imgserve: job {job.job_id} is {job.status}: GET /v1/jobs/{job.job_id}/results", file=sys.stderr)


def _json_line(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":")) + "\n"


def add_batch_command(sub: Any, default_url: str) -> argparse.ArgumentParser:
    command = sub.add_parser("batch", help="run a folder of images as one batch job and save the results")
    command.add_argument("inputs", nargs="+", metavar="DIR_OR_IMG", help="folders (walked for images) and/or files")
    command.add_argument("--url", default=default_url, help=f"server http(s)://host:port (default {default_url})")
    command.add_argument("--out", required=True, help="results file: .jsonl (one JSON object per image) or .csv")
    command.add_argument("--model", default=None, help="model name (default: the server's default classifier)")
    command.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    command.add_argument("--stages", action="append", help="stages to run, repeatable or comma-separated")
    command.add_argument("--poll", type=float, default=1.0, help="seconds between status polls (default 1)")
    command.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP call (default 120)")
    command.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="API key (default: $IMGSERVE_API_KEY; prefer the variable, flags show in ps)",
    )
    command.set_defaults(func=_cmd_batch)
    return command
