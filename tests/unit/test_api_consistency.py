"""The HTTP API answers alike whatever form a request takes (README walkthrough, items 6 and 8).

- An image operation's unknown or mistyped option is refused over HTTP with gRPC's kind and words: HTTP's
  `?fromat=webp` was a `bad_request` ("unknown query parameter") and `?quality=high` pydantic's text, where gRPC
  said `invalid_option` and `quality='high': expected an integer from 1 to 100`. A classify/analyze option of the
  wrong type in the query is refused in the words of the same option in a JSON body.
- A query option that takes one value, given twice (`?top_k=3&top_k=4`), is a 400 naming it (the last value won,
  silently); repeatable ones (`fields`, a batch's `stages`) still repeat.
- outputs.zip of a job without a convert/enhance stage is a 404 `no_outputs`, not an empty zip.
- A readiness "no" is `{error, kind}` as every error is (it had no `kind`).
- A model that was unloaded is a 404 `unknown_model`, as Triton answers it, whose message says how to load it again.
"""

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient

from serving.http.app import create_http_app
from serving.jobs.service import JobService
from serving.jobs.settings import JobSettings
from serving.requests import ImageOptions
from serving.service import InferenceService
from tests.unit.test_edges_in_process import jpeg
from tests.unit.test_operation_options import grpc_answers, photo
from tests.unit.tiny_models import tiny_local_service, versioned_copy

pytestmark = pytest.mark.unit

# (operation, options, the words both transports refuse them with)
REFUSED_ALIKE = [
    ("convert", {"fromat": "webp"}, "unknown conversion options ['fromat']"),
    ("convert", {"format": "webp", "quality": "high"}, "quality='high': expected an integer from 1 to 100"),
    ("convert", {"lossless": "maybe"}, "lossless='maybe': expected true or false"),
    ("convert", {"max_side": "wide"}, "max_side='wide': expected an integer"),
    ("enhance", {"brightness": "lots"}, "brightness='lots': expected a number"),
    (
        "enhance",
        {"ops": "clahe", "bright": "1.2"},
        "unknown enhancement options ['bright']; known: animated, anonymize, auto,",
    ),
]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> InferenceService:
    return tiny_local_service(Path(tmp_path_factory.mktemp("tiny")))[0]


@pytest.fixture(scope="module")
def http(service: InferenceService) -> Iterator[TestClient]:
    with TestClient(create_http_app(service)) as client:
        yield client


def test_an_unknown_or_mistyped_operation_option_is_refused_with_grpcs_kind_and_words(
    http: TestClient, service: InferenceService
) -> None:
    replies = grpc_answers(service, [(operation, options) for operation, options, _ in REFUSED_ALIKE])
    for (operation, options, words), reply in zip(REFUSED_ALIKE, replies, strict=True):
        assert isinstance(reply, grpc.aio.AioRpcError), (operation, options)
        kind = dict(reply.trailing_metadata() or ())["imgserve-error-kind"]
        assert kind == "invalid_option" and reply.details().startswith(words), reply.details()
        answer = http.post(f"/v1/{operation}", params=options, content=photo())
        assert answer.status_code == 400, (operation, options, answer.text)
        assert answer.json() == {"error": reply.details(), "kind": kind}, (operation, options)


def test_the_options_keep_their_types_in_the_openapi_document(http: TestClient) -> None:
    """They reach the server as text, for the shared parser to read; the description still says what they are."""
    paths = http.get("/openapi.json").json()["paths"]

    def schema(path: str, name: str) -> list[dict[str, str]]:
        return next(p["schema"]["anyOf"] for p in paths[path]["post"]["parameters"] if p["name"] == name)

    assert {"type": "integer"} in schema("/v1/convert", "quality") and {"type": "boolean"} in schema(
        "/v1/convert", "lossless"
    )
    assert {"type": "number"} in schema("/v1/enhance", "brightness") and {"type": "integer"} in schema(
        "/v1/classify", "top_k"
    )
    assert {"type": "boolean"} in schema("/v1/analyze", "anonymize")


def test_typed_values_and_empty_ones_still_read_as_before(http: TestClient) -> None:
    options = {"format": "webp", "quality": "80.0", "max_side": "", "report": "json"}
    accepted = http.post("/v1/convert", params=options, content=photo())
    assert accepted.status_code == 200 and accepted.json()["format"] == "webp", accepted.text
    refused = http.post("/v1/convert", params={"format": "webp", "quality": "80.5"}, content=photo())
    assert refused.status_code == 400 and refused.json()["kind"] == "invalid_option"
    kept = http.post("/v1/classify", params={"top_k": "2", "confidence_threshold": "0.0"}, content=jpeg())
    assert kept.status_code == 200 and len(kept.json()["results"][0]["predictions"]) == 2, kept.text
    anonymized = http.post("/v1/metadata", params={"anonymize": "yes"}, content=jpeg())
    assert anonymized.status_code == 200, anonymized.text


@pytest.mark.parametrize(
    ("path", "name", "value"),
    [
        ("/v1/classify", "top_k", "three"),
        ("/v1/analyze", "confidence_threshold", "high"),
        ("/v1/analyze", "anonymize", "maybe"),
    ],
)
def test_a_mistyped_classify_or_analyze_option_is_refused_as_its_json_body_form_is(
    http: TestClient, path: str, name: str, value: str
) -> None:
    in_query = http.post(path, params={name: value}, content=jpeg())
    in_body = http.post(path, json={"image": "", "options": {name: value}})
    assert in_query.status_code == in_body.status_code == 400
    assert in_query.json() == in_body.json(), (in_query.text, in_body.text)
    with pytest.raises(ValueError) as raised:  # the parser gRPC's Classify/Analyze options go through
        ImageOptions.parse(**{name: value})
    assert in_query.json() == {"error": str(raised.value), "kind": "bad_request"}


@pytest.mark.parametrize(
    ("path", "options", "kind"),
    [
        ("/v1/classify", {"top_k": True}, "bad_request"),  # answered one class
        ("/v1/classify", {"confidence_threshold": True}, "bad_request"),  # answered none
        ("/v1/enhance", {"brightness": True}, "invalid_option"),  # a factor of 1.0
        ("/v1/convert", {"quality": True}, "invalid_option"),  # refused already
    ],
)
def test_json_true_is_no_number_in_any_option(http: TestClient, path: str, options: dict, kind: str) -> None:
    import base64

    answer = http.post(path, json={"image": base64.b64encode(jpeg()).decode(), "options": options})
    assert answer.status_code == 400 and answer.json()["kind"] == kind, answer.text


@pytest.mark.parametrize(
    ("path", "params", "kind"),
    [
        ("/v1/classify", [("top_k", "3"), ("top_k", "4")], "bad_request"),
        ("/v1/analyze", [("model", "tiny"), ("fields", "quality"), ("model", "tiny")], "bad_request"),
        ("/v1/convert", [("format", "png"), ("quality", "80"), ("quality", "90")], "invalid_option"),
        ("/v1/enhance", [("ops", "clahe"), ("ops", "sharpen")], "invalid_option"),
    ],
)
def test_an_option_given_twice_is_refused_by_name(
    http: TestClient, path: str, params: list[tuple[str, str]], kind: str
) -> None:
    answer = http.post(path, params=params, content=jpeg())
    assert answer.status_code == 400 and answer.json()["kind"] == kind, answer.text
    (twice,) = {name for name, _ in params if sum(n == name for n, _ in params) > 1}
    assert f"'{twice}' is given 2 times" in answer.json()["error"]


def test_repeatable_options_still_repeat(http: TestClient) -> None:
    answer = http.post("/v1/analyze", params=[("fields", "quality"), ("fields", "classification")], content=jpeg())
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["results"][0]) == {"quality", "classification"}


@pytest.fixture
def jobs_http(tmp_path: Path) -> Iterator[TestClient]:
    service, settings = tiny_local_service(tmp_path)
    job_settings = JobSettings(database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}", object_store=str(tmp_path / "o"))
    with TestClient(create_http_app(service, JobService(service, job_settings), settings)) as client:
        yield client


def test_outputs_zip_of_a_job_without_image_operations_is_a_404(jobs_http: TestClient) -> None:
    image = [("image", ("a.jpg", jpeg(), "image/jpeg"))]
    classified = jobs_http.post("/v1/batch", files=image).json()["job_id"]
    answer = jobs_http.get(f"/v1/jobs/{classified}/outputs.zip")
    assert answer.status_code == 404 and answer.json()["kind"] == "no_outputs", answer.text
    assert "convert or enhance" in answer.json()["error"]
    converted = jobs_http.post("/v1/batch", params=[("stages", "convert"), ("stages", "quality")], files=image)
    assert converted.status_code == 202, converted.text
    zipped = jobs_http.get(f"/v1/jobs/{converted.json()['job_id']}/outputs.zip")
    assert zipped.status_code == 200 and zipfile.ZipFile(io.BytesIO(zipped.content)).namelist() == []  # none yet
    assert jobs_http.get("/v1/jobs/no-such-job/outputs.zip").json()["kind"] == "unknown_job"


def test_not_ready_answers_carry_a_kind(http: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    async def not_ready(self: InferenceService, name: str) -> bool:
        return False

    monkeypatch.setattr(InferenceService, "model_ready", not_ready)
    for path, message in (("/v2/models/tiny/ready", "model 'tiny' is not ready"), ("/v2/health/ready", "not every")):
        answer = http.get(path)
        assert answer.status_code == 503, answer.text
        assert answer.json()["kind"] == "model_unavailable" and answer.json()["error"].startswith(message)


def test_an_unloaded_model_is_an_unknown_model_whose_message_says_how_to_load_it(tmp_path: Path) -> None:
    service, settings = tiny_local_service(tmp_path)
    versioned_copy(settings.model_repository / "tiny", settings.trained_models / "parcels", "1")
    with TestClient(create_http_app(service, settings=settings)) as http:
        assert http.post("/v1/models/parcels/load").status_code == 200
        assert http.post("/v2/repository/models/parcels/unload").status_code == 200
        refused = http.post("/v1/classify", params={"model": "parcels"}, content=jpeg())
        assert refused.status_code == 404 and refused.json()["kind"] == "unknown_model", refused.text
        message = refused.json()["error"]
        assert "'parcels' is not loaded" in message and "`imgserve models load parcels`" in message
        assert "POST /v1/models/parcels/load" in message
        assert http.post("/v1/models/parcels/load").status_code == 200  # what the message says serves it again
        assert http.post("/v1/classify", params={"model": "parcels"}, content=jpeg()).status_code == 200
