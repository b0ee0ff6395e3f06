"""A labelled dataset: images in one folder per category, read where collections read (a folder or fsspec prefix),
and its fixed split into training and validation images."""

import hashlib
import lzma
import os
import tarfile
import unicodedata
import zipfile
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pipelines.convert.names import shared_folder_depth
from serving.collections.sources import (
    SourceError,
    SourceItem,
    UnreadableArchiveError,
    is_uri,
    list_sources,
    read_items,
)
from serving.collections.storable import local_path
from serving.collections.store import RecordedImage
from serving.errors import BadRequestError
from serving.jobs.errors import ItemInputError, UriNotAllowedError
from serving.jobs.remote_access import RemoteAccess
from serving.jobs.tables import located_job
from serving.jobs.uris import check_uri, file_uri_path, resolve_under

SPLIT_SALT = "imgserve-validation-v1"  # changing it changes every split: validation sets stay comparable across runs
MAX_CATEGORIES = 1000  # the head's fit holds images x categories arrays: far more categories would exhaust memory
# what listing a corrupt archive raises beside OSError (a truncated gzip stream, a zip without its directory)
UNREADABLE_ARCHIVE = (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)


@dataclass(frozen=True)
class LabelledImage:
    name: str  # unique in the dataset: its path under the source, e.g. "dogs/beagle.jpg"
    label: str  # the first folder of `name` (below any every image shares, in a collection), or the request's label
    location: str  # kind "file": a local path or an fsspec URI; "object": a job input's sha256; "uri": a job's URI
    member: str | None = None  # inside an archive at `location`
    kind: str = "file"  # file (read where collections read) | object (the job object store) | uri (a job's input)
    # what the split ranks it by when not `name`: its path inside a dataset that is one archive, whose own file name
    # is no part of the image (renamed `parcels-2024.zip`, the dataset keeps its validation images)
    split_key: str | None = None

    def to_row(self) -> dict[str, str]:
        return SourceItem(self.name, self.location, self.member).to_row()


def _name_parts(name: str) -> list[str]:
    """A name's folders and file; `.` is none (a tar made with `tar -C photos -cf p.tar .` names members `./...`)."""
    return [part for part in name.split("/") if part != "."]


def label_of(name: str, below: int = 0) -> str | None:
    """The category of an image named `<category>/.../<file>` (after its first `below` folders); None for a file at
    the top."""
    parts = _name_parts(name)[below:]
    return parts[0] if len(parts) >= 2 and parts[0] else None


def shared_folders(names: Iterable[str]) -> int:
    """How many leading folders all the names share: a collection saved from a job of one uploaded archive names
    every image `parcels.zip/...`, and that archive's name (or a parent every image is under) is no category."""
    return shared_folder_depth([_name_parts(name)[:-1] for name in names])


def source_location(source: str, allowed_root: Path | None, remote: RemoteAccess | None = None) -> str:
    """What `list_sources` reads for a dataset URI the server may read (the tenant's `remote` locations for s3:// and
    gs://, as batch inputs): a local path for file://, else the URI."""
    check_uri(source, allowed_root, remote)
    if source.lower().startswith("file:"):
        return str(file_uri_path(source, allowed_root))
    return source


def labelled_images(
    source: str, allowed_root: Path | None, remote: RemoteAccess | None = None
) -> tuple[list[LabelledImage], int]:
    """(images with a category, count of images without one), from `<source>/<category>/**/<image>`."""
    try:
        location = source_location(source, allowed_root, remote)
        _refuse_folder_links(location)
        items = list_sources([location])
    except UnreadableArchiveError as exc:  # a corrupt .zip / .tgz in it, named by its name, not its server path
        raise BadRequestError(f"dataset {source!r} holds an archive that cannot be read: {exc.problem}") from None
    except (SourceError, OSError) as exc:
        raise BadRequestError(f"dataset {source!r} cannot be listed: {exc}") from None
    except UNREADABLE_ARCHIVE as exc:  # a corrupt or truncated .zip / .tgz in it: the client's data, not a 500
        raise BadRequestError(f"dataset {source!r} holds an archive that cannot be read: {exc}") from None
    if not items:
        raise BadRequestError(f"dataset {source!r} holds no images")
    local_root = allowed_root.resolve() if allowed_root is not None and not is_uri(items[0].location) else None
    # every image in one archive (the dataset is a .zip): the folders inside it are the categories, not its name
    one_archive = all(item.member is not None and item.location == items[0].location for item in items)
    images, unlabelled = [], 0
    for item in items:
        if local_root is not None and not Path(item.location).resolve().is_relative_to(local_root):
            raise BadRequestError(f"{item.name!r} is a link to outside the allowed root; copy the file instead")
        inside = "/".join(_name_parts(item.member)) if one_archive and item.member is not None else None
        label = label_of(inside or item.name)
        if label is None:
            unlabelled += 1
        else:
            images.append(LabelledImage(item.name, label, item.location, item.member, split_key=inside))
    return images, unlabelled


def _refuse_folder_links(location: str) -> None:
    """A 400 for a link to a folder inside a local dataset: the listing does not follow them (a folder's images are
    the tenant's own files only), so a category folder that was a link vanished from the model without a word."""
    if is_uri(location) or not Path(location).is_dir():
        return
    for folder, names, _ in os.walk(location):
        for name in names:
            if os.path.islink(os.path.join(folder, name)):
                inside = os.path.relpath(os.path.join(folder, name), location)
                raise BadRequestError(f"{inside!r} is a link to a folder, which datasets do not follow; copy it in")


def check_label(label: str) -> None:
    """A category name is served as one line of labels.txt and answered as a label: it is refused blank, with
    leading or trailing spaces, or with a control character, a lone surrogate or a line/paragraph separator (U+2028
    split it into two labels, and the model could not load: every model was down at the next start). Format
    characters stay allowed: emoji sequences and Persian or Hindi words need U+200D / U+200C."""
    if not label.strip():
        raise BadRequestError(f"category {label!r} is blank")
    if label != label.strip():
        raise BadRequestError(f"category {label!r} starts or ends with spaces")
    odd = [c for c in label if unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp")]
    if odd:
        raise BadRequestError(f"category {label!r} holds a control or line-break character ({ascii(odd[0])})")


def check_classes(images: list[LabelledImage], min_per_class: int = 2) -> list[str]:
    """The categories, sorted; a dataset with fewer than two or more than `MAX_CATEGORIES`, a category name
    `check_label` refuses, two names that are the same text in another Unicode form (café composed and decomposed:
    two outputs a reader cannot tell apart), or a category too small to split, is refused. Names differing in case
    are distinct categories (A and a in handwriting data)."""
    counts = Counter(image.label for image in images)
    for label in counts:
        check_label(label)
    normal: dict[str, str] = {}
    for label in sorted(counts):
        key = unicodedata.normalize("NFC", label)
        if key in normal:
            raise BadRequestError(
                f"categories {normal[key]!r} and {label!r} are the same text in two Unicode forms: merge them"
            )
        normal[key] = label
    if len(counts) < 2:
        raise BadRequestError(f"a dataset needs at least two categories (folders), found {sorted(counts)}")
    if len(counts) > MAX_CATEGORIES:
        raise BadRequestError(f"a dataset has at most {MAX_CATEGORIES} categories, found {len(counts)}")
    small = sorted(label for label, n in counts.items() if n < min_per_class)
    if small:
        raise BadRequestError(f"categories {small} have fewer than {min_per_class} images: one is kept for validation")
    return sorted(counts)


def _rank(image: LabelledImage) -> str:
    return hashlib.sha256(f"{SPLIT_SALT}:{image.split_key or image.name}".encode()).hexdigest()


def split(
    images: list[LabelledImage], validation_fraction: float, max_train_per_class: int | None = None
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(training, validation): in each category, images ranked by a salted hash of their name (in a one-archive
    dataset, of their path inside the archive); the first
    `validation_fraction` (at least one) validate. The same dataset always splits the same way, whatever else the
    request changes (a training cap takes the first of the training part in the same ranking), so two versions
    trained on it are compared on the same validation images."""
    train: list[LabelledImage] = []
    validation: list[LabelledImage] = []
    for label in sorted({image.label for image in images}):
        ranked = sorted((image for image in images if image.label == label), key=_rank)
        held = min(len(ranked) - 1, max(1, round(len(ranked) * validation_fraction)))
        validation.extend(ranked[:held])
        train.extend(ranked[held:][:max_train_per_class] if max_train_per_class else ranked[held:])
    return train, validation


def usable_images(
    train: list[LabelledImage], validation: list[LabelledImage], labels: list[str], errors: dict[str, str]
) -> tuple[list[LabelledImage], list[LabelledImage]]:
    """(training, validation) without the images that could not be read or decoded (`errors`: name -> why). A
    category left with no training image, or a dataset left with no validation image, is refused with the categories
    and the first reasons, since a head cannot learn a category it has no example of."""
    usable_train = [image for image in train if image.name not in errors]
    usable_validation = [image for image in validation if image.name not in errors]
    untrained = sorted(set(labels) - {image.label for image in usable_train})
    if not untrained and usable_validation:
        return usable_train, usable_validation
    where = f"categories {untrained} have no usable training image" if untrained else "no validation image is usable"
    examples = "; ".join(f"{name}: {why}" for name, why in list(errors.items())[:3])
    total = len(train) + len(validation)
    raise BadRequestError(f"{where}: {len(errors)} of {total} images could not be used ({examples})")


def labelled_in_two_categories(images: Iterable[LabelledImage], digests: dict[str, str]) -> dict[str, str]:
    """Why each image whose bytes (`digests`: name -> sha256) are also in another category is left out (name ->
    reason): the fit would take both labels as the right answer for it. Every copy goes, since which category is
    right is the dataset owner's call; copies within one category are no contradiction and stay."""
    by_digest: dict[str, list[LabelledImage]] = {}
    for image in images:
        if image.name in digests:
            by_digest.setdefault(digests[image.name], []).append(image)
    reasons: dict[str, str] = {}
    for copies in by_digest.values():
        if len({image.label for image in copies}) < 2:
            continue
        for image in copies:
            others = [copy for copy in copies if copy.label != image.label]
            where = ", ".join(f"{copy.name!r} in {copy.label!r}" for copy in others[:3])
            more = f" and {len(others) - 3} more" if len(others) > 3 else ""
            reasons[image.name] = f"labelled in two categories: the same image is also {where}{more}"
    return reasons


def without_copies_of_training(
    train: list[LabelledImage], validation: list[LabelledImage], digests: dict[str, str]
) -> tuple[list[LabelledImage], int]:
    """The validation images whose bytes are not those of a training image, and how many were left out. The split
    goes by name, so a file stored twice (`IMG_7.jpg`, `IMG_7 (1).jpg`) could sit on both sides and the held-out
    accuracy (and `promote: if_better`) was partly measured on training images."""
    trained = {digests[image.name] for image in train if image.name in digests}
    kept = [image for image in validation if digests.get(image.name) not in trained]
    if not kept:
        raise BadRequestError("no validation image is left: every one is a copy of a training image")
    return kept, len(validation) - len(kept)


def collection_dataset(
    images: Sequence[RecordedImage],
    labels: dict[str, str] | None,
    job_inputs: dict[str, dict[str, tuple[str, str]]],
    first_job: str | None = None,
) -> tuple[list[LabelledImage], int]:
    """(labelled images, count left out) of an analysed collection: each image labelled by `labels` (name ->
    category; images it does not name are left out) or, without it, by the first folder of its name below the folders
    all its analysed images share (`shared_folders`: an uploaded archive's name is no category). Images are
    read where the collection read them, or, for images saved from a batch job (location `job:<id>`; without a
    location, saved before images named their job: `first_job`), from that job's inputs (`job_inputs`: job id ->
    name -> (source kind, source))."""
    out, left_out = [], 0
    seen: set[str] = set()
    below = shared_folders(image.record.name for image in images if image.record.ok) if labels is None else 0
    for image in images:
        name = image.record.name
        seen.add(name)
        if not image.record.ok:  # it failed analysis: nothing to learn from
            left_out += 1
            continue
        label = labels.get(name) if labels is not None else label_of(name, below)
        saved_from = located_job(image.location) if image.location else first_job
        job_source = job_inputs.get(saved_from or "", {}).get(name)
        if label is None:
            left_out += 1
        elif image.location and saved_from is None:
            out.append(LabelledImage(name, label, image.location, image.member or None))
        elif job_source is not None and job_source[0] in ("object", "uri"):
            kind, source = job_source
            out.append(LabelledImage(name, label, source, None, kind))
        else:
            left_out += 1  # nowhere to read it from (a purged job's inputs)
    unknown = sorted(set(labels or ()) - seen)
    if unknown:  # a mistyped name would silently drop its image, and a whole category could vanish
        raise BadRequestError(
            f"{len(unknown)} labelled name(s) are not in the collection, e.g. {unknown[:3]}: names are as the "
            "collection lists them (GET /v1/collections/{id}/images)"
        )
    return out, left_out


def read_dataset_files(
    images: Sequence[LabelledImage], allowed_root: Path | None, remote: RemoteAccess | None, max_bytes: int
) -> list[bytes | Exception]:
    """The bytes of dataset images of kind "file" (or each one's error), checked again as they are read, as a batch
    job's inputs are: a local file (or archive) under the tenant's root, resolved, its last part no link; an object
    store's within its allowed locations. The listing checked them, but a file swapped for a link to another tenant's
    folder after it was read where the link pointed."""
    rows: list[dict[str, str]] = []
    refused: dict[int, Exception] = {}
    for index, image in enumerate(images):
        row = image.to_row()
        try:
            row["location"] = _checked_location(row["location"], allowed_root, remote)
        except (UriNotAllowedError, BadRequestError) as exc:
            refused[index] = ItemInputError("forbidden_uri", str(exc))
        rows.append(row)
    readable = [index for index in range(len(rows)) if index not in refused]
    read = read_items([rows[index] for index in readable], max_bytes, follow_links=False)
    out: list[bytes | Exception] = [refused.get(index, b"") for index in range(len(rows))]
    for index, data in zip(readable, read, strict=True):
        out[index] = data
    return out


def _checked_location(location: str, allowed_root: Path | None, remote: RemoteAccess | None) -> str:
    if is_uri(location) and local_path(location) is None:  # s3:// gs://: the tenant's allowed locations
        if remote is not None:
            remote.check(location)
        return location
    if allowed_root is None:
        raise UriNotAllowedError("file datasets are disabled on this server (IMGSERVE_BATCH_ALLOWED_ROOT is not set)")
    return str(resolve_under(Path(local_path(location) or location), allowed_root))  # as a batch input's file URI
