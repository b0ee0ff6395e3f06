"""Collections against unusual inputs: file names that are not UTF-8, values no column holds, job-saved reports and
oversized images for thumbnails."""

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from pipelines.collections.record import ImageRecord
from serving.collections import analyze
from serving.collections.sources import SourceItem, list_sources, read_items
from serving.collections.storable import finite_json, local_path, storable_location, storable_text
from serving.collections.store import CollectionStore, RecordedImage
from serving.jobs.database import open_job_database


@pytest.fixture
def store(tmp_path: Path) -> CollectionStore:
    return CollectionStore(open_job_database(f"sqlite:///{tmp_path}/jobs.sqlite"))


def _jpeg(color: str = "red", size: tuple[int, int] = (32, 24)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, "JPEG")
    return out.getvalue()


@pytest.fixture
def latin1_folder(tmp_path: Path) -> tuple[str, bytes]:
    """A folder (itself named in Latin-1) with ok.jpg and a Latin-1 'café.jpg', as old cameras and shares write."""
    folder = os.path.join(os.fsencode(tmp_path), b"cartes-\xe9t\xe9")
    os.makedirs(folder)
    data = _jpeg("blue")
    with open(os.path.join(folder, b"ok.jpg"), "wb") as handle:
        handle.write(_jpeg())
    with open(os.path.join(folder, b"caf\xe9.jpg"), "wb") as handle:
        handle.write(data)
    return os.fsdecode(folder), data


def test_storable_text_and_location_round_trip() -> None:
    escaped = os.fsdecode(b"/photos/caf\xe9 100%.jpg")
    assert storable_text(escaped) == "/photos/caf\ufffd 100%.jpg"  # as tar names are read (TAR_NAMES)
    assert storable_text("caf\u00e9.jpg") == "caf\u00e9.jpg"  # valid text is unchanged
    assert storable_text("a\ud800b") == "a?b"  # a lone surrogate that is no escaped byte
    location = storable_location(escaped)
    location.encode("utf-8")  # a text column holds it
    assert local_path(location) == escaped and storable_location("/photos/ok.jpg") == "/photos/ok.jpg"
    assert local_path("/photos/ok.jpg") is None
    assert finite_json({"a": [1.0, float("nan")], "b": (float("inf"), "x")}) == {"a": [1.0, None], "b": [None, "x"]}


def test_a_name_that_is_not_utf8_is_listed_storable_and_read(latin1_folder: tuple[str, bytes]) -> None:
    folder, data = latin1_folder
    items = list_sources([folder])
    assert [item.name for item in items] == ["caf\ufffd.jpg", "ok.jpg"]
    rows = [item.to_row() for item in items]
    for row in rows:
        row["location"].encode("utf-8")  # Ray Data's Arrow blocks and the store take it
    assert read_items(rows, 1 << 20)[0] == data  # read back from the stored location
    pyarrow = pytest.importorskip("pyarrow")
    pyarrow.array([row["location"] for row in rows])


def test_a_rerun_recognises_images_with_such_names(store: CollectionStore, latin1_folder: tuple[str, bytes]) -> None:
    folder, _ = latin1_folder
    items = list_sources([folder])
    info = store.open("cards", ["metadata"], [storable_location(folder)])
    images = [RecordedImage(ImageRecord(item.name), {}, item.stored_location) for item in items]
    assert store.add(info.id, images) == 2
    rerun = list_sources([folder])
    assert store.names_recorded_elsewhere("cards", "default", {item.name: item.place for item in rerun}) == {}
    assert {item.name for item in rerun} <= store.done_names(info.id)  # nothing to analyse again


def test_one_unstorable_image_is_recorded_failed_and_the_others_kept(store: CollectionStore) -> None:
    info = store.open("cards", ["metadata"], ["/x"])
    good = [RecordedImage(ImageRecord(f"{i}.jpg", iso=100), {}, f"/x/{i}.jpg") for i in range(7)]
    bad = RecordedImage(ImageRecord("hostile.jpg", iso=10**30), {}, "/x/hostile.jpg")  # no INTEGER column holds it
    written, recorded = store.add_each(info.id, [*good[:3], bad, *good[3:]])
    assert written == 8 and [image.record.ok for image in recorded] == [True] * 3 + [False] + [True] * 4
    assert store.get(info.id).images == 7 and store.get(info.id).failed == 1
    failed = [image for _, image in store.images(info.id) if not image.record.ok]
    assert failed[0].record.name == "hostile.jpg" and "unstorable: OverflowError" in (failed[0].record.error or "")


def test_the_analysis_run_goes_on_past_an_unstorable_image(
    store: CollectionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [SourceItem(f"{i}.jpg", f"/x/{i}.jpg") for i in range(4)]
    documents = ['{"metadata": {"exif": {"iso": 100}}}'] * 4
    documents[2] = '{"metadata": {"exif": {"iso": 1%s}}}' % ("0" * 30)  # no INTEGER column holds it
    empty = np.array(["", ""])
    batches = [
        {"name": np.array([i.name for i in items[:2]]), "error": empty, "document": np.array(documents[:2]),
         "class_probs": empty, "output": empty},
        {"name": np.array([i.name for i in items[2:]]), "error": empty, "document": np.array(documents[2:]),
         "class_probs": np.array(["", "not json"]), "output": empty},
    ]  # fmt: skip

    def stream(*_: Any) -> Any:
        yield from batches

    monkeypatch.setattr(analyze, "_stream", stream)
    monkeypatch.setattr(analyze, "init_ray", lambda address: None)
    info = store.open("cards", ["metadata"], ["/x"])
    stats = analyze.run_analysis(items, None, store, info.id, address="ray://test")  # type: ignore[arg-type]
    assert (stats.done, stats.failed) == (2, 2)  # the unstorable one and the one whose row is broken
    final = store.get(info.id)
    assert (final.status, final.images, final.failed) == ("ready", 2, 2)


def _png_header_bomb(width: int, height: int) -> bytes:
    """A valid greyscale PNG of width x height zeros, a few hundred KB compressed (made a row at a time)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    packer, row, parts = zlib.compressobj(9), bytes(width + 1), []
    for _ in range(height):
        parts.append(packer.compress(row))
    parts.append(packer.flush())
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")


def test_a_thumbnail_is_refused_over_the_pixel_limit_before_decoding() -> None:
    from pipelines.errors import ImageTooLargeError
    from pipelines.limits import DecodeLimits
    from serving.collections.reporting import thumbnail_jpeg

    bomb = _png_header_bomb(12_000, 9_000)  # 108 MP: over the default 100 MP, decoded whole before
    with pytest.raises(ImageTooLargeError):
        thumbnail_jpeg(bomb)
    with pytest.raises(ImageTooLargeError):
        thumbnail_jpeg(_jpeg(size=(64, 48)), 32, DecodeLimits(max_pixels=1000))  # the server's limits, not Pillow's
    assert thumbnail_jpeg(_jpeg(size=(64, 48)), 32)[:2] == b"\xff\xd8"


def test_a_thumbnail_shows_deep_and_transparent_images_as_analysis_sees_them() -> None:
    """A 16-bit grey PNG was clipped to white by convert("RGB"), and a logo's transparent surroundings came out
    black (with a black circle on them gone): now the decode stage's rules, 8-bit scaling and white under alpha."""
    import io

    import numpy as np
    from PIL import Image, ImageDraw

    from serving.collections.reporting import thumbnail_jpeg

    def mean(data: bytes) -> np.ndarray:
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float64).mean(axis=(0, 1))

    grey16 = io.BytesIO()
    Image.fromarray(np.full((64, 96), 32768, dtype=np.uint16)).save(grey16, "PNG")  # mid grey in 16 bits
    assert np.allclose(mean(thumbnail_jpeg(grey16.getvalue(), 32)), 128, atol=3)  # 255 before

    logo = Image.new("RGBA", (96, 96), (0, 0, 0, 0))
    ImageDraw.Draw(logo).ellipse((24, 24, 72, 72), fill=(0, 0, 0, 255))
    packed = io.BytesIO()
    logo.save(packed, "PNG")
    thumb = np.asarray(Image.open(io.BytesIO(thumbnail_jpeg(packed.getvalue(), 48))).convert("L"), dtype=np.float64)
    assert thumb[0, 0] > 240 and thumb[24, 24] < 20  # white around a black circle (all black before)


def test_the_report_of_a_collection_saved_from_a_job_has_its_thumbnails(store: CollectionStore, tmp_path: Path) -> None:
    from types import SimpleNamespace

    from serving.collections.reporting import report_thumbnails
    from serving.jobs.objects import ObjectStore

    objects = ObjectStore(str(tmp_path / "objects"))
    digest = objects.put(_jpeg("green"))
    jobs = SimpleNamespace(  # what report_thumbnails reads of JobService
        store=SimpleNamespace(input_source=lambda job_id, name: ("object", digest) if job_id == "abc" else None),
        objects=lambda: objects,
        settings=SimpleNamespace(read_root=lambda tenant: None, remote_access=lambda tenant: None),
    )
    info = store.open("saved", ["metadata"], ["job:abc"], job_id="abc")
    store.add(
        info.id,
        [
            RecordedImage(ImageRecord("a.jpg"), {}, "job:abc"),
            RecordedImage(ImageRecord("old.jpg"), {}),  # saved before images named their job: its first job's
            RecordedImage(ImageRecord("gone.jpg"), {}, "job:purged"),
        ],
    )
    thumbnails = report_thumbnails(store, info, ["a.jpg", "old.jpg", "gone.jpg"], jobs)  # type: ignore[arg-type]
    assert sorted(thumbnails) == ["a.jpg", "old.jpg"]
    assert thumbnails["a.jpg"].startswith("data:image/jpeg;base64,")


@pytest.fixture
def http(tmp_path: Path) -> Any:
    from fastapi.testclient import TestClient

    from serving.http.app import create_http_app
    from serving.jobs.service import JobService
    from serving.jobs.settings import JobSettings
    from tests.unit.tiny_models import tiny_local_service

    service, settings = tiny_local_service(tmp_path)
    settings = settings.model_copy(update={"max_pixels": 2000, "max_full_decode_pixels": 2000})
    url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    jobs = JobService(service, JobSettings(database_url=url, object_store=str(tmp_path / "objects")))
    with TestClient(create_http_app(service, jobs, settings)) as client:
        yield client, CollectionStore(open_job_database(url))


def test_over_http_a_thumbnail_over_the_limit_is_413_and_non_finite_values_are_null(http: Any, tmp_path: Path) -> None:
    import sqlalchemy as sa

    from serving.jobs.tables import collection_images

    client, store = http
    big, small = tmp_path / "big.jpg", tmp_path / "small.jpg"
    big.write_bytes(_jpeg(size=(64, 48)))  # 3072 pixels: over this server's 2000
    small.write_bytes(_jpeg(size=(40, 30)))
    info = store.open("cards", ["metadata"], [str(tmp_path)])
    store.add(info.id, [RecordedImage(ImageRecord(p.name), {}, str(p)) for p in (big, small)])
    with store.engine.begin() as conn:  # a row stored before non-finite values were refused at extraction
        document = {"metadata": {"xmp": {"rating": float("nan")}}}
        conn.execute(sa.update(collection_images).values(f_number=float("inf"), document=document))
    listing = client.get(f"/v1/collections/{info.id}/images", params={"analysis": "true"})
    assert listing.status_code == 200, listing.text
    images = {image["name"]: image for image in listing.json()["images"]}
    assert images["big.jpg"]["f_number"] is None and images["big.jpg"]["analysis"]["metadata"]["xmp"]["rating"] is None
    assert client.get(f"/v1/collections/{info.id}/images/{images['big.jpg']['id']}/thumbnail").status_code == 413
    answer = client.get(f"/v1/collections/{info.id}/images/{images['small.jpg']['id']}/thumbnail")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/jpeg"
    assert client.get(f"/v1/collections/{info.id}/report", params={"format": "json"}).status_code == 200
