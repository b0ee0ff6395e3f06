"""A stored collection's report: the JSON (`pipelines.collections.report.build_report` over its records) and the
self-contained HTML with thumbnails of the images it shows, read again from where they were analysed (a folder, an
archive, a URI, or the inputs of the batch job the collection was saved from). Thumbnails decode within the server's
decode limits (`DecodeLimits`: bytes, pixels, formats), as analysis does."""

import base64
import io
import logging
from typing import Any

from pipelines.collections.record import ImageRecord
from pipelines.collections.report import build_report, report_image_names
from pipelines.collections.report_html import render_report_html
from pipelines.image_header import exif_orientation, open_validated, upright_image
from pipelines.limits import DecodeLimits
from pipelines.pixel_modes import tiff_sample_type, to_rgb
from serving.collections.sources import read_items
from serving.collections.storable import finite_json
from serving.collections.store import CollectionInfo, CollectionStore, RecordedImage
from serving.jobs.errors import ImageNotFoundError
from serving.jobs.objects import read_job_input
from serving.jobs.service import JobService
from serving.jobs.tables import located_job

logger = logging.getLogger("imgserve.collections")
THUMBNAIL_SIDE = 160
THUMBNAIL_MAX_BYTES = 64 * 1024 * 1024  # files read back for thumbnails; larger ones get the placeholder
DEFAULT_LIMITS = DecodeLimits()  # the server's defaults; the server passes its own


def collection_report(store: CollectionStore, info: CollectionInfo) -> dict[str, Any]:
    report = build_report(info.name, list(store.records(info.id)))
    report["collection"] = {"id": info.id, "status": info.status, "stages": info.stages, "sources": info.sources}
    return finite_json(report)  # a value stored before NaN/infinity were refused must not fail the JSON answer


def thumbnail_jpeg(data: bytes, side: int = THUMBNAIL_SIDE, limits: DecodeLimits = DEFAULT_LIMITS) -> bytes:
    """A small upright JPEG of `data` (JPEGs are decoded at reduced scale). The header is checked against `limits`
    before any pixel is decoded: ImageTooLargeError (413) for an image over them, as /v1/analyze answers."""
    with open_validated(data, limits) as image:
        image.draft("RGB", (side * 2, side * 2))
        # the decode stage's rules (pipelines.decode): turned by its EXIF orientation, deep samples scaled to 8 bits
        # and transparency shown on white (convert("RGB") clipped a 16-bit PNG to white and dropped alpha, leaving
        # a logo's transparent surroundings black)
        sample = tiff_sample_type(image)
        rgb = to_rgb(upright_image(image, exif_orientation(image)), sample)
        rgb.thumbnail((side, side))
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=80)
    return out.getvalue()


def thumbnail_uri(data: bytes, side: int = THUMBNAIL_SIDE, limits: DecodeLimits = DEFAULT_LIMITS) -> str:
    """`thumbnail_jpeg` as a data URI."""
    return "data:image/jpeg;base64," + base64.b64encode(thumbnail_jpeg(data, side, limits)).decode()


def recorded_image_bytes(image: RecordedImage, info: CollectionInfo, jobs: JobService) -> bytes:
    """The file of one analysed image, read again where it was read (a folder, archive member or fsspec URI) or,
    for a collection saved from a batch job, from that job's inputs; ImageNotFoundError when it cannot be."""
    name = image.record.name
    saved_from = located_job(image.location)
    if image.location and saved_from is None:  # read from a folder, an archive or a URI
        row = {"location": image.location, "member": image.member or ""}
        data = read_items([row], THUMBNAIL_MAX_BYTES)[0]
    # saved from a batch job: that job's inputs (no location: saved before locations named the job, its first job)
    elif (job_id := saved_from or info.job_id) and (source := jobs.store.input_source(job_id, name)):
        # where the tenant may read today (its root, its object-store locations), as the job runner reads inputs
        root, remote = jobs.settings.read_root(info.tenant), jobs.settings.remote_access(info.tenant)
        try:
            data = read_job_input(*source, jobs.objects(), root, THUMBNAIL_MAX_BYTES, remote)
        except Exception as exc:  # noqa: BLE001 - purged, missing or refused: the same answer
            data = exc
    else:
        data = FileNotFoundError(name)
    if isinstance(data, Exception):
        raise ImageNotFoundError(f"image {name!r} can no longer be read where it was analysed")
    return data


def report_thumbnails(
    store: CollectionStore,
    info: CollectionInfo,
    names: list[str],
    jobs: JobService | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> dict[str, str]:
    """Thumbnails of `names` that can still be read; the others are left out (the report draws a placeholder).
    Files are read in one batch (an archive opened once); images saved from a batch job from that job's inputs
    (`recorded_image_bytes`; none without `jobs`)."""
    located = store.locations(info.id, names)
    files = [n for n in names if n in located and located[n][0] and located_job(located[n][0]) is None]
    rows = [{"location": located[n][0], "member": located[n][1]} for n in files]
    found: dict[str, bytes | Exception] = dict(zip(files, read_items(rows, THUMBNAIL_MAX_BYTES), strict=True))
    for name in names:
        if jobs is not None and name in located and name not in found:  # saved from a batch job
            image = RecordedImage(ImageRecord(name), None, located[name][0] or None)
            try:
                found[name] = recorded_image_bytes(image, info, jobs)
            except ImageNotFoundError as exc:
                found[name] = exc
    out: dict[str, str] = {}
    for name, data in found.items():
        if isinstance(data, Exception):
            continue
        try:
            out[name] = thumbnail_uri(data, limits=limits)
        except Exception:  # noqa: BLE001 - a file that changed, is corrupt now, or is over the limits: no thumbnail
            logger.info("no thumbnail for %s", name)
    return out


def collection_report_html(
    store: CollectionStore,
    info: CollectionInfo,
    report: dict[str, Any] | None = None,
    jobs: JobService | None = None,
    limits: DecodeLimits = DEFAULT_LIMITS,
) -> str:
    """The HTML report; `jobs` reads the inputs of a batch job the collection was saved from, `limits` bounds the
    thumbnails' decoding (the server's)."""
    report = report or collection_report(store, info)
    thumbnails = report_thumbnails(store, info, report_image_names(report), jobs, limits)
    return render_report_html(report, thumbnails)
