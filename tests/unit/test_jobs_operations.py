"""Convert/enhance as batch-job stages: options checked at submission, outputs stored once, named, totalled,
downloadable as a streamed zip, and erased with the job."""

import asyncio
import csv
import io
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from pipelines.convert.names import output_bases, output_name
from pipelines.enhance import EnhanceOptions
from pipelines.errors import InvalidOptionError
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.erasure import drop_orphaned_objects, purge_job
from serving.jobs.objects import ObjectStore
from serving.jobs.operations import operation_spec, parse_pairs
from serving.jobs.output_zip import zip_stream
from serving.jobs.records import JobSpec, NewItem
from serving.jobs.results import csv_header, csv_lines
from serving.jobs.runner import JobRunner
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore
from serving.jobs.webhooks import WebhookSender
from serving.jobs.work_queue import WorkQueue
from serving.jobs.workers import WorkerIdentity, WorkerRegistry
from serving.requests import ImageOptions

pytestmark = pytest.mark.unit


class NoAnalysis:
    """The worker's service for an operations-only job: analyze must not be called; no quality stage."""

    def served_entry(self, name: str | None) -> object:
        return object()

    async def analyze(
        self, images: list[bytes], options: ImageOptions | None = None, count_quality: bool = True
    ) -> list:
        raise AssertionError("an operations-only job runs no analysis")

    async def charge(self, images: int, anonymize: bool | None = None) -> bool:
        return bool(anonymize)  # no quotas

    async def refund_failed(self, images: int, error: BaseException) -> None:
        return None  # nothing was charged


def jpeg(seed: int, size: tuple[int, int] = (300, 200)) -> bytes:
    rng = np.random.default_rng(seed)
    out = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


@pytest.fixture
def store(tmp_path: Path) -> tuple[sa.Engine, ObjectStore, JobSettings]:
    settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}", object_store=str(tmp_path / "o"))
    engine = create_store_engine(settings.database_url)
    migrate(engine)
    return engine, ObjectStore(settings.object_store), settings


def test_operation_spec_checks_options_up_front() -> None:
    assert operation_spec(["classification"], None, None, None) is None
    spec = operation_spec(["convert"], {"format": "webp", "quality": "80"}, None, None)
    assert spec == {"convert": {"format": "webp", "quality": 80}, "enhance": None, "suffix": ""}
    assert operation_spec([], None, {"auto": True}, None)["suffix"] == "_enhanced"  # type: ignore[index]
    for bad in ({"format": "jxl"}, {"quality": "0", "format": "jpeg"}):
        with pytest.raises(InvalidOptionError):
            operation_spec(["convert"], bad, None, None)
    with pytest.raises(InvalidOptionError, match="output_suffix"):
        operation_spec(["convert"], {}, None, "../x")
    # where outputs go, on a job that makes none, was ignored: the job ran and wrote nothing where asked
    with pytest.raises(InvalidOptionError, match="output_uri: this job makes no outputs"):
        operation_spec(["quality"], None, None, None, "s3://bucket/web")
    with pytest.raises(InvalidOptionError, match="output_suffix: this job makes no outputs"):
        operation_spec(["classification"], None, None, "_web")
    assert parse_pairs("format=webp, quality=80") == {"format": "webp", "quality": "80"}
    with pytest.raises(InvalidOptionError, match="key=value"):
        parse_pairs("webp")
    # a list value: `ops=clahe,sharpen` was a 400 ("option 'sharpen'"), and a repeated key silently kept the last
    assert parse_pairs("ops=clahe,sharpen,brightness=1.2") == {"ops": "clahe,sharpen", "brightness": "1.2"}
    spec = operation_spec(["enhance"], None, parse_pairs("ops=clahe,sharpen"), None)
    assert spec is not None and EnhanceOptions.parse(**spec["enhance"]).ops == ("clahe", "sharpen"), spec
    with pytest.raises(InvalidOptionError, match="given twice"):
        parse_pairs("ops=clahe,ops=sharpen")


def test_output_names_stay_inside_the_archive() -> None:
    from pipelines.convert import ConvertOptions, convert_image
    from pipelines.limits import DecodeLimits

    result = convert_image(jpeg(0), ConvertOptions(format="webp"), DecodeLimits())
    assert output_name("holiday/IMG_1.JPG", "_web", result) == "holiday/IMG_1_web.webp"
    assert output_name("../../etc/passwd", "", result) == "etc/passwd.webp"
    assert output_name("/abs/a.png", "", result) == "abs/a.webp"


def test_convert_job_stores_named_outputs_totals_and_a_zip(store) -> None:
    engine, objects, settings = store
    payloads = [jpeg(i) for i in range(5)] + [b"\xff\xd8 not really a jpeg"]
    items = [NewItem(f"dir/{i}.jpg", "object", objects.put(p), len(p)) for i, p in enumerate(payloads)]
    operations = operation_spec(["convert"], {"format": "png", "max_side": "100"}, None, "_small")
    job_id = JobStore(engine).create_job(JobSpec("m", 1, (), None, False, operations), items)
    queue = WorkQueue(engine, WorkerIdentity())
    runner = JobRunner(queue, WorkerRegistry(engine), objects, NoAnalysis(), settings, WebhookSender(queue, settings))
    finished = asyncio.run(runner.run_job(JobStore(engine).get_job(job_id)))
    assert finished is not None and finished.counts["done"] == 5 and finished.counts["failed"] == 1
    rows = {r.name: r for r in JobStore(engine).results_page(job_id)}
    output = rows["dir/0.jpg"].result["output"]  # type: ignore[index]
    assert output["name"] == "0_small.png" and output["size"] == [100, 67] and output["format"] == "png"
    assert rows["dir/5.jpg"].status == "failed" and rows["dir/5.jpg"].error_kind == "invalid_image"
    job = JobStore(engine).get_job(job_id)
    assert job.outputs.count == 5 and job.outputs.input_bytes == sum(len(p) for p in payloads[:5])
    assert job.outputs.output_bytes == sum(r.result["output"]["output_bytes"] for r in rows.values() if r.result)
    # the CSV: the output's name, bytes and ratio; no model, which never saw the images (it named "m")
    table = list(csv.DictReader(io.StringIO(csv_header() + csv_lines(rows.values(), classified=False))))
    first = next(r for r in table if r["name"] == "dir/0.jpg")
    assert (first["model"], first["output_name"]) == ("", "0_small.png"), first
    assert int(first["output_bytes"]) == output["output_bytes"] and float(first["compression_ratio"]) > 0
    failed = next(r for r in table if r["name"] == "dir/5.jpg")
    assert failed["error_kind"] == "invalid_image" and failed["output_name"] == failed["model"] == ""

    async def pages(after: int) -> list[tuple[int, str, str]]:
        return JobStore(engine).outputs_page(job_id, after, 2)  # small pages: the stream crosses page boundaries

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in zip_stream(pages, objects)])

    archive = zipfile.ZipFile(io.BytesIO(asyncio.run(collect())))
    assert sorted(archive.namelist()) == [f"{i}_small.png" for i in range(5)]  # below the folder all inputs share
    assert Image.open(io.BytesIO(archive.read("3_small.png"))).size == (100, 67)

    # erased with the job (inputs and outputs), and never dropped as orphans while the job holds them
    assert drop_orphaned_objects(engine, objects, now=1e12) == 0
    report = purge_job(engine, objects, job_id, None, None)
    assert report.objects == 11 and not objects.stored()


def test_outputs_also_written_to_a_destination_inside_the_output_root(store, tmp_path: Path) -> None:
    from serving.jobs.errors import UriNotAllowedError

    engine, objects, settings = store
    root = tmp_path / "exports"
    root.mkdir()
    settings = settings.model_copy(update={"output_root": root})
    for refused, root_ in ((f"file://{tmp_path}/elsewhere", root), (f"file://{root}/web", None), ("http://x/y", root)):
        with pytest.raises(UriNotAllowedError):
            operation_spec(["convert"], {"format": "png"}, None, None, refused, root_)
    (root / "escape").symlink_to(tmp_path)  # a link inside the root that leads out of it
    with pytest.raises(UriNotAllowedError):
        operation_spec(["convert"], {"format": "png"}, None, None, f"file://{root}/escape/x", root)
    operations = operation_spec(
        ["convert"], {"format": "png", "max_side": "50"}, None, "_s", f"file://{root}/web/", root
    )
    assert operations["destination"] == f"file://{root}/web"  # type: ignore[index]
    items = [NewItem(f"album/{i}.jpg", "object", objects.put(jpeg(i)), 10) for i in range(3)]
    job_id = JobStore(engine).create_job(JobSpec("m", 1, (), None, False, operations), items)
    queue = WorkQueue(engine, WorkerIdentity())
    runner = JobRunner(queue, WorkerRegistry(engine), objects, NoAnalysis(), settings, WebhookSender(queue, settings))
    finished = asyncio.run(runner.run_job(JobStore(engine).get_job(job_id)))
    assert finished is not None and finished.counts["done"] == 3
    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))
    assert written == [f"web/{i}_s.png" for i in range(3)]  # below the folder all the job's inputs share
    row = JobStore(engine).results_page(job_id)[0]
    assert row.result["output"]["uri"] == f"file://{root}/web/0_s.png"  # type: ignore[index]
    assert Image.open(root / "web/0_s.png").size == (50, 33)


def test_job_outputs_that_would_share_a_name_are_named_apart() -> None:
    """A phone's pair (`IMG_1.HEIC`, `IMG_1.JPG`) keeps its extensions; a name given twice gets its item index from
    the second time on; names with no twin (in another folder too) are left alone. The order items arrive in does
    not matter: the rule is over all of the job's items."""
    items = [(0, "a/IMG_1.HEIC"), (1, "a/IMG_1.JPG"), (2, "b/IMG_1.JPG"), (3, "x.jpg"), (4, "x.jpg"), (5, "/a/y.png")]
    items += [(6, "a\\y.jpg")]  # the same output folder once output names drop the root and read a backslash as a slash
    bases = output_bases(items)
    assert bases == {0: "a/IMG_1_HEIC.HEIC", 1: "a/IMG_1_JPG.JPG", 4: "4_x.jpg", 5: "/a/y_png.png", 6: "a/y_jpg.jpg"}
    assert output_bases(list(reversed(items))) == bases
    # item 1's index form meets item 2's own name: item 2 moves on too, and no two outputs share a name
    names = ["x.jpg", "x.jpg", "1_x.png", "1_x.png"]
    more = output_bases(list(enumerate(names)))
    assert more == {1: "1_x.jpg", 2: "2_1_x.png", 3: "3_1_x.png"}
    webp = SimpleNamespace(format="webp")  # all output_name reads of a ConvertResult
    assert len({output_name(more.get(i, n), "", webp) for i, n in enumerate(names)}) == 4  # type: ignore[arg-type]


def test_twin_inputs_keep_both_outputs_at_a_destination_and_in_the_zip(store, tmp_path: Path) -> None:
    """Two inputs whose outputs would share a name (`IMG_1.HEIC` and `IMG_1.JPG` -> `IMG_1.png`): a real job writes
    both to the destination, under the names its results and its zip give them."""
    engine, objects, settings = store
    root = tmp_path / "exports"
    root.mkdir()
    settings = settings.model_copy(update={"output_root": root})
    operations = operation_spec(["convert"], {"format": "png", "max_side": "40"}, None, None, f"file://{root}", root)
    names = ["trip/IMG_1.JPG", "trip/IMG_1.jpeg", "trip/IMG_2.JPG", "trip/IMG_2.JPG"]
    payloads = [jpeg(10 + i) for i in range(len(names))]
    items = [NewItem(n, "object", objects.put(p), len(p)) for n, p in zip(names, payloads, strict=True)]
    job_id = JobStore(engine).create_job(JobSpec("m", 1, (), None, False, operations), items)
    queue = WorkQueue(engine, WorkerIdentity())
    runner = JobRunner(queue, WorkerRegistry(engine), objects, NoAnalysis(), settings, WebhookSender(queue, settings))
    finished = asyncio.run(runner.run_job(JobStore(engine).get_job(job_id)))
    assert finished is not None and finished.counts["done"] == 4
    expected = ["3_IMG_2.png", "IMG_1_JPG.png", "IMG_1_jpeg.png", "IMG_2.png"]  # below trip/, which all share
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png")) == expected
    results = sorted(JobStore(engine).results_page(job_id), key=lambda row: row.idx)
    assert [row.result["output"]["name"] for row in results] == [  # type: ignore[index]
        "IMG_1_JPG.png", "IMG_1_jpeg.png", "IMG_2.png", "3_IMG_2.png"
    ]  # fmt: skip
    for row, payload in zip(results, payloads, strict=True):  # each output is its own input's, none replaced
        written = np.asarray(Image.open(root / row.result["output"]["name"]).convert("RGB"))  # type: ignore[index]
        expected_pixels = np.asarray(Image.open(io.BytesIO(payload)).convert("RGB").resize(written.shape[1::-1]))
        assert np.abs(written.astype(int) - expected_pixels.astype(int)).mean() < 40

    async def pages(after: int) -> list[tuple[int, str, str]]:
        return JobStore(engine).outputs_page(job_id, after, 10)

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in zip_stream(pages, objects)])

    assert sorted(zipfile.ZipFile(io.BytesIO(asyncio.run(collect()))).namelist()) == expected


def test_outputs_zip_leaves_out_an_output_gone_between_its_page_and_its_bytes(
    store: tuple[sa.Engine, ObjectStore, JobSettings],
) -> None:
    """A purge that lands after a page of names was read and before their bytes: the stream used to raise in the
    middle of the response (a broken download and an unhandled error in the log); the outputs still there are
    delivered in a valid archive."""
    _, objects, _ = store
    digests = [objects.put(jpeg(seed)) for seed in range(3)]
    served: list[int] = []

    async def pages(after: int) -> list[tuple[int, str, str]]:
        if served:
            return []
        served.append(after)
        objects.delete(digests[1])  # purged meanwhile
        return [(i, f"{i}.jpg", digest) for i, digest in enumerate(digests)]

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in zip_stream(pages, objects)])

    archive = zipfile.ZipFile(io.BytesIO(asyncio.run(collect())))
    assert archive.testzip() is None and sorted(archive.namelist()) == ["0.jpg", "2.jpg"]
    assert archive.read("2.jpg") == jpeg(2)


def test_a_purge_keeps_an_input_a_submission_being_taken_in_stored_again(store) -> None:
    """Were: purging an old job deleted the object a new submission of the same bytes had just stored (it has no row
    until the request is taken in): the new job was accepted and its item failed missing_input."""
    engine, objects, settings = store
    photo = jpeg(7)
    spec = JobSpec("m", 1, ("classification",))
    old = JobStore(engine).create_job(spec, [NewItem("old.jpg", "object", objects.put(photo), len(photo))])
    time.sleep(0.01)
    again = objects.put(photo)  # a new submission's intake: stored again, no job row yet
    report = purge_job(engine, objects, old, None, None)
    assert report.objects == 0 and objects.exists(again)  # the orphan sweep decides once the grace is over
    new = JobStore(engine).create_job(spec, [NewItem("new.jpg", "object", again, len(photo))])
    assert purge_job(engine, objects, new, None, None).objects == 1 and not objects.exists(again)
