"""Output names of converted and enhanced images: the input's relative name, a suffix, the output format's extension,
and names kept apart where two inputs would otherwise write the same output (batch jobs, collections, the CLI).

Names only, no I/O: the batch worker, collections and `imgserve convert` / `enhance` share them.
"""

from collections.abc import Sequence
from pathlib import PurePosixPath

from pipelines.convert import ConvertResult
from pipelines.convert.formats import FORMATS


def _relative(item_name: str) -> tuple[list[str], PurePosixPath]:
    """An input name's folders without absolute or parent parts, and its path."""
    path = PurePosixPath(item_name.replace("\\", "/"))
    return [p for p in path.parent.parts if p not in ("", ".", "..", "/")], path


def output_name(item_name: str, suffix: str, result: ConvertResult) -> str:
    """The input's relative name (no absolute or parent parts), the suffix and the output format's extension."""
    parts, path = _relative(item_name)
    stem = path.stem or "image"
    return "/".join([*parts, f"{stem}{suffix}{FORMATS[result.format].extension}"])


def names_kept_apart(names: Sequence[str]) -> dict[str, str]:
    """Input name -> the name its output is named after, for the inputs whose outputs would otherwise share a name.

    Outputs are named after the input without its extension, so `IMG_1.HEIC` and `IMG_1.JPG` (a phone's pair), or
    `a.jpg` and `a.png`, would both become `IMG_1<suffix>.webp` and the second would replace the first at a
    destination. Every input of such a group (chosen over all the names, so a resumed run names them alike) keeps its
    extension in the stem: `IMG_1_HEIC.HEIC`, `IMG_1_JPG.JPG` (-> `IMG_1_HEIC.webp`, `IMG_1_JPG.webp`)."""
    groups: dict[tuple[str, ...], list[tuple[str, PurePosixPath]]] = {}
    for name in names:
        parts, path = _relative(name)
        groups.setdefault((*parts, path.stem or "image"), []).append((name, path))
    return {
        name: str(path.with_name(f"{path.stem}_{path.suffix.lstrip('.') or 'noext'}{path.suffix}"))
        for members in groups.values()
        if len({name for name, _ in members}) > 1
        for name, path in members
    }


def output_bases(items: Sequence[tuple[int, str]]) -> dict[int, str]:
    """Item index -> the name its output is named after, for the items (a batch job's, a CLI run's files) whose outputs
    would share a name:
    `names_kept_apart`, and an input name given twice (two URIs ending alike, or an archive listing a name twice)
    gets its item index in front of the file name from the second time on (`3_IMG_1.jpg`). Chosen over all the items
    (a job's are fixed once it runs), so every worker and every resumed run names them alike."""
    renamed = names_kept_apart([name for _, name in items])
    seen: set[str] = set()
    bases: dict[int, str] = {}
    for index, name in sorted(items):
        base = renamed.get(name, name)
        if base in seen:
            parts, path = _relative(base)
            bases[index] = "/".join([*parts, f"{index}_{path.name}"])
        elif base != name:
            bases[index] = base
        seen.add(base)
    return bases
