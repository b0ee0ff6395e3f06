"""`imgserve batch DIR --out FILE`: an --out that cannot be written is refused before the upload and the wait (it was
found only once the job had finished, and the results were not saved); a failure after the job ended says where
its results are."""

from pathlib import Path

import pytest

from serving.cli import main as cli_main
from tests.unit.test_cli_sdk_errors import Canned, canned, json_answer  # noqa: F401 - the fixture

pytestmark = pytest.mark.unit
DONE = {"job_id": "j1", "status": "completed", "counts": {"total": 1, "done": 1, "failed": 0}, "progress": 1.0}


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "a.jpg"
    path.write_bytes(b"\xff\xd8x")
    return path


@pytest.mark.parametrize(
    "out", ["missing/results.jsonl", ".", "results.xlsx", "results"], ids=["folder-missing", "a-folder", "xlsx", "bare"]
)
def test_an_out_path_that_cannot_be_written_is_refused_before_any_upload(
    canned: Canned,  # noqa: F811 - the fixture
    image: Path,
    tmp_path: Path,
    out: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    canned.routes[("POST", "/v1/batch")] = json_answer(202, DONE)
    canned.routes[("GET", "/v1/jobs/j1")] = json_answer(200, DONE)
    code = cli_main(["batch", str(image), "--url", canned.url, "--out", str(tmp_path / out)])
    err = capsys.readouterr().err
    assert code == 2 and "--out" in err and err.count("\n") == 1, err
    assert canned.requests == []  # nothing uploaded, no job waited on


def test_results_that_cannot_be_fetched_after_the_job_ended_say_where_they_are(
    canned: Canned,  # noqa: F811 - the fixture
    image: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    canned.routes[("POST", "/v1/batch")] = json_answer(202, DONE)
    canned.routes[("GET", "/v1/jobs/j1")] = json_answer(200, DONE)
    canned.routes[("GET", "/v1/jobs/j1/results")] = json_answer(403, {"error": "no", "kind": "forbidden"})
    code = cli_main(["batch", str(image), "--url", canned.url, "--out", str(tmp_path / "r.jsonl"), "--poll", "0"])
    err = capsys.readouterr().err
    assert code == 1 and "GET /v1/jobs/j1/results" in err, err
