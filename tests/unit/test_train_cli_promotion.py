"""`imgserve train` says which version it made and whether that version is now served, and why not: it printed the
accuracy only, so with `--promote if_better` and an accuracy equal to the served version's the user could not tell
that nothing changed."""

from typing import Any

import pytest

from serving.cli_training import training_summary

pytestmark = pytest.mark.unit


def result(**fields: Any) -> dict[str, Any]:
    base = {
        "model": "parcels",
        "version": "2",
        "promoted": False,
        "loaded": False,
        "load_error": None,
        "previous_version": "1",
        "previous_version_accuracy": 1.0,
        "validation": {"accuracy": 1.0, "images": 8, "per_class": []},
        "seconds": {"features": 1.0, "fit": 0.1, "total": 2.0},
    }
    return base | fields


def test_an_equal_accuracy_under_if_better_says_the_version_is_not_served_and_why() -> None:
    text = training_summary(result(), "if_better")
    assert "version 2 is registered but not served; version 1 still is" in text
    assert "accuracy 1.000 does not beat version 1's 1.000 (--promote if_better)" in text
    assert "imgserve models promote parcels 2" in text


def test_a_promoted_and_loaded_version_is_said_to_be_served() -> None:
    text = training_summary(result(promoted=True, loaded=True, previous_version_accuracy=0.5), "if_better")
    assert "version 2 is now served (promoted: accuracy 1.000 beats version 1's 0.500)" in text
    first = training_summary(result(promoted=True, loaded=True, previous_version=None), "if_better")
    assert "version 2 is now served (promoted: the model's first version)" in first


@pytest.mark.parametrize(
    ("fields", "rule", "why"),
    [
        ({}, "never", "--promote never"),
        ({"previous_version_accuracy": None}, "if_better", "cannot be compared with version 1's (other categories)"),
        ({"load_error": "failed to load 'parcels' version 2: corrupt"}, "always", "it did not load: failed to load"),
    ],
)
def test_each_reason_a_version_is_not_served(fields: dict[str, Any], rule: str, why: str) -> None:
    text = training_summary(result(**fields), rule)
    assert "version 2 is registered but not served; version 1 still is" in text and why in text


def test_a_promotion_the_placement_cannot_load_now_says_when_it_is_served() -> None:
    graph = "model control (load/unload) needs the local placement"
    text = training_summary(result(promoted=True, loaded=False, load_error=graph), "always")
    assert f"version 2 is promoted but not served yet: {graph}" in text


def test_the_cli_s_default_rule_is_the_server_s() -> None:
    from serving.cli_training import SERVER_DEFAULT_PROMOTE
    from serving.training.service import TrainingRequest

    assert TrainingRequest.model_fields["promote"].default == SERVER_DEFAULT_PROMOTE
