"""The MODEL_CARD.md and report.json of a calibrated quality_mos version (`calibrate_mos`): what was fitted, on what,
how and what it is worth, in place of the copied card of the version it was calibrated from (whose text is kept
below, as the description of the backbone and tag heads it still uses)."""

import datetime
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tooling.quality_mos.calibrate_mos import Calibration

METHOD_TEXT = {
    "correction": "ridge towards the served head's weights (a correction of it; the bias free)",
    "scratch": "ridge from zero on the served standardisation (as training does on thousands of photos)",
}


def calibration_report(
    calibration: "Calibration", folder: Path, base_version: str, version: str, digest: str, forced: bool
) -> dict:
    def rounded(interval: tuple[float, float]) -> list[float]:
        return [round(float(v), 4) for v in interval]

    return {
        "calibrated_from": {"model": "quality_mos", "version": base_version},
        "version": str(version),
        "ratings": str(folder.resolve() / "mos.csv"),
        "photos": calibration.photos,
        "method": calibration.method,
        "ridge_alpha": calibration.head.alpha,
        "alpha_choice": "5-fold cross-validation (Spearman) on the rated photos",
        "refit_spearman": round(calibration.refit, 4),
        "refit_spearman_95": rounded(calibration.refit_95),
        "refit_figure": "nested 5-fold cross-validation: the strength chosen inside each outer fold",
        "refit_fold_alphas": list(calibration.fold_alphas),
        "current_spearman": round(calibration.current, 4),
        "current_spearman_95": rounded(calibration.current_95),
        "gain": round(calibration.gain, 4),
        "gain_95": rounded(calibration.gain_95),
        "written": "forced (--force): the gain's 95 % interval is not above zero"
        if forced
        else "the gain's 95 % interval is above zero",
        "head_sha256": digest,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def card_text(report: dict, base_card: str) -> str:
    base = f"quality_mos version {report['calibrated_from']['version']}"
    lines = [
        f"# quality_mos version {report['version']}: the score re-fitted on your rated photos",
        "",
        f"Calibrated from {base} by `imgserve quality calibrate` on {report['date']}. Only the score head changed; the"
        " backbone, features and tag heads are the base version's (its card is below).",
        "",
        f"- **Ratings**: `{report['ratings']}`, {report['photos']} photos.",
        f"- **Method**: {METHOD_TEXT[report['method']]}; ridge alpha {report['ridge_alpha']:g}, chosen by"
        " 5-fold cross-validation on those photos.",
        f"- **Re-fit, Spearman against your ratings**: {report['refit_spearman']:.3f} (95 %"
        f" {report['refit_spearman_95'][0]:.2f}-{report['refit_spearman_95'][1]:.2f}), by nested cross-validation"
        " (the strength chosen again inside each outer fold, never on the photos it was scored on).",
        f"- **{base} on the same photos**: {report['current_spearman']:.3f} (95 %"
        f" {report['current_spearman_95'][0]:.2f}-{report['current_spearman_95'][1]:.2f}); gain"
        f" {report['gain']:+.3f} (paired bootstrap 95 % {report['gain_95'][0]:+.3f} to {report['gain_95'][1]:+.3f}).",
        f"- **Written**: {report['written']}.",
        f"- **Head** sha256 `{report['head_sha256'][:12]}...`; every quality result names it as"
        f" `quality_mos:{report['version']}`.",
        "",
        f"The figures are measured on the rated photos only; the base card's held-out results describe {base}, not"
        " this version.",
        "",
        f"## Base model: {base}",
        "",
    ]
    demoted = re.sub(r"^(#+) ", lambda m: "##" + m.group(0), base_card.strip(), flags=re.M)
    return "\n".join(lines) + "\n" + demoted + "\n"


def write_card(
    out: Path, calibration: "Calibration", folder: Path, base_version: str, version: str, digest: str, forced: bool
) -> dict:
    """Rewrite `out`/report.json and `out`/MODEL_CARD.md for the calibrated version; returns the report."""
    report = calibration_report(calibration, folder, base_version, version, digest, forced)
    card = out / "MODEL_CARD.md"
    base_card = card.read_text(encoding="utf-8") if card.is_file() else ""
    base_report = out / "report.json"
    if base_report.is_file():
        report["base_report"] = json.loads(base_report.read_text(encoding="utf-8"))
    base_report.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    card.write_text(card_text(report, base_card), encoding="utf-8")
    return report
