"""Output names at a file:// destination are names, never URI syntax: '#', '?' and '%xx' in an input's name used to
decide where its output went ('IMG #1.jpg' and 'IMG #2.jpg' both became the file 'IMG ', '%2e%2e/' climbed out of
the destination), and the URI reported for it named no file."""

import asyncio
import io
import zipfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from pipelines.convert.names import output_bases
from serving.errors import BadRequestError
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.errors import ItemInputError
from serving.jobs.intake import InputPart, Intake
from serving.jobs.objects import ObjectStore
from serving.jobs.operations import operation_spec
from serving.jobs.output_zip import zip_stream
from serving.jobs.records import JobSpec, NewItem
from serving.jobs.runner import JobRunner
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore
from serving.jobs.uris import write_named_output
from serving.jobs.webhooks import WebhookSender
from serving.jobs.work_queue import WorkQueue
from serving.jobs.workers import WorkerIdentity, WorkerRegistry
from tests.unit.test_jobs_operations import NoAnalysis, jpeg

pytestmark = pytest.mark.unit

NAMES = ["IMG #1.jpg", "IMG #2.jpg", "what?.jpg", "50%25 off.jpg", "%2e%2e/escaped.jpg", "%2e%2e/team/over.jpg"]


def test_job_outputs_are_written_under_their_literal_names(tmp_path: Path) -> None:
    settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}", object_store=str(tmp_path / "o"))
    engine = create_store_engine(settings.database_url)
    migrate(engine)
    objects = ObjectStore(settings.object_store)
    root = tmp_path / "exports"
    (root / "team").mkdir(parents=True)
    (root / "team" / "over.png").write_bytes(b"another job's output")
    settings = settings.model_copy(update={"output_root": root})
    operations = operation_spec(
        ["convert"], {"format": "png", "max_side": "20"}, None, None, f"file://{root}/web", root
    )
    items = [NewItem(name, "object", objects.put(jpeg(i)), 10) for i, name in enumerate(NAMES)]
    job_id = JobStore(engine).create_job(JobSpec("m", 1, (), None, False, operations), items)
    queue = WorkQueue(engine, WorkerIdentity())
    runner = JobRunner(queue, WorkerRegistry(engine), objects, NoAnalysis(), settings, WebhookSender(queue, settings))
    finished = asyncio.run(runner.run_job(JobStore(engine).get_job(job_id)))
    assert finished is not None and finished.counts["done"] == len(NAMES)

    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    expected = ["IMG #1.png", "IMG #2.png", "what?.png", "50%25 off.png", "%2e%2e/escaped.png", "%2e%2e/team/over.png"]
    assert written == sorted(["team/over.png", *(f"web/{name}" for name in expected)])
    assert (root / "team" / "over.png").read_bytes() == b"another job's output"  # nothing outside the destination
    for row in JobStore(engine).results_page(job_id):
        uri = row.result["output"]["uri"]  # type: ignore[index]
        assert (Path(unquote(urlsplit(uri).path))).is_file(), uri  # the reported URI names the file written
        assert Path(unquote(urlsplit(uri).path)) == root / "web" / row.result["output"]["name"]  # type: ignore[index]


@pytest.mark.parametrize("name", ["../x.png", "/abs.png", "a//b.png", "a/./b.png"])
def test_a_name_that_is_not_a_plain_relative_path_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ItemInputError) as caught:
        write_named_output(f"file://{tmp_path}/web", name, b"x", tmp_path)
    assert caught.value.kind == "forbidden_uri" and not any(tmp_path.rglob("*.png"))


@pytest.mark.parametrize("suffix", ["?x=1", "#frag"])
def test_a_destination_with_a_query_or_fragment_is_refused(tmp_path: Path, suffix: str) -> None:
    with pytest.raises(BadRequestError, match="query or fragment"):
        operation_spec(["convert"], {"format": "png"}, None, None, f"file://{tmp_path}/web{suffix}", tmp_path)


def test_remote_names_are_keys_as_they_are(tmp_path: Path) -> None:
    """An object-store key is the name itself (memory:// stands in for s3://): no URI parsing, no fsspec chaining."""
    import fsspec

    uri = write_named_output("memory://bucket/web", "IMG #1 50%25::x.png", b"data", None)
    assert uri == "memory://bucket/web/IMG #1 50%25::x.png"
    assert fsspec.filesystem("memory").cat_file("/bucket/web/IMG #1 50%25::x.png") == b"data"


def test_outputs_of_uri_inputs_are_named_below_the_folder_the_inputs_share(tmp_path: Path) -> None:
    """A job of file:// URIs wrote `<destination>/file:/<the whole source path>`: the item's name is its URI, and the
    output name kept the scheme and every folder of the source."""
    source = tmp_path / "in" / "parcels"
    for folder, index in (("box", 1), ("bag", 2), ("bag/small", 3)):
        (source / folder).mkdir(parents=True, exist_ok=True)
        (source / folder / f"photo {index}.jpg").write_bytes(jpeg(index))
    root = tmp_path / "exports"
    settings = JobSettings(
        database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
        object_store=str(tmp_path / "o"),
        allowed_root=tmp_path / "in",
        output_root=root,
    )
    engine = create_store_engine(settings.database_url)
    migrate(engine)
    operations = operation_spec(["convert"], {"format": "png", "max_side": "20"}, None, None, f"file://{root}", root)
    uris = [
        f"file://{source}/box/photo%201.jpg",
        f"file://{source}/bag/photo 2.jpg",
        f"file://{source}/bag/small/photo 3.jpg",
    ]
    items = [NewItem(uri, "uri", uri) for uri in uris]
    job_id = JobStore(engine).create_job(JobSpec("m", 1, (), None, False, operations), items)
    queue = WorkQueue(engine, WorkerIdentity())
    objects = ObjectStore(settings.object_store)
    runner = JobRunner(queue, WorkerRegistry(engine), objects, NoAnalysis(), settings, WebhookSender(queue, settings))
    finished = asyncio.run(runner.run_job(JobStore(engine).get_job(job_id)))
    assert finished is not None and finished.counts["done"] == 3, finished
    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert written == ["bag/photo 2.png", "bag/small/photo 3.png", "box/photo 1.png"]
    names = sorted(row.result["output"]["name"] for row in JobStore(engine).results_page(job_id))  # type: ignore[index]
    assert names == written  # the results and outputs.zip name them alike


def test_batch_outputs_are_named_below_the_folder_all_the_jobs_inputs_share() -> None:
    """One uploaded archive named every output `photos.zip/...`: unzipping outputs.zip next to the upload failed
    ('photos.zip exists but is not directory'). Collections and the CLI keep their names (no `below_shared_folder`)."""
    one_archive = [(0, "photos.zip/2024/IMG_1.jpg"), (1, "photos.zip/IMG_2.HEIC"), (2, "photos.zip/2024/b/c.png")]
    assert output_bases(one_archive, below_shared_folder=True) == {
        0: "2024/IMG_1.jpg",
        1: "IMG_2.HEIC",
        2: "2024/b/c.png",
    }
    assert output_bases(one_archive) == {}  # a collection's or the CLI's names, as they were
    two_archives = [(0, "a.zip/x/1.jpg"), (1, "b.zip/x/1.jpg")]
    assert output_bases(two_archives, below_shared_folder=True) == {}  # kept apart by their archives' names
    assert output_bases([(0, "a.jpg")], below_shared_folder=True) == {}  # a lone upload: a_web.webp, as before
    # uploads beside an archive: nothing shared; URIs first go below the folder the URIs share, as before
    mixed = [(0, "a.jpg"), (1, "p.zip/d/a.jpg"), (2, "file:///data/trip/b.jpg"), (3, "file:///data/trip/c/d.jpg")]
    assert output_bases(mixed, below_shared_folder=True) == {2: "b.jpg", 3: "c/d.jpg"}
    # names that meet once the shared folder is gone are still kept apart
    twins = [(0, "p.zip/IMG_1.JPG"), (1, "p.zip/IMG_1.HEIC"), (2, "p.zip/x.jpg"), (3, "p.zip/x.jpg")]
    assert output_bases(twins, below_shared_folder=True) == {
        0: "IMG_1_JPG.JPG", 1: "IMG_1_HEIC.HEIC", 2: "x.jpg", 3: "3_x.jpg"
    }  # fmt: skip


def test_outputs_of_one_uploaded_archive_unzip_next_to_it(tmp_path: Path) -> None:
    """A real job of one uploaded archive: the result's output name, the outputs.zip entry and the file written at
    output_uri are one name, below the archive's own."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as upload:
        for name, seed in (("2024/IMG_1.jpg", 1), ("2024/day 2/IMG_2.jpg", 2), ("IMG_3.jpg", 3), ("._IMG_3.jpg", 4)):
            upload.writestr(name, jpeg(seed))
    buffer.seek(0)
    root = tmp_path / "exports"
    settings = JobSettings(
        database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}", object_store=str(tmp_path / "o"), output_root=root
    )
    engine = create_store_engine(settings.database_url)
    migrate(engine)
    objects = ObjectStore(settings.object_store)
    items = Intake(objects, settings, "default").items([InputPart("archive", "photos.zip", buffer)])
    operations = operation_spec(["convert"], {"format": "png", "max_side": "20"}, None, "_web", f"file://{root}", root)
    job_id = JobStore(engine).create_job(JobSpec("m", 1, (), None, False, operations), items)
    queue = WorkQueue(engine, WorkerIdentity())
    runner = JobRunner(queue, WorkerRegistry(engine), objects, NoAnalysis(), settings, WebhookSender(queue, settings))
    finished = asyncio.run(runner.run_job(JobStore(engine).get_job(job_id)))
    assert finished is not None and finished.counts["done"] == 3, finished

    expected = ["2024/IMG_1_web.png", "2024/day 2/IMG_2_web.png", "IMG_3_web.png"]
    written = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert written == expected
    results = JobStore(engine).results_page(job_id)
    assert sorted(row.result["output"]["name"] for row in results) == expected  # type: ignore[index]

    async def pages(after: int) -> list[tuple[int, str, str]]:
        return JobStore(engine).outputs_page(job_id, after, 10)

    async def collect() -> bytes:
        return b"".join([chunk async for chunk in zip_stream(pages, objects)])

    outputs = zipfile.ZipFile(io.BytesIO(asyncio.run(collect())))
    assert sorted(outputs.namelist()) == expected
    (tmp_path / "here").mkdir()
    (tmp_path / "here" / "photos.zip").write_bytes(buffer.getvalue())  # the upload, where outputs.zip is unzipped
    outputs.extractall(tmp_path / "here")
    assert (tmp_path / "here" / "2024" / "IMG_1_web.png").is_file()
