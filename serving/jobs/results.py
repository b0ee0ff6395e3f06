"""Result rows -> JSON lines or CSV, one line per item in index order."""

import csv
import io
import json
from collections.abc import Iterable
from typing import Any

from serving.jobs.records import ResultRecord
from serving.spreadsheet import safe_cell

CSV_COLUMNS = ["index", "name", "status", "model", "top1_label", "top1_score", "error_kind", "error"]


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


def csv_lines(rows: Iterable[ResultRecord]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        label, score = _top1(row)
        cells = [row.idx, row.name, row.status, row.model, label, score, row.error_kind, row.error]
        writer.writerow([safe_cell(cell) for cell in cells])  # names, labels and errors are the uploader's
    return buffer.getvalue()
