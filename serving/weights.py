"""Find and verify model weight files. Third-party weights live outside git, in a weights directory."""

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from serving.config.model_config import WeightsSpec

logger = logging.getLogger(__name__)
# Set within `weights_problems_kept`: the details of the weights problems met, by model name, instead of warnings.
_kept_details: ContextVar[dict[str, str] | None] = ContextVar("weights_problems_kept", default=None)


class WeightsError(RuntimeError):
    """A weights file is missing or is not the file the config names; the message says how to fix it.

    The message is what API answers carry (a model's unavailable reason: a 503, `/v2/repository/index`), so it
    names files by name only; `detail` is the operator's version with the server's paths, written to the server
    log when the error is raised (at start, or when a model is loaded), never sent to a client; a command that
    serves nothing keeps it instead (`weights_problems_kept`)."""

    def __init__(self, message: str, detail: str | None = None):
        super().__init__(message)
        self.detail = detail or message


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def weight_candidates(model_name: str, spec: WeightsSpec, model_dir: Path, weights_dir: Path) -> list[Path]:
    """Where a weights file may be, in lookup order."""
    if spec.committed:
        return [model_dir / spec.file]
    return [weights_dir / model_name / spec.file, weights_dir / spec.file]


def locate_weights(model_name: str, spec: WeightsSpec, model_dir: Path, weights_dir: Path) -> Path:
    """Path of the verified weights file, or `WeightsError` naming the file, where it was looked for and its source."""
    candidates = weight_candidates(model_name, spec, model_dir, weights_dir)
    found = next((path for path in candidates if path.is_file()), None)
    source = f"download it from {spec.source_url}" if spec.source_url else "obtain it from the model's publisher"
    if found is None:
        looked = ", ".join(str(p) for p in candidates)
        missing = f"model '{model_name}': weights file '{spec.file}' (sha256 {spec.sha256}) not found"
        folder = "the model's folder" if spec.committed else f"the weights directory's '{model_name}' folder"
        raise logged_weights_error(
            model_name,
            f"{missing} on the server. To fix: {source} and put it in {folder} (the server log names the paths "
            "looked in), or set IMGSERVE_WEIGHTS_DIR.",
            f"{missing}; looked in {looked}. To fix: {source} and put it in {weights_dir / model_name}/ or set "
            "IMGSERVE_WEIGHTS_DIR.",
        )
    actual = sha256_of(found)
    if not actual.startswith(spec.sha256):
        wrong = f"has sha256 {actual}, expected {spec.sha256}; it is corrupt or a different version. To fix: {source}"
        raise logged_weights_error(
            model_name,
            f"model '{model_name}': weights file '{found.name}' {wrong} again (the server log names its path).",
            f"model '{model_name}': weights file {found} {wrong} again.",
        )
    return found


@contextmanager
def weights_problems_kept() -> Iterator[dict[str, str]]:
    """Within it, a missing or wrong weights file is not a warning but a debug line, its `detail` (with the paths)
    kept in the dict yielded, by model name: for a command that scans the repository and serves nothing
    (`imgserve collection analyze`), where the models it does not use are none of its user's concern and the
    one it uses can be named with its paths in the command's own error."""
    details: dict[str, str] = {}
    token = _kept_details.set(details)
    try:
        yield details
    finally:
        _kept_details.reset(token)


def logged_weights_error(model_name: str, message: str, detail: str) -> WeightsError:
    """The error answering clients with `message`; `detail`, with the paths, goes to the server log now (or is kept:
    `weights_problems_kept`)."""
    kept = _kept_details.get()
    if kept is None:
        logger.warning("%s", detail)
    else:
        kept.setdefault(model_name, detail)
        logger.debug("%s", detail)
    return WeightsError(message, detail)
