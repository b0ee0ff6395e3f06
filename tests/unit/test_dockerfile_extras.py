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


SWAP_SCRIPT = ROOT / "deploy" / "onnxruntime_build.sh"


def _pip_calls(tmp_path: Path, extras: str, version: str = "") -> list[str]:
    """Run the Dockerfile's ONNX Runtime step with `pip` replaced by a recorder of its arguments."""
    import os
    import subprocess

    log = tmp_path / "pip.log"
    log.unlink(missing_ok=True)
    (tmp_path / "pip").write_text(f'#!/bin/sh\necho "$*" >> {log}\n')
    (tmp_path / "pip").chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "ORT_GPU_VERSION": version}
    subprocess.run(["sh", str(SWAP_SCRIPT), extras], env=env, check=True, capture_output=True)
    return log.read_text().splitlines() if log.exists() else []


def test_the_gpu_image_swaps_in_onnxruntime_gpu(tmp_path: Path) -> None:
    """Before, the GPU image kept the CPU build, so the ONNX-Runtime-only models ran on the CPU of a GPU pod."""
    assert "onnxruntime_build.sh" in DOCKERFILE.read_text()
    assert "!deploy/onnxruntime_build.sh" in (ROOT / "deploy" / "Dockerfile.dockerignore").read_text()
    assert _pip_calls(tmp_path, "heif,s3,gcs") == []
    assert _pip_calls(tmp_path, "heif,s3,gcs,gpu") == [
        "uninstall -y onnxruntime",
        "install -c constraints.txt onnxruntime-gpu",
    ]
    pinned = _pip_calls(tmp_path, "gpu,heif", version="1.31.1")
    assert pinned[-1] == "install -c constraints.txt onnxruntime-gpu==1.31.1"
    assert _pip_calls(tmp_path, "gpus") == []  # an extra's name, not a substring of one
