"""A model or version name too long to be a folder is an unknown model (404), not a 500 (model review): Python 3.11's
`Path.is_dir()` raises ENAMETOOLONG for a name over 255 bytes instead of answering False, and the model-control
routes asked the disk about the client's name before anything else."""

from typing import Any

import pytest

from serving.repository import is_folder_name
from tests.unit.test_training_delete import _as, world  # noqa: F401 - the module's fixture

pytestmark = pytest.mark.unit
LONG = "a" * 300


def test_what_can_name_a_folder() -> None:
    assert is_folder_name("parcels") and is_folder_name("é" * 127)  # 254 bytes
    for name in ("", ".", "..", "a/b", "/abs", "a\x00b", LONG, "é" * 128):
        assert not is_folder_name(name), name


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", f"/v1/models/{LONG}/load"),
        ("POST", f"/v2/repository/models/{LONG}/unload"),
        ("POST", f"/v1/models/{LONG}/versions/1/promote"),
        ("DELETE", f"/v1/models/{LONG}/versions/1"),
        ("DELETE", f"/v1/models/{LONG}"),
        ("DELETE", f"/v1/models/parcels/versions/{'1' * 300}"),
    ],
)
def test_model_control_of_a_name_no_folder_can_have_is_not_found(
    world: dict[str, Any],  # noqa: F811
    method: str,
    path: str,
) -> None:
    answer = world["http"].request(method, path, headers=_as(world, "a_admin"))
    assert answer.status_code == 404, answer.text  # 500 before
