"""How the bench talks: timestamped progress lines, one-line error texts, project-relative paths."""

import time
from pathlib import Path

from loadtests.server_process import PROJECT_ROOT


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def oneline(text: str, width: int = 400) -> str:
    """`text` on one line, safe inside a markdown table cell or code span, cut to `width` characters."""
    text = " ".join(str(text).split()).replace("|", "/").replace("`", "'")
    return text if len(text) <= width else text[: width - 1] + "…"


def shown(path: Path | None) -> str:
    """A path relative to the project when it is inside it (for logs and reports)."""
    if path is None:
        return ""
    try:
        return str(path.relative_to(PROJECT_ROOT))
    except ValueError:
        return str(path)
