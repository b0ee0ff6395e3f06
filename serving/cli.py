"""`imgserve` console command: serve, models list/prepare."""

import argparse
import json
import sys
from pathlib import Path


def _cmd_serve(args: argparse.Namespace) -> int:
    from serving.server import run_server

    run_server(Path(args.config), args.http_port, args.grpc_port, args.num_cpus)
    return 0


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
                "reason": entry.unavailable_reason,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']:28} {row['state']:12} {row['backend'] or '-':12} {row['reason'] or ''}")
    return 0


def _cmd_models_prepare(args: argparse.Namespace) -> int:
    from serving.export import prepare_repository

    results = prepare_repository()
    for result in results:
        print(f"{result.model:28} {result.status:9} {result.detail}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="imgserve", description="High-throughput image inference server")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="start a local Ray, deploy serve_config.yaml, run in the foreground")
    serve.add_argument("--config", default="serve_config.yaml", help="Ray Serve config file")
    serve.add_argument("--http-port", type=int, default=None, help="override http_options.port")
    serve.add_argument("--grpc-port", type=int, default=None, help="override grpc_options.port")
    serve.add_argument("--num-cpus", type=int, default=None, help="logical CPUs for Ray (default 2x cores, min 4)")
    serve.set_defaults(func=_cmd_serve)

    models = sub.add_parser("models", help="inspect and prepare the model repository")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="models, their state and chosen backend")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=_cmd_models_list)
    prepare = models_sub.add_parser("prepare", help="verify weights; export torchvision models to ONNX where possible")
    prepare.set_defaults(func=_cmd_models_prepare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
