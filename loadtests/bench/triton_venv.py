"""The pytriton venv (loadtests/.venv-triton): nvidia-pytriton pins numpy<2, so the Triton baseline runs apart."""

import shlex
import subprocess
import sys
from pathlib import Path

from loadtests.bench.console import log, oneline
from loadtests.bench.machine import package_version


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def triton_venv_ok(venv: Path) -> bool:
    python = venv_python(venv)
    if not python.exists():
        return False
    check = [str(python), "-c", "import pytriton.triton, onnxruntime, PIL, numpy"]
    return subprocess.run(check, capture_output=True, timeout=120).returncode == 0


def ensure_triton_venv(venv: Path, create: bool) -> tuple[Path | None, str | None]:
    """(python of a working pytriton venv, None) or (None, why not). Creates it when `create` is set: the same
    Python 3.11 as this venv (the bundled tritonserver's Python stub links libpython3.11), nvidia-pytriton 0.7.0,
    and this venv's onnxruntime and Pillow versions so both sides run the same model and decoder code."""
    if triton_venv_ok(venv):
        return venv_python(venv), None
    if not create:
        return None, f"{venv} is missing or broken and --quick does not create it (run once without --quick)"
    base = getattr(sys, "_base_executable", None) or sys.executable
    pins = ["nvidia-pytriton==0.7.0"]
    for package in ("onnxruntime", "pillow"):
        version = package_version(package)
        pins.append(f"{package}=={version}" if version else package)
    log(f"creating {venv} ({' '.join(pins)}); one-off, ~1 minute")
    steps = [
        [base, "-m", "venv", "--clear", str(venv)],
        [str(venv_python(venv)), "-m", "pip", "install", "-q", "--disable-pip-version-check", *pins],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True)
        if done.returncode != 0:
            return None, f"`{shlex.join(step)}` failed ({done.returncode}): {oneline(done.stderr[-1500:])}"
    if not triton_venv_ok(venv):
        return None, f"{venv} was created but `import pytriton.triton` fails in it"
    return venv_python(venv), None


def python_libdir(python: Path) -> str:
    """LIBDIR of `python` (tritonserver's Python stub needs its libpython on LD_LIBRARY_PATH)."""
    out = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR') or '')"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return out.stdout.strip()
