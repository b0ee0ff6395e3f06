"""Result rows -> JSON lines or CSV, one line per item in index order."""

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from serving.jobs.records import ResultRecord
from serving.spreadsheet import safe_cell

# `model` only for a job that ran the classifier; the output columns only for a convert/enhance job's items (the
# stored output's name, its bytes and input bytes / output bytes).
CSV_COLUMNS = [
    "index",
    "name",
    "status",
    "model",
    "top1_label",
    "top1_score",
    "error_kind",
    "error",
    "output_name",
    "output_bytes",
    "compression_ratio",
]


def result_document(row: ResultRecord) -> dict[str, Any]:
    error = {"kind": row.error_kind, "message": row.error} if row.status == "failed" else None
    return {
        "index": row.idx,
        "name": row.name,
        "status": row.status,
        "model": row.model,
        "result": row.result,
        "error": error,
        "duration_ms": row.duration_ms,
        "attempts": row.attempts,
    }


def jsonl_lines(rows: Iterable[ResultRecord]) -> str:
    return "".join(json.dumps(result_document(r), separators=(",", ":")) + "\n" for r in rows)


def _top1(row: ResultRecord) -> tuple[str, str]:
    predictions = ((row.result or {}).get("classification") or {}).get("predictions") or []
    if not predictions:
        return "", ""
    return str(predictions[0].get("label", "")), f"{float(predictions[0].get('score', 0.0)):.6f}"


def csv_header() -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(CSV_COLUMNS)
    return buffer.getvalue()


def _output(row: ResultRecord) -> list[Any]:
    output = (row.result or {}).get("output") or {}
    return [output.get("name", ""), output.get("output_bytes", ""), output.get("compression_ratio", "")]


def csv_lines(rows: Iterable[ResultRecord], classified: bool = True) -> str:
    """`classified`: the job ran the classifier (else its model column is left empty: an operations-only or
    metadata-only job's rows named the default model, which never saw the images)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        label, score = _top1(row)
        model = row.model if classified else ""
        cells = [row.idx, row.name, row.status, model, label, score, row.error_kind, row.error, *_output(row)]
        writer.writerow([safe_cell(cell) for cell in cells])  # names, labels and errors are the uploader's
    return buffer.getvalue()
