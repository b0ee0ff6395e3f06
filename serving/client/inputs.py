"""What the SDK accepts: images as paths or bytes (one or a list), and `scheme://host:port` server URLs."""

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ImageInput = str | os.PathLike[str] | bytes | bytearray | memoryview
Images = ImageInput | Iterable[ImageInput]
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


def _is_single(images: object) -> bool:
    return isinstance(images, (str, os.PathLike, bytes, bytearray, memoryview))


def read_image(item: ImageInput, position: int) -> NamedImage:
    """One input as bytes; a path is read now (OSError if missing), bytes are taken as they are."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return NamedImage(str(position), bytes(item))
    if isinstance(item, (str, os.PathLike)):
        path = Path(item)
        return NamedImage(str(item), path.read_bytes())
    raise TypeError(f"an image must be a path (str, Path) or bytes, got {type(item).__name__}")


def iter_images(images: Images) -> Iterator[NamedImage]:
    """Inputs one by one, read lazily (so `stream` can take an endless generator)."""
    if not _is_single(images) and not isinstance(images, Iterable):
        raise TypeError(f"images must be a path, bytes or an iterable of them, got {type(images).__name__}")
    items = [images] if _is_single(images) else images
    for position, item in enumerate(items):  # type: ignore[arg-type]
        yield read_image(item, position)


def iter_stream_items(items: Iterable[ImageInput | tuple[str, ImageInput]]) -> Iterator[NamedImage]:
    """Stream inputs: an image, named as in `iter_images`, or a `(request_id, image)` pair named by the caller."""
    for position, item in enumerate(items):
        if isinstance(item, tuple):
            request_id, image = item
            yield NamedImage(str(request_id), read_image(image, position).data)
        else:
            yield read_image(item, position)


def load_images(images: Images) -> list[NamedImage]:
    """A path, bytes, or a list of them -> a list (of one for a single input)."""
    return list(iter_images(images))
