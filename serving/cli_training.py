"""`imgserve train DATASET --model NAME` (a training job on a running server, with a progress line),
`imgserve models load|unload|promote|canary|delete-version|delete` (model control on a running server) and
`imgserve training-jobs delete JOB_ID` (a finished training job's record)."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from serving.cli_batch import BAR_WIDTH
from serving.spreadsheet import terminal_text


def _dataset_uri(dataset: str) -> str:
    """A local folder becomes a file:// URI (the server must be allowed to read it: IMGSERVE_BATCH_ALLOWED_ROOT)."""
    if "://" in dataset:
        return dataset
    return Path(dataset).resolve().as_uri()


def _progress(job: Any) -> None:
    filled = int(BAR_WIDTH * job.done / job.total) if job.total else 0
    line = f"[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {job.phase or job.status} {job.done}/{job.total}"
    print(f"\r{line}", end="\n" if job.finished else "", file=sys.stderr, flush=True)


def _cmd_train(args: argparse.Namespace) -> int:
    from serving.client import Client, ImgServeError
    from serving.client.errors import error_line

    key_sent = False
    try:
        with Client(args.url, timeout=args.timeout, api_key=args.api_key) as client:
            key_sent = client.authenticated
            job = client.training.submit(
                args.model,
                _dataset_uri(args.dataset),
                validation_fraction=args.validation_fraction,
                max_train_per_class=args.max_train_per_class,
                promote=args.promote,
            )
            print(f"training job {job.job_id} for model {args.model}", file=sys.stderr)
            if args.no_wait:
                return 0
            job = client.training.wait(job, poll_s=args.poll, on_progress=_progress)
    except (ImgServeError, OSError) as exc:
        print(f"imgserve: error: {error_line(exc, key_sent)}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a bad --url or --timeout, as classify and batch answer it
        print(f"imgserve: error: {exc}", file=sys.stderr)
        return 2
    if job.status != "completed":
        print(f"training job {job.job_id} {job.status}: {job.error or ''}", file=sys.stderr)
        return 1
    result = job.result or {}
    print(
        json.dumps(result, indent=2) if args.json else training_summary(result, args.promote or SERVER_DEFAULT_PROMOTE)
    )
    return 0


# What the server does when `--promote` is not given (serving.training.service.TrainingRequest.promote).
SERVER_DEFAULT_PROMOTE = "if_better"


def training_summary(result: dict[str, Any], rule: str) -> str:
    """A finished training job's result for a person: the version made, its validation, whether it is now served
    (and why not), the images left out (how many, the first few and why), the time taken. `rule`: the job's
    `--promote` rule."""
    validation = result.get("validation") or {}
    lines = [
        f"model {result.get('model')} version {result.get('version')}: validation accuracy "
        f"{validation.get('accuracy', 0):.3f} on {validation.get('images', 0)} images",
    ]
    for row in validation.get("per_class", []):
        label = terminal_text(str(row["label"]))  # a dataset's folder name: anyone's text
        lines.append(f"  {label:24s} precision {row['precision']:.3f} recall {row['recall']:.3f}")
    lines.append(promotion_line(result, rule))
    skipped = (result.get("images") or {}).get("skipped") or {}
    if skipped:  # unreadable, undecodable, or the same image in two categories: the dataset's owner may fix them
        # file names, archive members and reasons quoting them: anyone's text, escaped for the terminal
        examples = terminal_text("; ".join(f"{name}: {why}" for name, why in list(skipped.items())[:3]))
        more = "; ... (--json lists them all)" if len(skipped) > 3 else ""
        lines.append(f"{len(skipped)} images left out: {examples}{more}")
    seconds = result.get("seconds") or {}
    lines.append(f"features {seconds.get('features')} s, fit {seconds.get('fit')} s, total {seconds.get('total')} s")
    return "\n".join(lines)


def promotion_line(result: dict[str, Any], rule: str) -> str:
    """Whether the new version is served now, and why (or why not), from what the training job reported."""
    version, previous = result.get("version"), result.get("previous_version")
    accuracy = (result.get("validation") or {}).get("accuracy", 0.0)
    if result.get("accuracy_compared") is not None:  # both on the validation images the previous did not train on
        accuracy = result["accuracy_compared"]
    previous_accuracy = result.get("previous_version_accuracy")
    if result.get("promoted"):
        if rule == "always":
            why = "--promote always"
        elif previous is None:
            why = "the model's first version"
        else:
            why = f"accuracy {accuracy:.3f} beats version {previous}'s {previous_accuracy:.3f}"
        if result.get("loaded"):
            return f"version {version} is now served (promoted: {why})"
        return f"version {version} is promoted but not served yet: {result.get('load_error') or 'not loaded'}"
    if result.get("load_error"):
        why = f"it did not load: {result['load_error']}"
    elif rule == "never":
        why = "--promote never"
    elif previous_accuracy is None:
        why = f"its accuracy cannot be compared with version {previous}'s (other categories)"
    else:
        why = f"accuracy {accuracy:.3f} does not beat version {previous}'s {previous_accuracy:.3f} (--promote {rule})"
    still = f"version {previous} still is" if previous is not None else "no version is"
    return (
        f"version {version} is registered but not served; {still} ({why}). "
        f"`imgserve models promote {result.get('model')} {version}` serves it"
    )


TRAINING_JOB_DELETE = "training-jobs delete"  # `imgserve training-jobs delete`, answered as model control commands


def _cmd_model_control(args: argparse.Namespace) -> int:
    from serving.client import Client, ImgServeError
    from serving.client.errors import error_line

    key_sent = False
    try:
        with Client(args.url, timeout=args.timeout, api_key=args.api_key) as client:
            key_sent = client.authenticated
            if args.models_command == "promote":
                answer = client.training.promote(args.model, args.version)
            elif args.models_command == "canary" and args.stop:
                answer = client.training.end_canary(args.model)
            elif args.models_command == "canary":
                if not args.version or args.percent is None:
                    print("imgserve: error: a canary needs VERSION and --percent (or --stop)", file=sys.stderr)
                    return 2
                answer = client.training.canary(args.model, args.version, args.percent)
            elif args.models_command == "delete-version":
                answer = client.training.delete_version(args.model, args.version)
            elif args.models_command == "delete":
                answer = client.training.delete_model(args.model)
            elif args.models_command == TRAINING_JOB_DELETE:
                answer = client.training.delete(args.job_id)
            elif args.models_command == "load":
                answer = client.training.load(args.model)
            else:
                answer = client.training.unload(args.model)
    except (ImgServeError, OSError) as exc:
        print(f"imgserve: error: {error_line(exc, key_sent)}", file=sys.stderr)
        return 1
    except ValueError as exc:  # a bad --url or --timeout, as classify and batch answer it
        print(f"imgserve: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(answer))
    return 0


def _remote_options(command: argparse.ArgumentParser, default_url: str) -> None:
    command.add_argument("--url", default=default_url, help=f"server http(s)://host:port (default {default_url})")
    command.add_argument("--timeout", type=float, default=120.0, help="seconds per HTTP call (default 120)")
    command.add_argument("--api-key", default=None, metavar="KEY", help="API key (default: $IMGSERVE_API_KEY)")


def add_training_commands(sub: Any, models_sub: Any, default_url: str) -> None:
    train = sub.add_parser("train", help="train a classifier of your own categories on a running server")
    train.add_argument(
        "dataset", help="folder with one sub-folder per category (local path the server can read, or s3://, gs://)"
    )
    train.add_argument("--model", required=True, help="model to create or add a version to")
    train.add_argument("--validation-fraction", type=float, default=None, help="held out per category (0.2)")
    train.add_argument("--max-train-per-class", type=int, default=None, help="train on at most N per category")
    train.add_argument("--promote", choices=("if_better", "always", "never"), default=None)
    train.add_argument("--no-wait", action="store_true", help="print the job id and return")
    train.add_argument("--poll", type=float, default=1.0, help="seconds between status polls (default 1)")
    train.add_argument("--json", action="store_true", help="print the whole result as JSON")
    _remote_options(train, default_url)
    train.set_defaults(func=_cmd_train)
    for name, text in (("load", "load or reload a model"), ("unload", "stop serving a model")):
        command = models_sub.add_parser(name, help=f"{text} on a running server (admin)")
        command.add_argument("model")
        _remote_options(command, default_url)
        command.set_defaults(func=_cmd_model_control)
    promote = models_sub.add_parser("promote", help="serve one version of a model from now on (admin; rollback too)")
    promote.add_argument("model")
    promote.add_argument("version")
    _remote_options(promote, default_url)
    promote.set_defaults(func=_cmd_model_control)
    canary = models_sub.add_parser("canary", help="send a share of a model's requests to another version (admin)")
    canary.add_argument("model")
    canary.add_argument("version", nargs="?", default=None)
    canary.add_argument("--percent", type=float, default=None, help="share of the model's requests, e.g. 5")
    canary.add_argument("--stop", action="store_true", help="end the split: all requests to the served version")
    _remote_options(canary, default_url)
    canary.set_defaults(func=_cmd_model_control)
    delete = models_sub.add_parser(
        "delete-version", help="delete a version of a trained model (admin; not the served one or a canary)"
    )
    delete.add_argument("model")
    delete.add_argument("version")
    _remote_options(delete, default_url)
    delete.set_defaults(func=_cmd_model_control)
    delete_model = models_sub.add_parser(
        "delete", help="delete a trained model with every version (admin; it stops being served)"
    )
    delete_model.add_argument("model")
    _remote_options(delete_model, default_url)
    delete_model.set_defaults(func=_cmd_model_control)
    jobs = sub.add_parser("training-jobs", help="training jobs on a running server")
    jobs_sub = jobs.add_subparsers(dest="training_jobs_command", required=True)
    forget = jobs_sub.add_parser(
        "delete", help="delete a finished training job's record (admin; its version stays; cancel a running one first)"
    )
    forget.add_argument("job_id")
    _remote_options(forget, default_url)
    forget.set_defaults(func=_cmd_model_control, models_command=TRAINING_JOB_DELETE)
