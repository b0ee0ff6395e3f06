"""The metadata thumbnail of a damaged JPEG: no phash or colours computed from the grey libjpeg fills in, the reason
in the decoders' words, every header field still reported; intact JPEGs keep exactly the thumbnail they had."""

import io
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image, ImageFile

import pipelines.metadata.thumbnail as thumbnail_module
from pipelines.decode import decode_rgb
from pipelines.errors import InvalidImageError
from pipelines.limits import DecodeLimits
from pipelines.metadata import extract_metadata
from pipelines.metadata.extract import PIXEL_FIELDS_WITHHELD
from pipelines.metadata.thumbnail import THUMBNAIL_SIZE, upright_thumbnail
from pipelines.preprocess import PreprocessSpec
from tests.paths import DATA, EXIF_SAMPLES, require

pytestmark = pytest.mark.unit


def _photo(width: int = 640, height: int = 480, seed: int = 0) -> Image.Image:
    """Smooth colour gradients plus noise: every block has coded detail, as a photo's have."""
    x = np.linspace(0, 255, width)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height)[:, None].repeat(width, 1)
    noise = np.random.default_rng(seed).normal(0, 24, (height, width, 3))
    pixels = np.stack([x, y, 255 - (x + y) / 2], axis=2) + noise
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def _jpeg(image: Image.Image, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", **params)
    return buffer.getvalue()


def _camera_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS Test"
    exif[ExifTags.IFD.Exif] = {0x829D: 2.8}
    return _jpeg(_photo(), quality=90, exif=exif.tobytes())


def _scan_start(jpeg: bytes) -> int:
    sos = jpeg.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big")


def _cut_short(jpeg: bytes) -> bytes:
    """Entropy-coded data cut at a third, an end marker appended (a file whose transfer stopped, "repaired")."""
    start = _scan_start(jpeg)
    return jpeg[: start + (len(jpeg) - start) // 3] + b"\xff\xd9"


def _zeroed(jpeg: bytes) -> bytes:
    """4 KiB in the middle of the scan data overwritten with zeros (a storage block lost)."""
    middle = (_scan_start(jpeg) + len(jpeg)) // 2
    return jpeg[:middle] + bytes(4096) + jpeg[middle + 4096 :]


def _zeroed_tail(jpeg: bytes) -> bytes:
    """The second half of the scan data zeroed. With Pillow's standard Huffman tables zeros are valid codes: the
    decoder fills the remaining blocks from them and the rest reads as zero padding before the end marker, which the
    shared rule accepts (encoders pad so): no path refuses it."""
    start = _scan_start(jpeg)
    middle = start + (len(jpeg) - 2 - start) // 2
    return jpeg[:middle] + bytes(len(jpeg) - 2 - middle) + jpeg[-2:]


def _taller_frame(jpeg: bytes) -> bytes:
    """A frame header claiming twice the rows the scan data holds."""
    at = jpeg.index(b"\xff\xc0")
    height = int.from_bytes(jpeg[at + 5 : at + 7], "big")
    return jpeg[: at + 5] + (2 * height).to_bytes(2, "big") + jpeg[at + 7 :]


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "cut short": _cut_short,
    "zeroed": _zeroed,
    "taller frame": _taller_frame,
}
WITH_UNREFUSED = {**DAMAGE, "zeroed tail": _zeroed_tail}


def _refusal(data: bytes) -> str:
    """The decoders' 400 `invalid_image` message for `data` (the Pillow path of /v1/analyze and the models)."""
    with pytest.raises(InvalidImageError) as refused:
        decode_rgb(data, PreprocessSpec(resize_policy="none", crop_size=None), DecodeLimits())
    return str(refused.value)


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_jpeg_has_no_pixel_fields_and_says_why_in_the_decoders_words(damage: str) -> None:
    intact = _camera_jpeg()
    data = DAMAGE[damage](intact)
    meta = extract_metadata(data)
    assert meta.file.phash is None and meta.colors is None
    assert f"pixels: {_refusal(data)}; {PIXEL_FIELDS_WITHHELD}" in meta.errors
    # What the file says about itself is still reported.
    assert meta.exif is not None and (meta.exif.make, meta.exif.model, meta.exif.f_number) == ("Canon", "EOS Test", 2.8)
    assert meta.image is not None and meta.image.width == 640
    assert meta.file.format == "JPEG" and meta.file.sha256
    before = extract_metadata(intact)
    assert before.file.phash is not None and before.colors is not None and not before.errors


@pytest.mark.parametrize("damage", sorted(WITH_UNREFUSED))
def test_metadata_withholds_pixel_fields_exactly_where_the_decoders_refuse(damage: str) -> None:
    data = WITH_UNREFUSED[damage](_camera_jpeg())
    try:
        decode_rgb(data, PreprocessSpec(resize_policy="none", crop_size=None), DecodeLimits())
        refused = False
    except InvalidImageError:
        refused = True
    meta = extract_metadata(data)
    assert (meta.file.phash is None) == refused and (meta.colors is None) == refused
    assert refused == (damage != "zeroed tail")


def test_a_damaged_cmyk_jpeg_is_refused_too() -> None:
    data = _cut_short(_jpeg(_photo().convert("CMYK"), quality=90))
    meta = extract_metadata(data)
    assert meta.image is not None and meta.image.mode == "CMYK"
    assert meta.file.phash is None and meta.colors is None
    assert any(e.startswith("pixels: JPEG data ends early") for e in meta.errors), meta.errors


def _pillows_thumbnail(data: bytes) -> Image.Image:
    """What the thumbnail was before the check: Pillow's draft decode and `Image.thumbnail`."""
    image = Image.open(io.BytesIO(data))
    image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE), Image.Resampling.BICUBIC, reducing_gap=2.0)
    return image


def _forbid_pillow_decode(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self: ImageFile.ImageFile) -> None:
        raise AssertionError("Pillow decoded the JPEG a second time")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


INTACT: dict[str, Callable[[], bytes]] = {
    "1/8 scale": lambda: _jpeg(_photo(2800, 2100), quality=85),
    "odd size, 1/4 scale": lambda: _jpeg(_photo(1203, 901), quality=85),
    "1/2 scale, 4:4:4": lambda: _jpeg(_photo(700, 517), quality=95, subsampling=0),
    "no draft, resized": lambda: _jpeg(_photo(300, 211), quality=85),
    "fits already": lambda: _jpeg(_photo(100, 77), quality=85),
    "panorama": lambda: _jpeg(_photo(3001, 240), quality=85),
    "tall": lambda: _jpeg(_photo(257, 2049), quality=85),
    "progressive": lambda: _jpeg(_photo(1600, 1200), quality=85, progressive=True),
    "grey": lambda: _jpeg(_photo(1024, 768).convert("L"), quality=85),
}


@pytest.mark.parametrize("name", sorted(INTACT))
def test_an_intact_jpeg_keeps_pillows_thumbnail_from_one_checked_decode(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = INTACT[name]()
    expected = np.asarray(_pillows_thumbnail(data).convert("RGB"))
    header = Image.open(io.BytesIO(data))
    _forbid_pillow_decode(monkeypatch)
    got = upright_thumbnail(header, data, None, False, []).image
    assert got.mode == "RGB" and np.array_equal(np.asarray(got), expected)


def test_a_harmless_libjpeg_warning_still_gets_a_thumbnail() -> None:
    """Stray bytes between header segments lose nothing: strict libjpeg-turbo stops there, Pillow decodes it."""
    intact = _jpeg(_photo(), quality=90)
    quantisation = intact.index(b"\xff\xdb")
    data = intact[:quantisation] + b"\x00\x00" + intact[quantisation:]
    meta = extract_metadata(data)
    assert meta.file.phash is not None and meta.colors is not None
    assert meta.file.phash == extract_metadata(intact).file.phash


def test_the_metadata_stage_answers_a_damaged_jpeg_with_its_header() -> None:
    """/v1/metadata, /v1/analyze?fields=metadata and collections all go through `MetadataStage.extract`."""
    from serving.stages.metadata import MetadataStage

    result = MetadataStage(DecodeLimits()).extract(_cut_short(_camera_jpeg()))
    assert result["file"]["phash"] is None and result["colors"] is None
    assert result["exif"]["make"] == "Canon" and result["image"]["width"] == 640
    assert any(e.startswith("pixels: JPEG data ends early") for e in result["errors"])


def test_the_corrupted_sample_reports_its_camera_and_no_pixel_fields() -> None:
    data = require(EXIF_SAMPLES / "jpg" / "corrupted.jpg").read_bytes()
    meta = extract_metadata(data)
    assert meta.file.phash is None and meta.colors is None
    assert f"pixels: {_refusal(data)}; {PIXEL_FIELDS_WITHHELD}" in meta.errors
    assert meta.exif is not None and meta.exif.model and meta.image is not None and meta.image.width > 0


def _camera_jpegs() -> list[Path]:
    folders = [require(EXIF_SAMPLES), require(DATA / "blur-samples")]
    return sorted(
        p for folder in folders for p in folder.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg") and p.is_file()
    )


@pytest.mark.timeout(120)
def test_every_intact_sample_jpeg_keeps_its_thumbnail() -> None:
    """Every camera JPEG of exif-samples and blur-samples but the damaged one: the thumbnail phash and colours
    read is pixel for pixel the one Pillow made before (measured also on 200 ImageNet samples: identical)."""
    checked = 0
    for path in _camera_jpegs():
        data = path.read_bytes()
        header = Image.open(io.BytesIO(data))
        if path.name == "corrupted.jpg":
            with pytest.raises(InvalidImageError):
                upright_thumbnail(header, data, None, False, [])
            continue
        got = thumbnail_module._jpeg_thumbnail(header, data)  # before ICC profile and orientation, as Pillow's
        assert got is not None, path
        assert np.array_equal(np.asarray(got), np.asarray(_pillows_thumbnail(data))), path
        checked += 1
    assert checked >= 90


def test_jpeg_thumbnail_size_is_pillows() -> None:
    for width, height in [(4000, 3000), (3000, 4000), (129, 1), (1, 129), (1000, 999), (257, 2049), (5000, 7)]:
        image = Image.new("L", (width, height))
        image.thumbnail((THUMBNAIL_SIZE, THUMBNAIL_SIZE))
        assert thumbnail_module._thumbnail_size(width, height) == image.size, (width, height)
    assert thumbnail_module._thumbnail_size(128, 100) is None
