"""Output names of converted and enhanced images: the input's relative name, a suffix, the output format's extension,
and names kept apart where two inputs would otherwise write the same output (batch jobs, collections, the CLI).

Names only, no I/O: the batch worker, collections and `imgserve convert` / `enhance` share them.
"""

import re
from collections.abc import Sequence
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

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


def _output_key(name: str) -> tuple[str, ...]:
    """What an output's name is made of, up to the suffix and extension every output of a run shares."""
    parts, path = _relative(name)
    return (*parts, path.stem or "image")


def names_kept_apart(names: Sequence[str]) -> dict[str, str]:
    """Input name -> the name its output is named after, for the inputs whose outputs would otherwise share a name.

    Outputs are named after the input without its extension, so `IMG_1.HEIC` and `IMG_1.JPG` (a phone's pair), or
    `a.jpg` and `a.png`, would both become `IMG_1<suffix>.webp` and the second would replace the first at a
    destination. Every input of such a group (chosen over all the names, so a resumed run names them alike) keeps its
    extension in the stem: `IMG_1_HEIC.HEIC`, `IMG_1_JPG.JPG` (-> `IMG_1_HEIC.webp`, `IMG_1_JPG.webp`)."""
    groups: dict[tuple[str, ...], list[tuple[str, PurePosixPath]]] = {}
    for name in names:
        groups.setdefault(_output_key(name), []).append((name, _relative(name)[1]))
    return {
        name: str(path.with_name(f"{path.stem}_{path.suffix.lstrip('.') or 'noext'}{path.suffix}"))
        for members in groups.values()
        if len({name for name, _ in members}) > 1
        for name, path in members
    }


_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def _uri_names(names: Sequence[str]) -> dict[str, str]:
    """URI input name -> the name its output is named after: its path (the bucket too, for object stores) below the
    deepest folder all the URI inputs share, so `file:///data/trip/a.jpg` and `file:///data/trip/day2/b.jpg` write
    `a<suffix>.webp` and `day2/b<suffix>.webp` (they wrote `file:/data/trip/...`: a folder named `file:`)."""
    paths: dict[str, list[str]] = {}
    for name in names:
        if _URI.match(name) and name not in paths:
            parts = urlsplit(name)
            path = PurePosixPath(unquote(parts.path))
            paths[name] = [p for p in (parts.netloc, *path.parts) if p not in ("", ".", "..", "/")] or ["image"]
    return _below_shared_folder(paths)


def shared_folder_depth(folders: Sequence[Sequence[str]]) -> int:
    """How many leading folders all the given folder lists share (0 for none, or no lists). Output names (below) and
    training categories (`serving.training.dataset`) both start below them."""
    shared = 0
    while folders and all(len(f) > shared and f[shared] == folders[0][shared] for f in folders):
        shared += 1
    return shared


def _below_shared_folder(paths: dict[str, list[str]]) -> dict[str, str]:
    """Name -> its path (parts, the file's last) below the deepest folder all the paths share."""
    shared = shared_folder_depth([parts[:-1] for parts in paths.values()])
    return {name: "/".join(parts[shared:]) for name, parts in paths.items()}


def _job_names(names: Sequence[str]) -> dict[str, str]:
    """Name (a URI's already below the URIs' shared folder) -> its path below the deepest folder all a batch job's
    inputs share: one uploaded `photos.zip` writes `2024/IMG_1<suffix>.webp`, not `photos.zip/2024/...` (a folder
    that cannot be unzipped next to the upload itself); two archives keep their own names apart."""
    paths: dict[str, list[str]] = {}
    for name in names:
        parts, path = _relative(name)
        paths[name] = [*parts, path.name if path.name not in ("", ".", "..") else "image"]
    return _below_shared_folder(paths)


def output_bases(items: Sequence[tuple[int, str]], below_shared_folder: bool = False) -> dict[int, str]:
    """Item index -> the name its output is named after, for the items (a batch job's, a CLI run's files) whose outputs
    would otherwise share a name or be named after a URI (`_uri_names`): `names_kept_apart`, and where two names still
    meet (an input name given twice: two URIs ending alike, an archive listing a name twice) the later item's index
    goes in front of its file name (`3_IMG_1.jpg`), again if that name is taken too. Chosen over all the items in
    index order (a job's are fixed once it runs), so every worker and every resumed run names them alike.
    `below_shared_folder` (batch jobs): every name below the deepest folder all the items share (`_job_names`)."""
    from_uris = _uri_names([name for _, name in items])
    shown = [(index, from_uris.get(name, name)) for index, name in items]
    if below_shared_folder:
        below = _job_names([name for _, name in shown])
        shown = [(index, below[name]) for index, name in shown]
    renamed = names_kept_apart([name for _, name in shown])
    original = dict(items)
    taken: set[tuple[str, ...]] = set()
    bases: dict[int, str] = {}
    for index, name in sorted(shown):
        base = renamed.get(name, name)
        while _output_key(base) in taken:
            parts, path = _relative(base)
            base = "/".join([*parts, f"{index}_{path.name}"])
        taken.add(_output_key(base))
        if base != original[index]:
            bases[index] = base
    return bases
