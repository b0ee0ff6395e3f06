"""Which files of a folder are images: the suffixes the server decodes, and the folder walk of the CLI commands and
the SDK. A leaf module (no HTTP client, no image library), so `imgserve convert` lists its inputs without loading the
SDK's HTTP stack (~15 MB of a bulk conversion process)."""

import os
from pathlib import Path

from serving.hidden_names import is_hidden_path

# the file names taken as images in a folder (HEIF/AVIF: the server decodes them with its heif extra); the CLI, the
# SDK and the calibration tools list folders with it
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)


def folder_images(folder: Path, unreadable: list[Path] | None = None) -> list[Path]:
    """The image files under `folder`, sorted; hidden and system ones (`._x.jpg`, `@eaDir/`) left out as the
    server's folder readers leave them out. Links to folders are not walked. A sub-folder that cannot be listed is
    added to `unreadable` when given (the walk goes on without it)."""

    def cannot_list(error: OSError) -> None:
        if unreadable is not None and error.filename is not None:
            unreadable.append(Path(error.filename))

    found = []
    for parent, _, names in os.walk(folder, onerror=cannot_list):
        for name in names:
            path = Path(parent, name)
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                if not is_hidden_path(path.relative_to(folder).as_posix()):
                    found.append(path)
    return sorted(found)


def expand_images(paths: list[str], unreadable: list[Path] | None = None) -> list[str]:
    """Files as given; folders walked (`folder_images`, sub-folders that cannot be listed added to `unreadable`)."""
    images: list[str] = []
    for path in map(Path, paths):
        images += [str(p) for p in folder_images(path, unreadable)] if path.is_dir() else [str(path)]
    return images
