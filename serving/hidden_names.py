"""Names that hold no photos of their folder's own: hidden files and folders, a NAS's thumbnails, a Mac's zip
metadata. Datasets, collections, batch uploads and archives, and the SDK's folder walk all leave them out by this rule.
"""

import re


def is_hidden_part(part: str) -> bool:
    """A file or folder name that holds no photos of the folder's own: hidden (`.thumbnails`, `.DS_Store`, macOS's
    AppleDouble `._photo.jpg`), Synology's `@eaDir` thumbnails, or the `__MACOSX` folder of a zip made on a Mac."""
    return part.startswith((".", "@")) or part == "__MACOSX"


def is_hidden_path(relative: str) -> bool:
    """Whether a path under a folder or inside an archive lies in or is a hidden part: datasets, collections and
    batch uploads leave it out, so it never becomes an image, nor a training category. `.` (a tar made with
    `tar -C photos -cf p.tar .` names every member `./...`) and empty parts are no folder of their own."""
    return any(is_hidden_part(part) for part in re.split(r"[\\/]", relative) if part not in ("", "."))
