"""`imgserve classify/analyze` over a folder when a later request fails for good (the server gone after the SDK's
retries): the answers already received are written, the images left are rows saying `not_answered`, and the
command fails. They used to be dropped with no output at all."""

import json
from pathlib import Path

import pytest

from serving.cli import IMAGES_PER_REQUEST, NOT_ANSWERED
from serving.cli import main as cli_main
from tests.unit.test_cli_sdk_errors import Canned, canned  # noqa: F401 - the fixture

pytestmark = pytest.mark.unit
IMAGES = 2 * IMAGES_PER_REQUEST + 6  # three requests; the third fails


def _answers(fail_from: int) -> tuple[object, list[int]]:
    """A /v1/classify answer: one result per image sent, until call number `fail_from`, then 503 for good."""
    calls: list[int] = []

    def answer(body: bytes) -> tuple[int, dict[str, str], bytes]:
        calls.append(len(calls) + 1)
        if len(calls) >= fail_from:
            document: object = {"error": "replica died", "kind": "replica_unavailable"}
            return 503, {"Content-Type": "application/json"}, json.dumps(document).encode()
        count = body.count(b'name="image"')
        result = {"model": "m", "predictions": [{"label": "cat", "index": 0, "score": 0.9}], "timing_ms": 1.0}
        return 200, {"Content-Type": "application/json"}, json.dumps({"results": [result] * count}).encode()

    return answer, calls


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    images.mkdir()
    for i in range(IMAGES):
        (images / f"{i:03}.jpg").write_bytes(b"\xff\xd8" + bytes([i]))
    return images


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_a_late_failure_keeps_the_answers_already_received(
    canned: Canned,  # noqa: F811 - the fixture
    folder: Path,
    tmp_path: Path,
    suffix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    answer, calls = _answers(fail_from=3)
    canned.routes[("POST", "/v1/classify")] = answer  # type: ignore[assignment]
    out = tmp_path / f"results{suffix}"
    assert cli_main(["classify", str(folder), "--url", canned.url, "--out", str(out)]) == 1
    assert len(calls) > 2  # the third request was sent (and retried) before the command gave up
    err = capsys.readouterr().err
    assert "replica died" in err and f"6 of {IMAGES} images were not answered" in err
    if suffix == ".jsonl":
        records = [json.loads(line) for line in out.read_text().splitlines()]
        answered = [r for r in records if "predictions" in r]
        assert len(records) == IMAGES and len(answered) == 2 * IMAGES_PER_REQUEST
        left = [r for r in records if "error" in r]
        assert [Path(r["image"]).name for r in left] == [f"{i:03}.jpg" for i in range(2 * IMAGES_PER_REQUEST, IMAGES)]
        assert {r["error"]["kind"] for r in left} == {NOT_ANSWERED}
        assert all("replica died" in r["error"]["message"] for r in left)
    else:
        rows = out.read_text().splitlines()[1:]
        assert len(rows) == IMAGES and sum(NOT_ANSWERED in row for row in rows) == 6


def test_printed_results_are_kept_too(
    canned: Canned,  # noqa: F811 - the fixture
    folder: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    answer, _ = _answers(fail_from=2)
    canned.routes[("POST", "/v1/classify")] = answer  # type: ignore[assignment]
    assert cli_main(["classify", str(folder), "--url", canned.url, "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert len(printed) == IMAGES
    assert sum("predictions" in r for r in printed) == IMAGES_PER_REQUEST


def test_a_failure_before_any_answer_writes_nothing(
    canned: Canned,  # noqa: F811 - the fixture
    folder: Path,
    tmp_path: Path,
) -> None:
    answer, _ = _answers(fail_from=1)
    canned.routes[("POST", "/v1/classify")] = answer  # type: ignore[assignment]
    out = tmp_path / "results.jsonl"
    assert cli_main(["classify", str(folder), "--url", canned.url, "--out", str(out)]) == 1
    assert not out.exists()
