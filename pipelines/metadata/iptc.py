"""IPTC-IIM basics via Pillow's `IptcImagePlugin.getiptcinfo` (JPEG APP13 / TIFF tag 33723)."""

from PIL import Image, IptcImagePlugin

from pipelines.metadata.result import IptcInfo

_UTF8_MARKERS = (b"\x1b%G", b"\x1b%/I")  # 1:90 CodedCharacterSet escape sequences for UTF-8


def _decode(raw: bytes, utf8: bool) -> str:
    raw = raw.split(b"\x00", 1)[0]
    if not utf8:
        try:  # many writers store UTF-8 without declaring it; IIM's own default is ISO 8859-1
            return raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            return raw.decode("latin-1").strip()
    return raw.decode("utf-8", errors="replace").strip()


def read_iptc(image: Image.Image) -> tuple[IptcInfo | None, list[str]]:
    """`IptcInfo` from the image's IPTC record; (None, []) when it has none."""
    if image.format not in ("JPEG", "MPO", "TIFF"):
        return None, []
    record = IptcImagePlugin.getiptcinfo(image)  # type: ignore[arg-type]
    if not record:
        return None, []
    charset = record.get((1, 90))
    utf8 = isinstance(charset, bytes) and charset in _UTF8_MARKERS

    def many(dataset: int) -> tuple[str, ...]:
        value = record.get((2, dataset))
        items = value if isinstance(value, list) else [value] if isinstance(value, bytes) else []
        return tuple(text for item in items if (text := _decode(item, utf8)))

    def one(dataset: int) -> str | None:
        values = many(dataset)
        return values[0] if values else None

    info = IptcInfo(
        object_name=one(5),
        headline=one(105),
        caption=one(120),
        keywords=many(25),
        by_line=many(80),
        credit=one(110),
        copyright_notice=one(116),
        city=one(90),
        country=one(101),
    )
    return (None if info == IptcInfo() else info), []
