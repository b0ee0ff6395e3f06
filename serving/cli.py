"""`imgserve` console command: serve, models list/prepare, and classify/analyze against a running server."""

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from serving.cli_output import ImageFailure
    from serving.client import Analysis, Classification

DEFAULT_URL = "http://127.0.0.1:8000"
IMAGES_PER_REQUEST = 32  # well under the server's per-request limit; large folders go in several calls
# Error kinds that belong to one image (serving.errors, pipelines.errors): that image's row, not the command's end.
PER_IMAGE_ERRORS = frozenset({"invalid_image", "unsupported_format", "too_large"})
# The error kind of the rows of images a command-stopping error left unanswered (send them again to resume).
NOT_ANSWERED = "not_answered"
# The project's serve config, wherever the command runs from (as the model repository and weights defaults are).
DEFAULT_SERVE_CONFIG = Path(__file__).resolve().parents[1] / "serve_config.yaml"


def _cmd_serve(args: argparse.Namespace) -> int:
    from serving.server import run_server

    return run_server(
        Path(args.config),
        args.http_port,
        args.grpc_port,
        args.num_cpus,
        args.placement,
        args.ray_proxy,
        host=args.host,
        tls_cert=args.tls_cert,
        tls_key=args.tls_key,
    )


def _cmd_models_list(args: argparse.Namespace) -> int:
    from serving.backends import backend_plan
    from serving.repository import ModelRepository

    repository = ModelRepository.scan()
    rows = []
    for entry in repository.entries.values():
        backend = backend_plan(entry)[0] if entry.available else None
        rows.append(
            {
                "name": entry.name,
                "task": entry.config.task,
                "backend": backend,
                "state": "READY" if entry.available else "UNAVAILABLE",
                "cpu_precision": "int8" if entry.artifacts.onnx_int8 else "fp32",  # serving.quantize
                "reason": entry.unavailable_reason,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(
                f"{row['name']:28} {row['state']:12} {row['backend'] or '-':12} {row['cpu_precision']:5} "
                f"{row['reason'] or ''}"
            )
    return 0


def _cmd_models_prepare(args: argparse.Namespace) -> int:
    from serving.export import prepare_repository

    results = prepare_repository()
    for result in results:
        print(f"{result.model:28} {result.status:9} {result.detail}")
    return 0


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _image_failure(exc: Exception) -> "ImageFailure | None":
    """The failure of the one image a call sent, when the error is that image's own (not the request's, the
    server's or the key's): a file that cannot be read here, or one the server cannot decode or takes as too large."""
    from serving.cli_output import ImageFailure
    from serving.client import ImgServeError

    if isinstance(exc, ImgServeError) and exc.kind in PER_IMAGE_ERRORS:
        return ImageFailure(exc.kind, exc.message)
    if isinstance(exc, OSError) and exc.filename is not None:
        return ImageFailure("unreadable_file", f"{exc.strerror or exc}: {exc.filename}")
    return None


def _chunk_results(call: "Callable[[list[str]], list[Any]]", chunk: list[str]) -> list[Any]:
    """`call(chunk)`; when one image of it is bad (a request fails as a whole), each image alone, so the bad ones
    become their own failures and the rest are answered. Any other error stops the command."""
    try:
        return call(chunk)
    except Exception as exc:  # noqa: BLE001 - re-raised unless it is one image's own failure
        failure = _image_failure(exc)
        if failure is None:
            raise
        if len(chunk) == 1:
            return [failure]
    results: list[Any] = []
    for image in chunk:
        try:
            results.extend(call([image]))
        except Exception as exc:  # noqa: BLE001 - as above
            failure = _image_failure(exc)
            if failure is None:
                raise
            results.append(failure)
    return results


def _cmd_remote(args: argparse.Namespace) -> int:
    """`classify` and `analyze`: send the images to a running server, print a table or JSON. An image the server
    cannot use (or a file that cannot be read) is reported in its row and the others go on; the command fails when
    none succeeded. An error that stops the command (the server gone after the retries, a timeout, a refused key)
    keeps what was answered before it: those rows are printed or written, the others say `not_answered`, and the
    command fails."""
    from serving.cli_output import (
        RESULT_SUFFIXES,
        ImageFailure,
        out_problem,
        print_results,
        result_record,
        write_results,
    )
    from serving.client import Client, ImgServeError
    from serving.client.errors import error_line
    from serving.image_files import expand_images

    fields = [f.strip() for value in getattr(args, "fields", None) or () for f in value.split(",") if f.strip()] or None
    images = expand_images(args.images)
    if not images:
        print(f"imgserve: error: no image files in {' '.join(args.images)}", file=sys.stderr)
        return 2
    problem = out_problem(args.out, RESULT_SUFFIXES) if args.out else None
    if problem is not None:  # found out before the work, not after it
        print(f"imgserve: error: {problem}", file=sys.stderr)
        return 2
    key_sent = False
    results: list[Classification | Analysis | ImageFailure] = []
    stopped_by: ImgServeError | OSError | None = None
    try:
        with Client(args.url, timeout=args.timeout, api_key=args.api_key) as client:
            key_sent = client.authenticated

            def call(chunk: list[str]) -> list[Any]:
                if args.command == "classify":
                    return client.classify(chunk, args.model, args.top_k, args.confidence_threshold)
                return client.analyze(chunk, args.model, args.top_k, fields, args.confidence_threshold)

            for chunk in _chunks(images, IMAGES_PER_REQUEST):
                results.extend(_chunk_results(call, chunk))
    except ValueError as exc:  # a bad --url, --top-k, --confidence-threshold or --api-key
        print(f"imgserve: error: {exc}", file=sys.stderr)
        return 2
    except (ImgServeError, OSError) as exc:
        print(f"imgserve: error: {error_line(exc, key_sent)}", file=sys.stderr)
        if not results:
            return 1
        stopped_by = exc  # the answers already received are kept: written below, the rest marked unanswered
        reason = f"not answered: the command stopped at an error: {error_line(exc, key_sent)}"
        results += [ImageFailure(NOT_ANSWERED, reason)] * (len(images) - len(results))
    records = [result_record(image, result) for image, result in zip(images, results, strict=True)]
    if args.out:
        try:
            write_results(Path(args.out), records)
        except OSError as exc:
            print(f"imgserve: error: could not write {args.out}: {exc.strerror or exc}", file=sys.stderr)
            return 1
        print(f"wrote {len(records)} result{'' if len(records) == 1 else 's'} to {args.out}")
    else:
        print_results(records, args.json)
    failed = sum(isinstance(result, ImageFailure) for result in results)
    if stopped_by is not None:
        unanswered = sum(isinstance(r, ImageFailure) and r.kind == NOT_ANSWERED for r in results)
        print(
            f"imgserve: {unanswered} of {len(images)} images were not answered (rows with error {NOT_ANSWERED}); "
            f"{failed - unanswered} failed on their own; the other results are kept",
            file=sys.stderr,
        )
        return 1
    if failed:
        print(f"imgserve: {failed} of {len(images)} images failed (see their rows)", file=sys.stderr)
    return 1 if failed and failed == len(images) else 0


def _add_remote_command(sub: Any, name: str, help_text: str) -> argparse.ArgumentParser:
    command = sub.add_parser(name, help=help_text)
    command.add_argument("images", nargs="+", metavar="IMG", help="image files or folders (walked for images)")
    command.add_argument(
        "--url", default=DEFAULT_URL, help=f"server: http(s)://host:port or grpc://host:port (default {DEFAULT_URL})"
    )
    command.add_argument("--model", default=None, help="model name (default: the server's default classifier)")
    command.add_argument("--top-k", type=int, default=5, help="classes per image (default 5)")
    command.add_argument(
        "--confidence-threshold",
        type=float,
        default=0.0,
        metavar="FLOAT",
        help="leave out classes scoring below this, 0..1 (default 0: keep all top-k)",
    )
    command.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default 30)")
    command.add_argument(
        "--api-key",
        default=None,
        metavar="KEY",
        help="API key for a server with IMGSERVE_AUTH=required (default: $IMGSERVE_API_KEY; prefer the variable, "
        "flags show in ps)",
    )
    command.add_argument("--json", action="store_true", help="print a JSON list, one object per image")
    command.add_argument("--out", default=None, help="write results to FILE.csv (flat) or FILE.jsonl (full records)")
    command.set_defaults(func=_cmd_remote)
    return command


def _cmd_quality_calibrate(args: argparse.Namespace) -> int:
    if (Path(args.folder) / "mos.csv").is_file():  # ratings: re-fit the learned score
        from tooling.quality_mos.calibrate_mos import NotBetter, calibrate_mos

        try:
            result = calibrate_mos(Path(args.folder), Path(args.out), method=args.method, force=args.force)
        except NotBetter as exc:
            print(f"imgserve: error: {exc}", file=sys.stderr)
            return 1
        except ValueError as exc:
            print(f"imgserve: error: {exc}", file=sys.stderr)
            return 2
        calibration = result["calibration"]
        print(
            f"score re-fitted on {calibration.photos} rated photos (ridge alpha {calibration.head.alpha:g}): Spearman "
            f"{calibration.figures()}; wrote {args.out} as quality_mos version {result['version']}"
            + (" (forced: not better than the current head)" if not calibration.better else "")
        )
        return 0
    from tooling.quality.calibrate import main as calibrate

    return calibrate([args.folder, "--out", args.out, *(["--base", args.base] if args.base else [])])


def _whole_number(text: str, low: int, high: int | None, what: str) -> int:
    """argparse type: a whole number in [low, high]; the usage error names the option and the value."""
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"invalid value {text!r}: expected {what}")
    return value


def _port(text: str) -> int:
    # 0 would be a port the kernel picks for each listener, one nobody is told (the ready banner says port 0)
    return _whole_number(text, 1, 65535, "a port number, 1-65535")


def _cpu_count(text: str) -> int:
    # 0 was silently the default; Ray refused a negative count only after it had started
    return _whole_number(text, 1, None, "a number of logical CPUs, 1 or more (leave it out for the default)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgserve", description="High-throughput image inference server")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start a local Ray, deploy serve_config.yaml, run in the foreground")
    serve.add_argument(
        "--config", default=str(DEFAULT_SERVE_CONFIG), help="Ray Serve config file (default: %(default)s)"
    )
    serve.add_argument("--http-port", type=_port, default=None, help="override http_options.port (1-65535)")
    serve.add_argument("--grpc-port", type=_port, default=None, help="override grpc_options.port (1-65535)")
    serve.add_argument(
        "--num-cpus", type=_cpu_count, default=None, help="logical CPUs for Ray, 1 or more (default 2x cores, min 4)"
    )
    serve.add_argument(
        "--placement",
        choices=("auto", "local", "graph"),
        default="auto",
        help="where the stages run: local = all inside the Ingress replica (fastest on one machine), graph = one "
        "deployment per stage (clusters); auto (default) = local unless RAY_ADDRESS names a cluster",
    )
    serve.add_argument(
        "--ray-proxy",
        action="store_true",
        help="keep Ray Serve's HTTP/gRPC proxy in front of the Ingress, as KubeRay does (default: the Ingress "
        "replica's own listeners on the same ports, one process hop fewer per request)",
    )
    serve.add_argument(
        "--host",
        default=None,
        help="interface the HTTP/gRPC listeners bind (and Ray's proxy with --ray-proxy); default: the config's "
        "http_options.host, 127.0.0.1. Beyond loopback (e.g. 0.0.0.0) auth is required (IMGSERVE_AUTH=off is "
        "refused) and Ray's token auth is on; Ray itself always listens on 127.0.0.1",
    )
    serve.add_argument(
        "--tls-cert", default=None, metavar="FILE", help="PEM certificate: HTTPS and gRPC over TLS (IMGSERVE_TLS_CERT)"
    )
    serve.add_argument(
        "--tls-key", default=None, metavar="FILE", help="PEM private key of --tls-cert (IMGSERVE_TLS_KEY)"
    )
    serve.set_defaults(func=_cmd_serve)

    models = sub.add_parser("models", help="inspect and prepare the model repository")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="models, their state and chosen backend")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_cmd_models_list)
    prepare = models_sub.add_parser(
        "prepare", help="verify weights; export torchvision models to ONNX; build and check INT8 variants"
    )
    prepare.set_defaults(func=_cmd_models_prepare)
    from serving.cli_training import add_training_commands

    add_training_commands(sub, models_sub, DEFAULT_URL)

    _add_remote_command(sub, "classify", "classify images with a running server (top-k per image)")
    analyze = _add_remote_command(sub, "analyze", "analyze images with a running server (selected stages)")
    analyze.add_argument("--fields", action="append", help="stage to run, repeatable or comma-separated (default: all)")
    from serving.cli_batch import add_batch_command

    add_batch_command(sub, DEFAULT_URL)
    from serving.cli_security import add_security_commands

    add_security_commands(sub)
    from serving.cli_operations import add_operation_commands

    add_operation_commands(sub)
    from serving.cli_collections import add_collection_commands

    add_collection_commands(sub)

    quality = sub.add_parser("quality", help="quality thresholds")
    quality_sub = quality.add_subparsers(dest="quality_command", required=True)
    calibrate = quality_sub.add_parser(
        "calibrate",
        help="fit tag thresholds on your labelled folder (good/ and one sub-folder per tag), or the learned score on "
        "your rated photos (a folder with mos.csv: image,mos)",
    )
    calibrate.add_argument("folder", help="folder with good/ and one sub-folder per tag, or with mos.csv")
    calibrate.add_argument(
        "--out",
        required=True,
        help="labels: thresholds YAML to write (use: IMGSERVE_QUALITY_THRESHOLDS); ratings: model folder to write "
        "(a versioned copy of models/quality_mos)",
    )
    calibrate.add_argument("--base", default=None, help="thresholds to start from (default: the packaged ones)")
    calibrate.add_argument(
        "--method",
        choices=("correction", "scratch"),
        default="correction",
        help="ratings: re-fit the score as a correction of the current head (default) or from scratch",
    )
    calibrate.add_argument(
        "--force",
        action="store_true",
        help="ratings: write the re-fit even when it is not better than the current head on your photos",
    )
    calibrate.set_defaults(func=_cmd_quality_calibrate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except OSError as exc:  # a file or folder the command was pointed at (--out a folder, a missing --base): one line
        where = f": {exc.filename}" if exc.filename is not None else ""
        print(f"imgserve: error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 1
    except ValueError as exc:
        from serving.jobs.database import NewerSchemaError  # not at import: the CLI starts without SQLAlchemy

        if not isinstance(exc, NewerSchemaError):
            raise
        print(f"imgserve: error: {exc}", file=sys.stderr)  # keys, tenants, jobs commands on a newer database
        return 2


if __name__ == "__main__":
    sys.exit(main())
