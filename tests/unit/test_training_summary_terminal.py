"""`imgserve train`'s summary prints the images a job left out (their names, and reasons quoting names and labels)
and the per-category rows: a dataset's file names and folders are anyone's text, so control characters in them are
escaped (serving.spreadsheet.terminal_text, as `imgserve collection ...` prints names), never sent to the terminal
(an ESC sequence in an archive member's name could clear the screen, retitle the window or forge lines)."""

import pytest

from serving.cli_training import training_summary

pytestmark = pytest.mark.unit

ESC = "\x1b"


def _result() -> dict:
    hostile = f"a/{ESC}]0;owned{chr(7)}{ESC}[2J.jpg"
    return {
        "model": "parcels",
        "version": "2",
        "promoted": False,
        "previous_version": "1",
        "previous_version_accuracy": 0.9,
        "accuracy_compared": 0.8,
        "validation": {
            "accuracy": 0.8,
            "images": 10,
            "per_class": [{"label": f"b{ESC}[31m", "precision": 1.0, "recall": 1.0}],
        },
        "images": {"skipped": {hostile: f"labelled in two categories: the same image is also {hostile!r} in 'b'"}},
        "seconds": {"features": 1.0, "fit": 1.0, "total": 2.0},
    }


def test_the_summary_sends_no_control_character_of_a_dataset_to_the_terminal() -> None:
    summary = training_summary(_result(), "if_better")
    assert "1 images left out" in summary
    assert ESC not in summary and "\x07" not in summary
    assert "\\x1b[2J" in summary  # shown, escaped: the operator still sees which file it is
