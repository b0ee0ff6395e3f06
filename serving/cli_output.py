"""How the CLI shows results: a table, JSON, or a CSV / JSON lines file for a folder of images."""

import csv
import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from serving.client import Analysis, Classification
from serving.spreadsheet import safe_cell, terminal_text

CSV_COLUMNS = (
    "image", "model", "top_label", "top_score", "quality_score", "quality_level", "quality_tags",
    "anomaly_score", "format", "width", "height", "camera", "error",
)  # fmt: skip
RESULT_SUFFIXES = (".csv", ".jsonl")  # what `write_results` writes: no spreadsheet library is installed for .xlsx


@dataclass(frozen=True)
class ImageFailure:
    """One image the server could not use (or a file that could not be read): its row says why."""

    kind: str
    message: str


def result_record(image: str, result: Classification | Analysis | ImageFailure) -> dict[str, Any]:
    """Everything the server said about one image, JSON-ready."""
    if isinstance(result, ImageFailure):
        return {"image": image, "error": asdict(result)}
    if isinstance(result, Classification):
        return {"image": image, **asdict(result)}
    record: dict[str, Any] = {"image": image}
    if result.classification is not None:
        record["classification"] = asdict(result.classification)
    for name in ("quality", "anomaly", "metadata"):
        if getattr(result, name) is not None:
            record[name] = getattr(result, name)
    return {**record, **result.extra}


def flat_row(record: dict[str, Any]) -> dict[str, Any]:
    """One CSV row: the headline numbers of each stage that ran."""
    classification = record.get("classification") or (record if "predictions" in record else {})
    quality = record.get("quality") or {}
    metadata = record.get("metadata") or {}
    top = (classification.get("predictions") or [{}])[0]
    exif, image = metadata.get("exif") or {}, metadata.get("image") or {}
    camera = " ".join(v for v in (exif.get("make"), exif.get("model")) if v)
    return {
        "image": record["image"],
        "model": classification.get("model"),
        "top_label": top.get("label"),
        "top_score": top.get("score"),
        "quality_score": quality.get("score"),
        "quality_level": quality.get("level"),
        "quality_tags": ";".join(tag["name"] for tag in quality.get("tags", [])),
        "anomaly_score": (record.get("anomaly") or {}).get("score"),
        "format": (metadata.get("file") or {}).get("format"),
        "width": image.get("width"),
        "height": image.get("height"),
        "camera": camera or None,
        "error": f"{record['error']['kind']}: {record['error']['message']}" if "error" in record else None,
    }


def out_problem(out: str, suffixes: Sequence[str]) -> str | None:
    """Why the file `out` cannot be written, told before the work: a file type not among `suffixes` (`q.xlsx` got
    JSON lines), or a folder that does not exist; None when it can be."""
    path = Path(out)
    if path.suffix.lower() not in suffixes:
        return f"--out {out}: not a {' or '.join(suffixes)} file (the file types this command writes)"
    if not path.resolve().parent.is_dir():
        return f"--out {out}: its folder does not exist"
    return None


def write_results(path: Path, records: list[dict[str, Any]]) -> None:
    """`.csv` (one flat row per image) or `.jsonl` (the full record per image); ValueError for another suffix."""
    if path.suffix.lower() not in RESULT_SUFFIXES:
        raise ValueError(f"{path}: not a {' or '.join(RESULT_SUFFIXES)} file")
    with path.open("w", newline="") as out:
        if path.suffix.lower() == ".csv":
            writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            writer.writerows({k: safe_cell(v) for k, v in flat_row(r).items()} for r in records)
        else:
            out.writelines(json.dumps(r) + "\n" for r in records)


def _short(text: str, width: int) -> str:
    """`text` for one table cell: control characters (a newline splitting the row, an escape sequence driving the
    terminal: file names and labels are anyone's) shown escaped, cut to `width`."""
    text = terminal_text(text)
    return text if len(text) <= width else text[: width - 1] + "…"


def table_row(record: dict[str, Any]) -> str:
    """IMAGE, TOP LABEL, SCORE, then quality and the top-k as `label (score)`, cut to the terminal width."""
    row = flat_row(record)
    name = _short(Path(record["image"]).name, 32)
    label = _short(row["top_label"] or "-", 28)
    score = f"{row['top_score']:6.3f}" if row["top_score"] is not None else f"{'-':>6}"
    extra = []
    if row["quality_score"] is not None:
        extra.append(f"quality {row['quality_score']:.0f} {row['quality_level']} [{row['quality_tags']}]")
    predictions = (record.get("classification") or record).get("predictions") or []
    if len(predictions) > 1:
        extra.append(", ".join(f"{p['label'].split(',')[0]} ({p['score']:.3f})" for p in predictions))
    if row["camera"]:
        extra.append(row["camera"])
    if row["error"]:
        extra.append(f"error {row['error']}")
    room = max(20, shutil.get_terminal_size((160, 24)).columns - 72)
    return f"{name:32}  {label:28}  {score}  {_short('  '.join(extra), room)}".rstrip()


def print_results(records: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(records, indent=2))
        return
    print(f"{'IMAGE':32}  {'TOP LABEL':28}  {'SCORE':>6}  DETAILS")
    for record in records:
        print(table_row(record))
