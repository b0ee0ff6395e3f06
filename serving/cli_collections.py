"""`imgserve collection ...`: analyse a folder, archive or bucket on Ray Data into a collection, then list, report,
export and delete collections. They live in the job database (IMGSERVE_DATABASE_URL), the one the server reads, so
`GET /v1/collections` shows what the CLI made."""

import argparse
import csv
import dataclasses
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from serving.spreadsheet import terminal_text

ERROR_EXIT = 2  # as argparse: bad arguments or input
RUN_FAILED_EXIT = 1  # the run started and could not finish
INTERRUPTED_EXIT = 130  # stopped by Ctrl-C (128 + SIGINT), as the shell reports it

DEFAULT_STAGES = "classification,quality,metadata"
EXPORT_SUFFIXES = (".csv", ".jsonl")  # `collection export --out`: the file types serving.collections.export writes


def _store(args: argparse.Namespace) -> Any:
    from serving.collections.store import CollectionStore
    from serving.jobs.database import open_job_database

    return CollectionStore(open_job_database(args.database_url))


def _progress(total: int, skipped: int) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    progress = Progress(
        TextColumn("[bold]analysing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("failed {task.fields[failed]}"),
        TextColumn("{task.fields[rate]:.1f} img/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        transient=False,
    )
    task = progress.add_task("analyse", total=total, completed=skipped, failed=0, rate=0.0)
    return progress, task


def _cmd_analyze(args: argparse.Namespace) -> int:
    from serving.collections.analyze import analysis_setup, run_analysis
    from serving.collections.operations import output_label, output_plan, prepare_destination
    from serving.collections.refresh import CHANGE_SLACK_S, pruned_images, refresh_plan
    from serving.collections.sources import SourceError, list_sources, resolved_source
    from serving.errors import ServiceError
    from serving.jobs.errors import CollectionNotFoundError
    from serving.placement import quiet_unserved_models

    stages = [s.strip() for item in (args.stages or [DEFAULT_STAGES]) for s in item.split(",") if s.strip()]
    try:
        # Options, sources and destination first: a mistyped one, or names the collection has from elsewhere,
        # stop the run before any model or Ray starts.
        if args.max_actors < 1:  # Ray's actor pool refused it only once the run had started (a traceback)
            raise ValueError(f"--max-actors {args.max_actors}: at least 1 model actor is needed")
        outputs = output_plan(args.convert, args.enhance, args.suffix, args.out, stages, args.sources)
        items = list_sources(args.sources, args.prefix)
        store = _store(args)
        places = {item.name: item.place for item in items}
        clashes = store.names_recorded_elsewhere(args.name, args.tenant, places)
        if clashes:
            raise SourceError(_clash_message(args.name, clashes, places))
        renamed = store.recorded_under_other_names(args.name, args.tenant, places)
        if renamed:
            raise SourceError(_renamed_message(args.name, renamed, places))
        pruned = pruned_images(store, args.name, args.tenant, args.sources, items) if args.prune else []
        with quiet_unserved_models():  # no server: the models this run does not use are none of its concern
            setup = analysis_setup(stages, args.model, args.ort_threads, args.anonymize, outputs)
        if outputs is not None:  # before the collection is opened: a run that cannot start leaves it as it was
            outputs = prepare_destination(outputs, [item.name for item in items])
            setup = dataclasses.replace(setup, outputs=outputs)
        info = store.open(args.name, setup.selected, [resolved_source(s) for s in args.sources], args.tenant)
    except (SourceError, ValueError, ServiceError, OSError, RuntimeError) as exc:  # RuntimeError: no default model
        # paths and archive members: anyone's text
        print(f"imgserve: error: {terminal_text(str(exc))}", file=sys.stderr)
        return ERROR_EXIT
    progress, task = _progress(len(items), 0)

    def show(stats: Any) -> None:
        rate = (stats.done + stats.failed) / stats.seconds if stats.seconds else 0.0
        progress.update(task, completed=stats.skipped + stats.done + stats.failed, failed=stats.failed, rate=rate)

    try:
        removed = store.remove(info.id, pruned) if pruned else 0
        refresh = refresh_plan(store, info.id, items, setup.max_bytes) if args.refresh else None
        if refresh is not None:
            store.confirm(info.id, refresh.unchanged, refresh.read_since)
        changed = refresh.changed if refresh is not None else frozenset()
        with progress:
            done = store.done_names(info.id) - changed
            progress.update(task, completed=sum(1 for item in items if item.name in done))
            stats = run_analysis(items, setup, store, info.id, args.address, (1, args.max_actors), show, changed)
        final = store.get(info.id)
    except CollectionNotFoundError:  # deleted (`collection delete`, DELETE /v1/collections/...) during the run
        name = terminal_text(info.name)
        print(
            f"imgserve: error: collection {name} ({info.id}) was deleted while this run recorded into it; stopped",
            file=sys.stderr,
        )
        return RUN_FAILED_EXIT
    except KeyboardInterrupt:  # Ctrl-C: what was recorded stays (each image commits as it is analysed)
        print(
            f"\nimgserve: stopped by Ctrl-C; the images analysed so far are kept in {terminal_text(info.name)}: run the"
            " same command again to go on",
            file=sys.stderr,
        )
        return INTERRUPTED_EXIT
    rate = (stats.done + stats.failed) / stats.seconds if stats.seconds and stats.done + stats.failed else 0.0
    print(
        f"collection {terminal_text(final.name)} ({final.id}): {final.images} images, {final.failed} failed; "
        "this run analysed "
        f"{stats.done + stats.failed} in {stats.seconds:.1f} s ({rate:.1f} img/s), {stats.skipped} already done"
    )
    if refresh is not None:  # unchanged: a change time that cannot rule out a change after the analysis read them
        print(
            f"refresh: {len(changed)} changed since their analysis, analysed again (each replacing its record); "
            f"{len(refresh.unchanged)} read again to check (changed within {CHANGE_SLACK_S:g} s of their analysis or"
            " later): the same bytes, kept"
        )
    if args.prune:
        print(f"prune: {removed} no longer in the sources, removed")
    if outputs is not None:
        ratio = f"{stats.ratio:.2f}" if stats.ratio else "-"
        print(
            f"outputs: {stats.outputs} written to {output_label(outputs)}, {stats.outputs_failed} failed; "
            f"{stats.input_bytes} -> {stats.output_bytes} bytes (ratio {ratio})"
        )
    return 0


def _clash_message(collection: str, clashes: dict[str, str], places: dict[str, str]) -> str:
    name, recorded = next(iter(clashes.items()))
    return (
        f"collection {collection!r} already has {len(clashes)} image(s) of this run's names read from elsewhere, "
        f"e.g. {name!r} from {recorded} (this run reads {places[name]}). Names are unique in a collection, so they "
        "would be taken as analysed and never read: give this run's names a prefix (--prefix NAME), or analyse "
        "into another collection"
    )


def _renamed_message(collection: str, renamed: dict[str, str], places: dict[str, str]) -> str:
    name, recorded = next(iter(renamed.items()))
    return (
        f"collection {collection!r} already records {len(renamed)} of this run's file(s) under other names, e.g. "
        f"{places[name]} as {recorded!r} (this run names it {name!r}): analysed again, each would count twice. Give "
        "the sources (and --prefix) the collection was made with, or only the sources it does not have yet"
    )


def _all_collections(store: Any, tenant: str, page: int = 1000) -> list[Any]:
    """Every collection of `tenant`, newest first (the store answers a page at a time)."""
    infos: list[Any] = []
    while True:
        batch = store.list_collections(tenant, page, len(infos))
        infos.extend(batch)
        if len(batch) < page:
            return infos


def _cmd_list(args: argparse.Namespace) -> int:
    infos = _all_collections(_store(args), args.tenant)
    if args.json:
        print(json.dumps([info.to_dict() for info in infos], indent=2))
        return 0
    if not infos:  # said on stderr: stdout stays a listing (empty) for scripts
        print(f"no collections in tenant {terminal_text(args.tenant)}", file=sys.stderr)
    for info in infos:
        name = terminal_text(info.name)
        print(f"{info.id}  {name:30}  {info.status:10}  {info.images:7d} images  {info.failed:5d} failed")
    return 0


def _on_collection(command: Callable[[argparse.Namespace, Any, Any], int]) -> Callable[[argparse.Namespace], int]:
    """`command(args, store, info)` for the collection named by `args.collection` (a name or an id) in
    `args.tenant`; an unknown one, or a filter that cannot match (ImageFilter), is an error message and exit 2."""

    def run(args: argparse.Namespace) -> int:
        from serving.errors import BadRequestError
        from serving.jobs.errors import CollectionNotFoundError

        store = _store(args)
        try:
            return command(args, store, store.get(args.collection, args.tenant))
        except (CollectionNotFoundError, BadRequestError) as exc:  # no such collection; a bad filter
            print(f"imgserve: error: {exc}", file=sys.stderr)
            return ERROR_EXIT

    return run


@_on_collection
def _cmd_report(args: argparse.Namespace, store: Any, info: Any) -> int:
    from serving.collections.reporting import collection_report, collection_report_html

    report = collection_report(store, info)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    if args.out:
        html = collection_report_html(store, info, report, *_image_readers(args))
        Path(args.out).write_text(html, encoding="utf-8")
    if not args.out and not args.json:
        print(json.dumps(report, indent=2))
    for insight in report["insights"]:
        print(f"- {terminal_text(insight['text'])}", file=sys.stderr)
    return 0


def _image_readers(args: argparse.Namespace) -> tuple[Any, Any]:
    """What the HTML report's thumbnails are read and decoded with, as the server does: the job service of this
    database (the inputs of a batch job a collection was saved from) and the server's decode limits."""
    from serving.config.settings import ServerSettings
    from serving.jobs.service import JobService
    from serving.jobs.settings import JobSettings

    settings = JobSettings.from_env()
    if args.database_url:
        settings = settings.model_copy(update={"database_url": args.database_url})
    return JobService(None, settings), ServerSettings.from_env().decode_limits()


@_on_collection
def _cmd_export(args: argparse.Namespace, store: Any, info: Any) -> int:
    from serving.cli_output import out_problem
    from serving.collections.export import csv_lines, jsonl_lines
    from serving.collections.filters import ImageFilter

    where = ImageFilter.from_parameters(vars(args))  # the options `_filter_options` added, by their public names
    problem = out_problem(args.out, EXPORT_SUFFIXES)  # q.xlsx got CSV: any suffix but .jsonl did
    if problem is not None:
        print(f"imgserve: error: {terminal_text(problem)}", file=sys.stderr)
        return ERROR_EXIT
    jsonl = Path(args.out).suffix.lower() == ".jsonl"
    try:
        with open(args.out, "w", encoding="utf-8", newline="") as handle:
            handle.writelines((jsonl_lines if jsonl else csv_lines)(store, info.id, where))
        with open(args.out, encoding="utf-8", newline="") as written:  # a CSV cell may hold a newline
            rows = sum(1 for _ in written) if jsonl else max(0, sum(1 for _ in csv.reader(written)) - 1)
    except OSError as exc:
        print(f"imgserve: error: could not write {terminal_text(args.out)}: {exc.strerror or exc}", file=sys.stderr)
        return RUN_FAILED_EXIT
    print(f"exported {rows} images to {terminal_text(args.out)}")
    return 0


@_on_collection
def _cmd_delete(args: argparse.Namespace, store: Any, info: Any) -> int:
    from serving.security.audit import AuditEntry

    store.delete(info.id, args.tenant, AuditEntry(action="collection.delete", client="cli", tenant=args.tenant))
    print(f"deleted collection {terminal_text(info.name)} ({info.id}, {info.images + info.failed} images)")
    return 0


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", default=None, help="job database (default: $IMGSERVE_DATABASE_URL or the embedded SQLite)"
    )
    parser.add_argument("--tenant", default="default", help="owner of the collection (default: default)")


def _filter_options(parser: argparse.ArgumentParser) -> None:
    """The image filters of GET /v1/collections/{id}/export as options: --camera-make for camera_make, --failed /
    --no-failed for failed=true/false."""
    from serving.collections.filter_parameters import FILTER_PARAMETERS

    filters = parser.add_argument_group("filters", "as the HTTP export's query parameters (docs/COLLECTIONS.md)")
    for parameter in FILTER_PARAMETERS:
        option = "--" + parameter.name.replace("_", "-")
        if parameter.kind is bool:
            filters.add_argument(option, action=argparse.BooleanOptionalAction, default=None, help=parameter.help)
        else:
            filters.add_argument(option, type=parameter.kind, default=None, help=parameter.help)


def add_collection_commands(sub: Any) -> None:
    collection = sub.add_parser("collection", help="analyse whole image collections on Ray Data; reports, exports")
    commands = collection.add_subparsers(dest="collection_command", required=True)

    analyze = commands.add_parser("analyze", help="analyse folders, archives or s3:// / gs:// URIs into a collection")
    analyze.add_argument("sources", nargs="+", metavar="PATH_OR_URI", help="folders, zip/tar archives, files, URIs")
    analyze.add_argument("--name", required=True, help="collection name; an existing one is resumed / extended")
    analyze.add_argument(
        "--prefix",
        default="",
        help="start this run's image names with PREFIX/ (to add a folder whose file names the collection already "
        "has from another folder; a resumed run needs the same prefix)",
    )
    analyze.add_argument(
        "--refresh",
        action="store_true",
        help="also analyse again the recorded images whose files changed since (another size, or changed after their"
        " analysis and another sha256); each replaces its record",
    )
    analyze.add_argument(
        "--prune",
        action="store_true",
        help="remove the recorded images whose files were inside these sources and are no longer there (the other"
        " sources' images are kept); refused where that cannot be told",
    )
    analyze.add_argument("--stages", action="append", default=None, help=f"comma-separated (default {DEFAULT_STAGES})")
    analyze.add_argument("--address", default=None, help="Ray cluster to join (default: a local Ray started here)")
    analyze.add_argument("--model", default=None, help="classifier (default: the server's default model)")
    analyze.add_argument("--max-actors", type=int, default=2, help="most model actors in the pool (default 2)")
    analyze.add_argument(
        "--anonymize", action="store_true", help="store metadata without GPS and personal fields (as /v1/analyze's)"
    )
    analyze.add_argument("--ort-threads", type=int, default=1, help="ONNX Runtime threads per model actor (default 1)")
    operations = analyze.add_argument_group(
        "image operations",
        "convert and/or enhance each analysed image, with batch jobs' options (docs/IMAGE_OPERATIONS.md); a collection"
        " has no object store, so the outputs are written to --out (required with them); originals are untouched",
    )
    operations.add_argument(
        "--convert",
        default=None,
        metavar="K=V,...",
        help="conversion options, e.g. format=webp,quality=80,max_side=2048",
    )
    operations.add_argument(
        "--enhance",
        default=None,
        metavar="K=V,...",
        help="enhancement: auto=true (fixes what the quality stage tags; needs it) or brightness=1.2,ops=clahe,...;"
        " the output is written with --convert's options",
    )
    operations.add_argument(
        "--suffix",
        default=None,
        help="added to each output's name (default: '' with --convert, '_enhanced' with --enhance)",
    )
    operations.add_argument(
        "--out",
        default=None,
        metavar="FOLDER_OR_URI",
        help="where outputs go, named as in the collection + suffix + the format's extension: a local folder (created;"
        " not inside a source) or s3:// / gs://",
    )
    _common(analyze)
    analyze.set_defaults(func=_cmd_analyze)

    listing = commands.add_parser("list", help="collections and their image counts")
    listing.add_argument("--json", action="store_true")
    _common(listing)
    listing.set_defaults(func=_cmd_list)

    report = commands.add_parser("report", help="the collection's report: HTML (--out) and/or JSON (--json)")
    report.add_argument("collection", help="collection name or id")
    report.add_argument("--out", default=None, help="self-contained HTML file to write")
    report.add_argument("--json", default=None, help="JSON file to write (default: print it when no --out)")
    _common(report)
    report.set_defaults(func=_cmd_report)

    export = commands.add_parser("export", help="the (filtered) images as CSV or JSONL")
    export.add_argument("collection", help="collection name or id")
    export.add_argument("--out", required=True, help="FILE.csv (columns) or FILE.jsonl (records + analysis)")
    _filter_options(export)
    _common(export)
    export.set_defaults(func=_cmd_export)

    delete = commands.add_parser("delete", help="delete a collection and its image records")
    delete.add_argument("collection", help="collection name or id")
    _common(delete)
    delete.set_defaults(func=_cmd_delete)
