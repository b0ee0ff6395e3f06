"""`collection analyze --refresh` and `--prune`: which recorded images changed since their analysis, and which are no
longer in the sources given.

--refresh compares what the listing says of each file (`sources.FileState`: size, change time) with what its row
says (`rows.RecordedFile`: size, sha256, and `read_since`, a time at or before the analysis read it). A file of
another size changed. A file that changed after `read_since` (ctime included, which `touch -d`, `cp -p` and
`rsync -a` cannot set back; an object's LastModified, set by every upload) is read again and its sha256 compared with
the recorded one, so a file only touched (chmod, copied back, uploaded again) is not analysed again; it is marked
checked (`CollectionStore.confirm`) and not read by the next refresh. Without a recorded sha256 (no metadata stage)
a touched file is taken as changed. Only the touched files are read; nothing is read for an untouched collection.

--prune removes the images whose recorded location is inside one of the sources given and that the listing no longer
has. Locations, not names, say which source an image came from: a name depends on the sources given together and
on --prefix (`photos/a.jpg` or `a.jpg`), a location is the file's absolute path or URI, so a collection made from
several sources loses nothing of the sources not given. It is refused when that cannot be told: rows recorded by a
relative path (before locations were absolute), and a source that lists no image at all while the collection has
images from it (an unmounted share or a mistyped prefix looks like a folder whose files were all deleted).
"""

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

from serving.collections.rows import RecordedFile
from serving.collections.sources import FileState, SourceError, SourceItem, current_digests, is_uri, place, source_root
from serving.collections.storable import local_path
from serving.collections.store import CollectionStore
from serving.jobs.tables import located_job

CHANGE_SLACK_S = 2.0  # FAT keeps mtime in 2 s steps; a file server's clock a little behind ours


@dataclass(frozen=True)
class RefreshPlan:
    changed: frozenset[str]  # to analyse again, each replacing its row
    unchanged: tuple[str, ...]  # touched since their analysis, read again: the same bytes
    read_since: float  # when they were read again


def refresh_plan(
    store: CollectionStore, collection_id: str, items: Sequence[SourceItem], max_bytes: int
) -> RefreshPlan:
    """The listed images the collection has analysed whose files changed since (failed ones are analysed again by
    any run, and images not listed are --prune's)."""
    listed = {item.name: item for item in items}
    changed: set[str] = set()
    touched: dict[str, str] = {}  # name -> recorded sha256
    for recorded in store.recorded_files(collection_id):
        item = listed.get(recorded.name)
        if item is None or not recorded.ok:
            continue
        verdict = _compared(recorded, item.state)
        if verdict == "changed" or (verdict == "touched" and not recorded.sha256):
            changed.add(recorded.name)
        elif verdict == "touched":
            touched[recorded.name] = recorded.sha256 or ""
    read_since = time.time()
    unchanged: list[str] = []
    for name, digest in current_digests([listed[name] for name in touched], max_bytes):
        if digest is not None and digest == touched[name]:
            unchanged.append(name)
        else:  # other bytes, or unreadable now: its analysis is made again (a failed record if it still cannot be read)
            changed.add(name)
    return RefreshPlan(frozenset(changed), tuple(unchanged), read_since)


def _compared(recorded: RecordedFile, state: FileState | None) -> str:
    """ "changed" (another size), "touched" (changed after it was read, or the listing does not say: read it again)
    or "same"."""
    if state is None:
        return "touched"
    if state.size is not None and recorded.size_bytes is not None and state.size != recorded.size_bytes:
        return "changed"
    if state.changed_at is None or state.changed_at > recorded.read_since - CHANGE_SLACK_S:
        return "touched"
    return "same"


def pruned_images(
    store: CollectionStore, collection: str, tenant: str, sources: Sequence[str], items: Sequence[SourceItem]
) -> list[str]:
    """The names of the tenant's collection `collection` whose files were inside `sources` and are not in their
    listing `items` now; SourceError when that cannot be told (see the module's docstring)."""
    info = store.find(collection, tenant)
    if info is None:
        return []
    roots = [source_root(source) for source in sources]
    listed = {item.place for item in items}
    roots_listed = {root for root in roots if any(_inside(item.stored_location, root) for item in items)}
    gone: dict[str, list[str]] = {root: [] for root in roots}
    relative: list[RecordedFile] = []
    for recorded in store.recorded_files(info.id):
        location = recorded.location
        if not location or located_job(location):  # saved from a batch job: in no source
            continue
        root = next((root for root in roots if _inside(location, root)), None)
        if root is None and _local_bytes(location) is None and not is_uri(location):
            relative.append(recorded)
        elif root is not None and place(location, recorded.member) not in listed:
            gone[root].append(recorded.name)
    if relative:
        first = relative[0]
        raise SourceError(
            f"--prune: collection {collection!r} has {len(relative)} image(s) recorded by a relative path (before "
            f"locations were absolute), e.g. {first.name!r} read from {place(first.location or '', first.member)}: "
            "whether they are inside the sources given cannot be told, so no image is removed. Run without --prune, "
            "or analyse into a new collection"
        )
    for root, names in gone.items():
        if names and root not in roots_listed:
            raise SourceError(
                f"--prune: {root} lists no image, and collection {collection!r} has {len(names)} from it: refusing "
                "to remove them all (a share that is not mounted, or a mistyped path or prefix, looks the same). "
                "Check the source; to drop them, analyse the other sources into a new collection"
            )
    return [name for names in gone.values() for name in names]


def _local_bytes(location: str) -> bytes | None:
    """An absolute local location as its path's bytes (a stored `fsbytes://` one too); None for a URI or a relative
    path."""
    raw = local_path(location)
    if raw is not None:
        return os.fsencode(raw)
    return None if is_uri(location) or not os.path.isabs(location) else os.fsencode(location)


def _inside(location: str, root: str) -> bool:
    """Whether `location` is `root` (a file or archive source) or inside it (a folder or prefix)."""
    local, local_root = _local_bytes(location), _local_bytes(root)
    if local is not None and local_root is not None:
        separator = os.fsencode(os.sep)
        return local == local_root or local.startswith(local_root.rstrip(separator) + separator)
    if local is None and local_root is None and is_uri(location) and is_uri(root):
        return location == root or location.startswith(root.rstrip("/") + "/")
    return False
