"""What the SDK accepts: images as encoded image files (one or an iterable of them), and `scheme://host:port` server
URLs.

An image is a path (`str`, `pathlib.Path`), its bytes (`bytes`, `bytearray`, `memoryview`), or a binary file object
(`open(path, "rb")`, `io.BytesIO`: read to its end). Pixel arrays (numpy) and dicts are refused with a TypeError:
the server decodes the file itself (JPEG, PNG, ...); a file object or bytes are one image, never iterated."""

import io
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview | BinaryIO
Images = ImageInput | Iterable[ImageInput]
StreamItems = ImageInput | Iterable[ImageInput | tuple[str, ImageInput]]
ACCEPTED = (
    "an encoded image file (JPEG, PNG, ...) as a path (str, Path), bytes (bytearray, memoryview) or a binary file"
    " object (open(path, 'rb'), io.BytesIO), or a list or other iterable of them (not an array of pixels)"
)
SCHEMES = ("http", "https", "grpc", "grpcs")


@dataclass(frozen=True)
class NamedImage:
    """Encoded image bytes and a name for it: the path as given, or the position among the inputs."""

    name: str
    data: bytes


@dataclass(frozen=True)
class ServerAddress:
    scheme: str  # http, https, grpc, grpcs
    host: str
    port: int

    @property
    def is_grpc(self) -> bool:
        return self.scheme in ("grpc", "grpcs")

    @property
    def target(self) -> str:
        """host:port for a gRPC channel (IPv6 hosts bracketed)."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.target}"


def parse_url(url: str) -> ServerAddress:
    """`grpc://host:port`, `grpcs://...`, `http://host:port` or `https://...`; other schemes are a ValueError."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported server URL {url!r}: use one of {', '.join(s + '://host:port' for s in SCHEMES)}")
    if not parts.hostname:
        raise ValueError(f"server URL {url!r} has no host")
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"server URL {url!r} must be scheme://host:port, without a path or query")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"server URL {url!r} has a bad port") from exc
    if port is None:
        if scheme in ("grpc", "grpcs"):
            raise ValueError(f"gRPC URL {url!r} needs a port, e.g. grpc://127.0.0.1:9000")
        port = 443 if scheme == "https" else 80
    return ServerAddress(scheme, parts.hostname, port)


def _is_file(item: object) -> bool:
    return callable(getattr(item, "read", None))


def _is_single(images: object) -> bool:
    """One image, not a collection of them: a path, bytes, or a file object (iterable by lines, not images)."""
    return isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview)) or _is_file(images)


def _refusal(item: object, what: str = "an image") -> TypeError:
    """The TypeError for an input the SDK does not take, saying what it takes (and why not pixels or a dict)."""
    kind = type(item)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    why = ""
    if hasattr(item, "__array__"):
        why = " (an array of pixels or of bytes: the server decodes image files, so pass their bytes or paths)"
    elif isinstance(item, Mapping):
        why = " (a dict: pass its values, or (request_id, image) pairs to `stream`)"
    return TypeError(f"{what} must be {ACCEPTED}; got {name}{why}")


def _check_collection(images: object) -> None:
    """TypeError for what iterates but is no list of images: arrays (their rows), dicts (their keys)."""
    if hasattr(images, "__array__") or isinstance(images, Mapping) or not isinstance(images, Iterable):
        raise _refusal(images, "images")


def read_image(item: ImageInput, position: int) -> NamedImage:
    """One input as bytes. A path is read now (OSError if missing), bytes are taken as they are, a binary file object
    is read from where it stands to its end (not closed: it is the caller's) and named by its `name` when that is a
    path; a text-mode file is a TypeError, as is anything else (numpy arrays and dicts included)."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return NamedImage(str(position), bytes(item))
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        return NamedImage(str(item), path.read_bytes())
    if _is_file(item):
        if isinstance(item, io.TextIOBase):
            raise TypeError(
                f"an image file must be opened in binary mode (open(path, 'rb')), got {type(item).__name__}"
            )
        data = item.read()  # type: ignore[union-attr]
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"an image file object must read bytes (open it with 'rb'), got {type(data).__name__}")
        name = getattr(item, "name", None)
        return NamedImage(os.fsdecode(name) if isinstance(name, (str, bytes)) else str(position), bytes(data))
    raise _refusal(item)


def iter_images(images: Images) -> Iterator[NamedImage]:
    """Inputs one by one, read lazily (so `stream` can take an endless generator); TypeError at once for an input
    that is neither one image nor an iterable of them (see `ACCEPTED`)."""
    if _is_single(images):
        return _read_each([images])  # type: ignore[list-item]
    _check_collection(images)
    return _read_each(images)  # type: ignore[arg-type]


def _read_each(items: Iterable[ImageInput]) -> Iterator[NamedImage]:
    for position, item in enumerate(items):
        yield read_image(item, position)


def iter_stream_items(items: StreamItems) -> Iterator[NamedImage]:
    """Stream inputs: an image, named as in `iter_images`, or a `(request_id, image)` pair named by the caller. One
    image (a path, bytes, a binary file) is a stream of one; TypeError at once for what is no image nor an iterable
    of them."""
    if _is_single(items):  # read now: a text-mode file is refused at the call, as by `classify`
        return iter([read_image(items, 0)])  # type: ignore[arg-type]
    _check_collection(items)
    return _stream_each(items)  # type: ignore[arg-type]


def _stream_each(items: Iterable[ImageInput | tuple[str, ImageInput]]) -> Iterator[NamedImage]:
    for position, item in enumerate(items):
        if isinstance(item, tuple):
            request_id, image = item
            yield NamedImage(str(request_id), read_image(image, position).data)
        else:
            yield read_image(item, position)


def load_images(images: Images) -> list[NamedImage]:
    """One image (a path, bytes, a binary file object) or an iterable of them -> a list (of one for one image)."""
    return list(iter_images(images))
