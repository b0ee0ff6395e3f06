"""`imgserve convert DIR --to webp --quality 80 --out OUTDIR` and `imgserve enhance DIR --auto --out OUTDIR`.

Files are processed in this process (no server needed) by the same code the server runs for `/v1/convert` and
`/v1/enhance` (`pipelines.convert`, `pipelines.enhance`; enhance's quality verdicts from `serving.local_quality`), on
`--workers` threads, with a progress bar. Outputs keep the input's relative path under OUTDIR, with the output
format's extension and `--suffix` added to the name; inputs whose outputs would share a name are named apart
(`IMG_1.HEIC`, `IMG_1.JPG` -> `IMG_1_HEIC.webp`, `IMG_1_JPG.webp`); no input is ever overwritten, and outputs are
written whole (a temporary file renamed). Ctrl-C finishes and reports the files in progress (exit 130). A per-file
report (sizes, ratio, operations, scores) goes to OUTDIR/report.jsonl; failures are reported and counted, the rest
goes on.
A bad option value or input (an unknown format, a quality out of range, a missing path) is one line `imgserve: error:
...` and exit 2 before any file is read or written.
"""

from __future__ import annotations

import argparse
import functools
import json
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from serving.regular_files import write_file_atomically
from serving.spreadsheet import terminal_text

# Only the parser is built on every `imgserve` start (`imgserve serve` included): the image libraries load when a
# convert/enhance command runs.
if TYPE_CHECKING:
    from pipelines.convert import ConvertOptions, ConvertResult

    Work = Callable[[bytes], tuple[ConvertResult, dict[str, Any]]]

USAGE_EXIT = 2  # as argparse and the other commands: a bad option or input
INTERRUPTED_EXIT = 130  # the shell's code for a command ended by Ctrl-C (128 + SIGINT)


class UsageError(ValueError):
    """A bad option or input of `convert` / `enhance`, found before any file is read or written."""


def _usage_errors(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`command(args)`, where a bad option value (pipelines' InvalidOptionError: an unknown format, a quality out of
    range, an unknown operation) or input (UsageError: a missing path) is one line `imgserve: error: ...` and exit 2,
    as argparse's and the server-backed commands' mistakes are, not a traceback. Both are raised before any file is
    read or written; one image's own errors are that image's report line (`_run`)."""

    @functools.wraps(command)
    def run(args: argparse.Namespace) -> int:
        from pipelines.convert.vips_io import vips_threads
        from pipelines.errors import InvalidOptionError

        try:
            try:
                vips_threads()  # IMGSERVE_VIPS_THREADS, as `imgserve serve` checks it
            except ValueError as exc:
                raise UsageError(str(exc)) from None
            return command(args)
        except (InvalidOptionError, UsageError) as exc:
            print(f"imgserve: error: {terminal_text(str(exc))}", file=sys.stderr)  # paths: anyone's text
            return USAGE_EXIT

    return run


def _conversion_options(args: argparse.Namespace) -> ConvertOptions:
    from pipelines.convert import ConvertOptions

    raw: dict[str, Any] = {
        "format": args.to,
        "quality": args.quality,
        "lossless": args.lossless or None,
        "max_side": args.max_side,
        "width": args.width,
        "height": args.height,
        "metadata": "strip" if args.strip_metadata else None,
        "anonymize": args.anonymize or None,
    }
    for item in args.option or []:
        key, equals, value = item.partition("=")
        if not equals or not key.strip():
            raise UsageError(f"--option {item!r}: expected KEY=VALUE (e.g. --option effort=6)")
        raw[key.strip()] = value.strip()
    return ConvertOptions.parse(**raw)


def _relative_names(files: list[Path], roots: list[Path]) -> list[str]:
    """Each file's name under OUTDIR: its path below the folder argument it was found in, else its own name."""
    names = []
    for path in files:
        root = next((r for r in roots if r in path.parents), None)
        names.append((path.relative_to(root) if root is not None else Path(path.name)).as_posix())
    return names


def _input_files(args: argparse.Namespace) -> list[Path]:
    """The image files of the path arguments (folders walked), and the checks of what the run will write to; a
    UsageError (exit 2) before anything is written: an earlier run's outputs and report.jsonl stay as they were."""
    from serving.image_files import expand_images

    if args.workers < 1:  # ThreadPoolExecutor refused it only once the outputs' folder had been made (a traceback)
        raise UsageError(f"--workers {args.workers}: at least 1 thread is needed")
    missing = next((path for path in args.paths if not Path(path).exists()), None)
    if missing is not None:  # as `imgserve batch` says it; it was one failed image with no reason on screen
        raise UsageError(f"no such file or folder: {missing}")
    if "/" in args.suffix or "\\" in args.suffix:  # '/../x' wrote outside --out
        raise UsageError(f"--suffix {args.suffix!r}: a suffix of the file name, without '/' or '\\'")
    unreadable: list[Path] = []
    files = [Path(p) for p in expand_images(args.paths, unreadable)]
    if not files:
        raise UsageError(f"no image files in {' '.join(args.paths)}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {args.out} is not a folder")
    for folder in unreadable:  # the walk goes on without them: said, not left out in silence
        print(
            f"imgserve: warning: cannot read folder {terminal_text(str(folder))}: its images are left out",
            file=sys.stderr,
        )
    return files


# Files submitted ahead of the one being reported, per worker: enough to keep every worker busy while the report is
# written in input order, and a bound on what waits (all of a folder's futures at once grew with the folder).
IN_FLIGHT_PER_WORKER = 4


def _bounded(
    pool: ThreadPoolExecutor,
    one: Callable[[int, Path], dict[str, Any]],
    files: list[Path],
    window: int,
    stopped: threading.Event,
) -> Iterator[tuple[Path, Future[dict[str, Any]]]]:
    """(path, future of `one(index, path)`) in input order, with at most `window` submitted and not yet yielded.
    Once `stopped`, nothing more is submitted and what has not started is cancelled; the rest is yielded."""
    pending: deque[tuple[Path, Future[dict[str, Any]]]] = deque()
    for index, path in enumerate(files):
        if stopped.is_set():
            break
        pending.append((path, pool.submit(one, index, path)))
        if len(pending) >= window:
            yield pending.popleft()
    if stopped.is_set():
        for _, future in pending:
            future.cancel()
    while pending:
        yield pending.popleft()


@contextmanager
def _stopped_by_ctrl_c() -> Iterator[threading.Event]:
    """An event set by the first Ctrl-C (SIGINT) of the run: the images in progress finish and are reported, no
    other starts, and the command ends with INTERRUPTED_EXIT. A second Ctrl-C stops at once (KeyboardInterrupt). The
    first used to raise KeyboardInterrupt wherever it landed: a traceback, and outputs on disk the report left out."""
    stopped = threading.Event()

    def on_ctrl_c(signum: int, frame: Any) -> None:
        if stopped.is_set():
            raise KeyboardInterrupt
        stopped.set()
        print("\nimgserve: stopping after the images in progress (Ctrl-C again to stop now)", file=sys.stderr)

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, on_ctrl_c) if main_thread else None
    try:
        yield stopped
    finally:
        if main_thread:
            signal.signal(signal.SIGINT, previous)


class _NoProgress:
    """--quiet: what the loop calls on a progress bar, without loading rich (3 MB of a bulk process's peak)."""

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        pass


@contextmanager
def _progress(label: str, quiet: bool) -> Iterator[Any]:
    if quiet:
        yield _NoProgress()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = (TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"))
    with Progress(*columns, TimeRemainingColumn()) as progress:
        yield progress


def _run(args: argparse.Namespace, label: str, files: list[Path], work: Work) -> int:
    import pyvips

    from pipelines.convert.names import output_bases, output_name
    from pipelines.errors import ImageInputError
    from serving.memory import bound_decodes_for_bulk, tune_malloc_for_bulk

    try:
        tune_malloc_for_bulk()
        bound_decodes_for_bulk(args.workers)
    except ValueError as exc:  # IMGSERVE_MALLOC_ARENAS or IMGSERVE_DECODE_BUDGET_MB that is not a whole number >= 0
        raise UsageError(str(exc)) from None
    names = _relative_names(files, [Path(p) for p in args.paths if Path(p).is_dir()])
    bases = output_bases(list(enumerate(names)))  # IMG_1.HEIC and IMG_1.JPG must not both write IMG_1.webp
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"imgserve: error: could not make --out {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    failed = seen = 0
    first_failure = ""
    total_in = total_out = 0
    start = time.perf_counter()

    inputs = {path.resolve() for path in files}  # an output inside an input folder must not replace another input

    def one(index: int, path: Path) -> dict[str, Any]:
        data = path.read_bytes()
        result, extra = work(data)
        target = out / output_name(bases.get(index, names[index]), args.suffix, result)
        if target.resolve() in inputs:
            raise ValueError(f"output {target} would overwrite an input: give --suffix or another --out")
        target.parent.mkdir(parents=True, exist_ok=True)
        write_file_atomically(target, result.data)
        return {"image": str(path), "output": str(target), **result.summary(), **extra}

    try:
        report = (out / "report.jsonl").open("w")
    except OSError as exc:
        print(f"imgserve: error: cannot write {out / 'report.jsonl'}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with (
        _progress(label, args.quiet) as progress,
        ThreadPoolExecutor(args.workers) as pool,
        report,
        _stopped_by_ctrl_c() as stopped,
    ):
        task = progress.add_task(label, total=len(files), rate="")
        window = IN_FLIGHT_PER_WORKER * args.workers
        for path, future in _bounded(pool, one, files, window, stopped):
            if future.cancelled():  # not started when Ctrl-C came: neither written nor reported
                continue
            try:
                record = future.result()
                total_in += record["input_bytes"]
                total_out += record["output_bytes"]
            except (ImageInputError, OSError, ValueError, pyvips.Error) as exc:
                failed += 1
                record = {"image": str(path), "error": str(exc), "kind": getattr(exc, "kind", type(exc).__name__)}
                first_failure = first_failure or f"{path}: {exc}"
            except Exception as exc:  # noqa: BLE001 - a bug met on one file fails that file, not the whole run
                failed += 1
                error = f"internal error: {type(exc).__name__}: {exc}"
                record = {"image": str(path), "error": error, "kind": "internal_error"}
                first_failure = first_failure or f"{path}: {error}"
            report.write(json.dumps(record) + "\n")
            seen += 1
            rate = seen / max(time.perf_counter() - start, 1e-6)
            progress.update(task, advance=1, rate=f"{rate:.1f} img/s" + (f", {failed} failed" if failed else ""))
    done = seen - failed
    ratio = total_in / total_out if total_out else 0.0
    print(f"{done} written to {out}, {failed} failed; {total_in} -> {total_out} bytes (ratio {ratio:.2f});"
          f" report: {out / 'report.jsonl'}")  # fmt: skip
    if stopped.is_set():
        print(
            f"imgserve: stopped by Ctrl-C after {seen} of {len(files)} images (the report lists them)", file=sys.stderr
        )
        return INTERRUPTED_EXIT
    if failed:  # the reasons are in the report; the first one on screen
        print(
            f"imgserve: {failed} of {len(files)} images failed (see report.jsonl), e.g. {terminal_text(first_failure)}",
            file=sys.stderr,
        )
    return 1 if failed and not done else 0


@_usage_errors
def _cmd_convert(args: argparse.Namespace) -> int:
    from pipelines.convert import convert_image
    from pipelines.limits import DecodeLimits

    options = _conversion_options(args)
    files = _input_files(args)
    limits = DecodeLimits()
    return _run(args, "convert", files, lambda data: (convert_image(data, options, limits), {}))


@_usage_errors
def _cmd_enhance(args: argparse.Namespace) -> int:
    from pipelines.enhance import EnhanceOptions, should_revert, without_auto
    from pipelines.enhance.image import enhance_image
    from pipelines.enhance.plan import auto_step
    from pipelines.limits import DecodeLimits
    from serving.local_quality import LocalQuality

    convert = _conversion_options(args)
    factors = {name: getattr(args, name) for name in ("brightness", "contrast", "saturation", "sharpness")}
    options = EnhanceOptions.parse(auto=True if args.auto else None, ops=args.ops, **factors)
    files = _input_files(args)  # before the quality model loads
    limits = DecodeLimits()
    quality = LocalQuality(limits) if options.auto or args.scores else None

    def work(data: bytes) -> tuple[ConvertResult, dict[str, Any]]:
        before = quality.verdict(data) if quality else None
        tags = [t.name for t in before.tags] if before else []
        result, applied = enhance_image(data, options, convert, limits, tags)
        extra: dict[str, Any] = {"operations": applied}
        if quality is not None and before is not None:
            after = quality.verdict(result.data)
            if should_revert(options, applied, before.score, after.score):
                plain, plain_applied = enhance_image(data, without_auto(options), convert, limits, [])
                plain_after = quality.verdict(plain.data)
                if plain_after.score > after.score:  # the auto steps, not the conversion, lowered the score
                    reverted = [step for step in applied if auto_step(step)]
                    result, after, extra = plain, plain_after, {"operations": plain_applied, "reverted": reverted}
            extra |= {"score_before": before.score, "score_after": after.score, "tags_before": tags,
                      "tags_after": [t.name for t in after.tags]}  # fmt: skip
        return result, extra

    return _run(args, "enhance", files, work)


def _common(command: argparse.ArgumentParser, default_suffix: str) -> None:
    command.add_argument("paths", nargs="+", help="image files and/or folders (walked recursively)")
    command.add_argument("--out", required=True, help="output folder (relative paths are kept)")
    command.add_argument("--to", default=None, help="output format (default: the input's)")
    command.add_argument("--quality", type=int, default=None, help="1-100 for lossy formats")
    command.add_argument("--lossless", action="store_true", help="lossless WebP/AVIF/HEIF")
    command.add_argument("--max-side", type=int, default=None, help="fit inside this many pixels")
    command.add_argument("--width", type=int, default=None)
    command.add_argument("--height", type=int, default=None)
    command.add_argument("--strip-metadata", action="store_true", help="drop EXIF/XMP/IPTC")
    command.add_argument("--anonymize", action="store_true", help="drop GPS and personal metadata fields")
    command.add_argument("--option", action="append", help="any other conversion option as key=value (repeatable)")
    command.add_argument(
        "--suffix", default=default_suffix, help=f"added to each output name (default {default_suffix!r})"
    )
    command.add_argument("--workers", type=int, default=2, help="threads (default 2)")
    command.add_argument("--quiet", action="store_true", help="no progress bar")


def add_operation_commands(sub: Any) -> None:
    convert = sub.add_parser("convert", help="convert image files locally: format, quality, size, metadata")
    _common(convert, "")
    convert.set_defaults(func=_cmd_convert)
    enhance = sub.add_parser("enhance", help="enhance image files locally: --auto from their quality tags, or manual")
    _common(enhance, "_enhanced")
    enhance.add_argument("--auto", action="store_true", help="fix what the quality stage tags (default without others)")
    enhance.add_argument("--ops", default=None, help="comma-separated operations (see GET /v1/enhance/options)")
    for name in ("brightness", "contrast", "saturation", "sharpness"):
        enhance.add_argument(f"--{name}", type=float, default=None, help="factor 0.1-3.0")
    enhance.add_argument("--scores", action="store_true", help="quality score before/after even for manual edits")
    enhance.set_defaults(func=_cmd_enhance)
