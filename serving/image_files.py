"""Which files of a folder are images: the suffixes the server decodes, and the folder walk of the CLI commands and
the SDK. A leaf module (no HTTP client, no image library), so `imgserve convert` lists its inputs without loading the
SDK's HTTP stack (~15 MB of a bulk conversion process)."""

from pathlib import Path

from serving.hidden_names import is_hidden_path

# the file names taken as images in a folder (HEIF/AVIF: the server decodes them with its heif extra); the CLI, the
# SDK and the calibration tools list folders with it
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)


def folder_images(folder: Path) -> list[Path]:
    """The image files under `folder`, sorted; hidden and system ones (`._x.jpg`, `@eaDir/`) left out as the
    server's folder readers leave them out."""
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not is_hidden_path(p.relative_to(folder).as_posix())
    )


def expand_images(paths: list[str]) -> list[str]:
    """Files as given; folders walked (`folder_images`)."""
    images: list[str] = []
    for path in map(Path, paths):
        images += [str(p) for p in folder_images(path)] if path.is_dir() else [str(path)]
    return images
