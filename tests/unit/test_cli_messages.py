"""Two messages from a docs walkthrough (item 10): `imgserve quality calibrate` on a folder that does not exist said
it "has no good/ folder", and a training job's skipped images read `UnsupportedFormatError: ...` (a Python class
name) where batch items and collections say the error kind (`unsupported_format: ...`)."""

import asyncio
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytestmark = pytest.mark.unit


def test_calibrate_names_a_missing_folder_as_missing(tmp_path: Path) -> None:
    from tooling.quality.calibrate import calibrate

    with pytest.raises(ValueError, match=r"nope does not exist$"):
        calibrate(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match=r"file\.txt is not a folder$"):
        calibrate(tmp_path / "file.txt")
    with pytest.raises(ValueError, match="has no good/ folder"):  # an existing folder without good/: as before
        calibrate(tmp_path)


def test_training_skip_reasons_carry_error_kinds_not_class_names(tmp_path: Path) -> None:
    from pipelines.errors import ImageTooLargeError, UnsupportedFormatError
    from serving.training.features import model_error

    assert model_error(UnsupportedFormatError("unrecognised image format")) == (
        "unsupported_format: unrecognised image format"
    )
    assert model_error(ImageTooLargeError("image is 20000x20000")).startswith("too_large: image is 20000x20000")
    internal = model_error(RuntimeError("session /opt/x.onnx on 10.0.0.7:6379 failed"))
    assert internal == "internal: internal error, see the server log"  # no path, no address, no class name


def test_embed_images_records_kinds(tmp_path: Path) -> None:
    """Through `embed_images`, as a job's `images.skipped` gets them."""
    from pipelines.errors import UnsupportedFormatError
    from serving.training.dataset import LabelledImage
    from serving.training.features import embed_images

    class Pipeline:
        async def run(self, data: bytes, plan: Any) -> Any:
            raise UnsupportedFormatError("unrecognised image format; supported: JPEG")

    backbone = SimpleNamespace(name="backbone")
    cache = SimpleNamespace(get=lambda digest: None)
    images = [LabelledImage("a/notes.jpg", "a", "/d/a/notes.jpg")]
    service = SimpleNamespace(pipeline=Pipeline())
    result = asyncio.run(embed_images(service, backbone, images, cache, lambda chunk: [b"text"]))  # type: ignore[arg-type]
    assert result.errors == {"a/notes.jpg": "unsupported_format: unrecognised image format; supported: JPEG"}
