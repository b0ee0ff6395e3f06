"""Quality verdicts in `/metrics` (issue #15 part 5): per-tenant image, tag and level counters and the score
histogram move by exactly what the analysed images returned, over the in-process app with tiny models."""

import asyncio
import io
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageFilter
from prometheus_client.parser import text_string_to_metric_families

from pipelines.quality import QualityReport, Tag, analyze_quality, default_thresholds
from pipelines.quality.thresholds import tag_kinds, tag_vocabulary
from serving.http.app import create_http_app
from serving.metrics import QUALITY_SCORE_BUCKETS
from serving.quality_metrics import OTHER, record_quality
from serving.requests import ImageOptions
from serving.security.gate import CURRENT_PRINCIPAL
from serving.security.principal import Principal
from serving.service import InferenceService
from tests.unit.test_edges_in_process import jpeg
from tests.unit.tiny_models import tiny_local_service

pytestmark = pytest.mark.unit

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def encode(image: Image.Image, quality: int = 90) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def photos() -> list[bytes]:
    """A few different images, so that several tags show up."""
    textured = Image.open(io.BytesIO(jpeg((40, 90, 160), (320, 240))))
    return [
        encode(textured),
        encode(textured.filter(ImageFilter.GaussianBlur(6))),  # blurry
        encode(Image.new("RGB", (256, 256), (12, 12, 14))),  # dark and flat
        encode(textured.point(lambda v: v // 6), quality=20),  # dark, blocky
        jpeg((230, 230, 40), (200, 200)),
    ]


def scrape(http: TestClient) -> Samples:
    response = http.get("/metrics")
    assert response.status_code == 200, response.text
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        if family.name.startswith("imgserve_quality"):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    key = (name, frozenset(labels.items()))
    return after.get(key, 0.0) - before.get(key, 0.0)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> InferenceService:
    return tiny_local_service(tmp_path_factory.mktemp("tiny"))[0]


@pytest.fixture(scope="module")
def http(service: InferenceService) -> Iterator[TestClient]:
    with TestClient(create_http_app(service)) as client:
        yield client


def check_moved(after: Samples, before: Samples, qualities: list[dict], tenant: str = "default") -> None:
    """Images, levels, tags and the score histogram moved by exactly what `qualities` say."""
    assert delta(after, before, "imgserve_quality_images_total", tenant=tenant) == len(qualities)
    levels = Counter(q["level"] for q in qualities)
    for level in ("LOW", "MEDIUM", "HIGH", "ULTRA"):
        assert delta(after, before, "imgserve_quality_level_total", tenant=tenant, level=level) == levels[level]
    tags = Counter(tag["name"] for q in qualities for tag in q["tags"])
    kinds = tag_kinds()
    for tag in set(kinds) | {OTHER}:
        kind = kinds.get(tag, OTHER)
        assert delta(after, before, "imgserve_quality_tags_total", tenant=tenant, tag=tag, kind=kind) == tags[tag], tag
    histogram = "imgserve_quality_score"
    assert delta(after, before, f"{histogram}_count", tenant=tenant) == len(qualities)
    total = delta(after, before, f"{histogram}_sum", tenant=tenant)
    assert total == pytest.approx(sum(q["score"] for q in qualities))
    for bound in QUALITY_SCORE_BUCKETS:
        expected = sum(q["score"] <= bound for q in qualities)
        le = f"{float(bound)}"
        assert delta(after, before, f"{histogram}_bucket", tenant=tenant, le=le) == expected, bound
    assert delta(after, before, f"{histogram}_bucket", tenant=tenant, le="+Inf") == len(qualities)


def test_analyze_moves_the_quality_series_by_what_it_returned(http: TestClient) -> None:
    before = scrape(http)
    files = [("image", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate(photos())]
    response = http.post("/v1/analyze?fields=quality", files=files)
    assert response.status_code == 200, response.text
    qualities = [result["quality"] for result in response.json()["results"]]
    assert len(qualities) == len(files)
    single = http.post("/v1/analyze?fields=quality", content=photos()[1])  # a second request adds to them
    qualities.append(single.json()["results"][0]["quality"])
    after = scrape(http)
    check_moved(after, before, qualities)
    assert sum(len(q["tags"]) for q in qualities) > 0, "the images should carry some tags"


def test_stages_without_quality_count_nothing(http: TestClient) -> None:
    before = scrape(http)
    assert http.post("/v1/analyze?fields=classification", content=photos()[0]).status_code == 200
    assert http.post("/v1/classify", content=photos()[0]).status_code == 200
    assert scrape(http) == before


def test_analyze_outside_a_request_counts_under_the_default_tenant(http: TestClient, service: InferenceService) -> None:
    """`analyze` with no caller (no principal) counts under "default". (A batch job's items run as the job's tenant:
    serving.jobs.runner sets it.)"""
    before = scrape(http)
    analyses = asyncio.run(service.analyze(photos()[:2], ImageOptions(fields=["quality"])))
    qualities = [a.quality.to_dict() for a in analyses if a.quality is not None]
    assert len(qualities) == 2
    check_moved(scrape(http), before, qualities)


def test_record_quality_uses_the_callers_tenant_and_bounds_tags(http: TestClient) -> None:
    report = analyze_quality(np.asarray(Image.open(io.BytesIO(photos()[1])).convert("RGB")))
    made_up = Tag("made_up_tag", 0.9, "classical", "x > 1")
    odd = QualityReport(report.score, report.level, (*report.tags, made_up), report.metrics, 1, report.detail)
    before = scrape(http)
    token = CURRENT_PRINCIPAL.set(Principal(key_id="k1", tenant="team-a", role="analyst", source="key"))
    try:
        record_quality(odd)
    finally:
        CURRENT_PRINCIPAL.reset(token)
    after = scrape(http)
    quality = {"score": odd.score, "level": odd.level, "tags": [{"name": t.name} for t in report.tags]}
    quality["tags"].append({"name": OTHER})
    check_moved(after, before, [quality], tenant="team-a")
    assert not any(dict(labels).get("tag") == "made_up_tag" for _, labels in after)
    assert delta(after, before, "imgserve_quality_images_total", tenant="default") == 0


def test_vocabulary_is_the_thresholds_tags() -> None:
    assert tag_vocabulary() == frozenset(default_thresholds().tags)
    assert {"blurry", "noisy", "low_light"} <= tag_vocabulary()
    glare = default_thresholds().tags["blurry"]  # any rule: the vocabulary reads names (and kinds)
    custom = default_thresholds().model_copy(update={"tags": {**default_thresholds().tags, "glare": glare}})
    assert "glare" in tag_vocabulary(custom) and tag_kinds(custom)["glare"] == "defect"


def test_tags_carry_their_kind_so_alerts_can_watch_defects_only(http: TestClient) -> None:
    """The drift alert watched every tag: a refocused camera (more `sharp`) fired it. `kind` tells them apart."""
    kinds = tag_kinds()
    assert kinds["blurry"] == "defect" and kinds["sharp"] == "positive" and "info" in kinds.values()
    http.post("/v1/analyze?fields=quality", files=[("image", ("a.jpg", data, "image/jpeg")) for data in photos()])
    seen = {dict(labels)["tag"]: dict(labels)["kind"] for name, labels in scrape(http) if name.endswith("tags_total")}
    assert seen and all(kind == kinds.get(tag, OTHER) for tag, kind in seen.items()), seen


def test_image_operations_and_failed_requests_count_nothing(http: TestClient) -> None:
    """/v1/enhance asked the quality stage 2-3 times per image (its input, its output, the revert candidate) and each
    verdict was counted as an analysed image; a multi-image request that failed on its last image had counted the
    others, which the client then sends again."""
    before = scrape(http)
    assert http.post("/v1/enhance?auto=true", content=photos()[2]).status_code == 200
    assert http.post("/v1/enhance?brightness=1.3", content=photos()[0]).status_code == 200
    assert http.post("/v1/convert?format=png", content=photos()[0]).status_code == 200
    files = [("image", (f"{i}.jpg", data, "image/jpeg")) for i, data in enumerate([*photos()[:3], b"\xff\xd8bad"])]
    failed = http.post("/v1/analyze?fields=quality", files=files)
    assert failed.status_code == 400 and failed.json()["error"].endswith("(image index 3)")
    assert scrape(http) == before


def test_a_batch_item_counts_its_verdict_once_and_only_when_it_is_done(
    http: TestClient, service: InferenceService, tmp_path: Path
) -> None:
    """An item analysed and then failed by its conversion (a 20000-px-wide strip: WebP holds 16383 at most) was
    counted, and counted again when resent fixed; a done item counts once."""
    from serving.jobs.database import create_store_engine, migrate
    from serving.jobs.objects import ObjectStore
    from serving.jobs.operations import operation_spec
    from serving.jobs.records import JobSpec, NewItem
    from serving.jobs.runner import JobRunner
    from serving.jobs.settings import JobSettings
    from serving.jobs.store import JobStore
    from serving.jobs.webhooks import WebhookSender
    from serving.jobs.work_queue import WorkQueue
    from serving.jobs.workers import WorkerIdentity, WorkerRegistry

    settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}", object_store=str(tmp_path / "o"))
    engine = create_store_engine(settings.database_url)
    migrate(engine)
    objects = ObjectStore(settings.object_store)

    def run(image: bytes) -> str:
        before = scrape(http)
        operations = operation_spec(["convert"], {"format": "webp"}, None, None)
        spec = JobSpec(service.default_model, 1, ("quality",), None, False, operations)
        job_id = JobStore(engine).create_job(spec, [NewItem("a.jpg", "object", objects.put(image), len(image))])
        queue = WorkQueue(engine, WorkerIdentity())
        runner = JobRunner(queue, WorkerRegistry(engine), objects, service, settings, WebhookSender(queue, settings))
        asyncio.run(runner.run_job(JobStore(engine).get_job(job_id)))
        (result,) = JobStore(engine).results_page(job_id)
        return f"{result.status} {delta(scrape(http), before, 'imgserve_quality_images_total', tenant='default'):g}"

    assert run(encode(Image.new("RGB", (20000, 8), (90, 120, 40)))) == "failed 0"  # "failed 1" before
    assert run(photos()[0]) == "done 1"
