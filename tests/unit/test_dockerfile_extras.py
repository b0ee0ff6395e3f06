"""Operator walkthrough (walk4, finding 5): deploy/Dockerfile installed `.[heif]` (CPU) and `.[heif,gpu]` (GPU), so
neither image had s3fs or gcsfs, while deploy/README.md tells the cluster to keep its inputs in an `s3://` object
store. Both images (the default EXTRAS and the documented GPU build) take the `s3` and `gcs` extras, as `make` does."""

import re
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
STORE_EXTRAS = {"s3", "gcs"}


def _extras(text: str) -> set[str]:
    return {extra.strip() for extra in text.split(",")}


def test_the_default_image_has_the_object_store_extras() -> None:
    text = DOCKERFILE.read_text()
    (default,) = re.findall(r"^ARG EXTRAS=(\S+)$", text, re.MULTILINE)
    assert STORE_EXTRAS <= _extras(default), default
    assert '".[${EXTRAS}]"' in text
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert _extras(default) <= declared.keys()


@pytest.mark.parametrize("path", [DOCKERFILE, ROOT / "deploy" / "README.md"], ids=lambda p: p.name)
def test_the_documented_gpu_build_has_them_too(path: Path) -> None:
    builds = re.findall(r"--build-arg EXTRAS=(\S+)", path.read_text())
    assert builds, f"no GPU build command in {path}"
    for extras in builds:
        assert STORE_EXTRAS | {"gpu"} <= _extras(extras), extras
