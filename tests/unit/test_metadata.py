"""pipelines.metadata: typed results from tiny generated files, hostile input, and the shared exif-samples."""

import dataclasses
import io
import json
import os
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import ExifTags, Image, features
from PIL.TiffImagePlugin import IFDRational

from pipelines.decode import decode_rgb
from pipelines.errors import ImageTooLargeError
from pipelines.frames import MAX_COUNTED_PAGES, gif_frame_count
from pipelines.image_header import open_validated
from pipelines.limits import DecodeLimits
from pipelines.metadata import ImageMetadata, extract_metadata, hamming_distance
from pipelines.metadata.exif import exif_datetime
from pipelines.metadata.phash import _dct_matrix, phash
from pipelines.metadata.xmp import MAX_XMP_BYTES, parse_xmp
from pipelines.preprocess import PreprocessSpec
from serving.stages.metadata import MetadataStage

pytestmark = pytest.mark.unit

SAMPLES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "exif-samples"


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def _gradient(width: int = 64, height: int = 48) -> Image.Image:
    x = np.linspace(0, 255, width, dtype=np.float64)[None, :].repeat(height, 0)
    y = np.linspace(0, 255, height, dtype=np.float64)[:, None].repeat(width, 1)
    return Image.fromarray(np.stack([x, y, 255 - x], axis=2).astype(np.uint8), "RGB")


def _camera_exif(orientation: int = 1, altitude_ref: bytes = b"\x01") -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F] = "Canon"
    exif[0x0110] = "EOS Test\x00\x00"
    exif[0x0131] = "fw 1.0 "
    exif[0x0112] = orientation
    exif[ExifTags.IFD.Exif] = {
        0x829A: IFDRational(1, 250),
        0x829D: IFDRational(28, 10),
        0x8827: 400,
        0x9003: "2024:02:29 13:14:15",
        0x9291: "123",
        0x9011: "-03:30",
        0x9207: 5,
        0x9209: 25,
        0x920A: IFDRational(50, 1),
        0xA405: 75,
        0xA402: 2,
        0xA403: 1,
        0x8822: 3,
        0x9204: IFDRational(-2, 3),
        0xA433: "Canon",
        0xA434: "EF 50mm f/1.8",
    }
    exif[ExifTags.IFD.GPSInfo] = {
        1: "S",
        2: (IFDRational(33, 1), IFDRational(51, 1), IFDRational(3546, 100)),
        3: "W",
        4: (IFDRational(70, 1), IFDRational(30, 1), IFDRational(0, 1)),
        5: altitude_ref,
        6: IFDRational(12, 1),
        7: (IFDRational(1, 1), IFDRational(2, 1), IFDRational(35, 10)),
        29: "2024:02:29",
        16: "T",
        17: IFDRational(180, 1),
    }
    return exif


# --- typed fields and units on generated files ------------------------------------------------------------


def test_camera_jpeg_fields_units_and_enums() -> None:
    data = _encode(_gradient(), "JPEG", exif=_camera_exif().tobytes())
    meta = extract_metadata(data)
    assert meta.errors == ()
    assert meta.file.format == "JPEG" and meta.file.mime == "image/jpeg" and meta.file.size_bytes == len(data)
    assert len(meta.file.sha256) == 64 and len(meta.file.phash or "") == 16
    exif = meta.exif
    assert exif is not None
    assert (exif.make, exif.model, exif.software) == ("Canon", "EOS Test", "fw 1.0")  # NULs and spaces trimmed
    assert (exif.lens_make, exif.lens_model) == ("Canon", "EF 50mm f/1.8")
    assert exif.datetime_original == "2024-02-29T13:14:15.123-03:30"
    assert exif.exposure_time_s == pytest.approx(0.004)
    assert exif.f_number == pytest.approx(2.8)
    assert exif.iso == 400
    assert exif.focal_length_mm == pytest.approx(50.0) and exif.focal_length_35mm_equiv_mm == 75
    assert exif.flash == 25 and exif.flash_fired is True
    assert exif.white_balance == "manual"
    assert exif.metering_mode == "pattern"
    assert exif.exposure_program == "aperture_priority"
    assert exif.exposure_mode == "auto_bracket"
    assert exif.exposure_bias_ev == pytest.approx(-2 / 3)


def test_gps_is_signed_decimal_degrees_and_metres() -> None:
    meta = extract_metadata(_encode(_gradient(), "JPEG", exif=_camera_exif().tobytes()))
    gps = meta.gps
    assert gps is not None
    assert gps.latitude_deg == pytest.approx(-(33 + 51 / 60 + 35.46 / 3600), abs=1e-9)
    assert gps.longitude_deg == pytest.approx(-70.5, abs=1e-9)
    assert gps.altitude_m == pytest.approx(-12.0)  # GPSAltitudeRef 1: below sea level
    assert gps.timestamp_utc == "2024-02-29T01:02:03.500Z"
    assert (gps.img_direction_deg, gps.img_direction_ref) == (pytest.approx(180.0), "true")


@pytest.mark.parametrize(
    "time, date, expected",
    [
        ((IFDRational(23, 1), IFDRational(59, 1), IFDRational(599996, 10000)), "2024:02:29", "2024-03-01T00:00:00Z"),
        ((IFDRational(20, 1), IFDRational(47, 1), IFDRational(7999600, 1000000)), "2021:04:11", "2021-04-11T20:47:08Z"),
        ((IFDRational(20, 1), IFDRational(47, 1), IFDRational(7240, 1000)), "2021:04:11", "2021-04-11T20:47:07.240Z"),
    ],
)
def test_gps_seconds_round_on_the_whole_time(time: tuple, date: str, expected: str) -> None:
    """59.9996 s used to give ':591.000Z' (the rounded fraction written after the whole seconds)."""
    exif = _camera_exif()
    exif[ExifTags.IFD.GPSInfo] = {**exif[ExifTags.IFD.GPSInfo], 7: time, 29: date}
    gps = extract_metadata(_encode(_gradient(), "JPEG", exif=exif.tobytes())).gps
    assert gps is not None and gps.timestamp_utc == expected


def test_a_gps_time_out_of_range_keeps_the_coordinates() -> None:
    """An hour of 2**31 raised OverflowError, which dropped the whole GPS section, coordinates included."""
    exif = _camera_exif()
    exif[ExifTags.IFD.GPSInfo] = {**exif[ExifTags.IFD.GPSInfo], 7: (IFDRational(2**31, 1),) * 3}
    meta = extract_metadata(_encode(_gradient(), "JPEG", exif=exif.tobytes()))
    assert meta.gps is not None and meta.gps.latitude_deg == pytest.approx(-(33 + 51 / 60 + 35.46 / 3600), abs=1e-9)
    assert meta.gps.timestamp_utc is None and any(e.startswith("gps.timestamp_utc: invalid") for e in meta.errors)


def test_sub_seconds_that_are_not_ascii_digits_are_left_out() -> None:
    """A SubSecTime byte 0xB2 reads as '²', which str.isdigit accepts: the date-time was '...T10:00:00.²'."""
    assert exif_datetime("2020:01:01 10:00:00", "\u00b2") == ("2020-01-01T10:00:00", None)
    assert exif_datetime("2020:01:01 10:00:00", "25") == ("2020-01-01T10:00:00.25", None)


def test_gps_without_reference_is_not_guessed() -> None:
    exif = Image.Exif()
    exif[ExifTags.IFD.GPSInfo] = {2: (IFDRational(10, 1), IFDRational(0, 1), IFDRational(0, 1))}
    meta = extract_metadata(_encode(_gradient(), "JPEG", exif=exif.tobytes()))
    assert meta.gps is None or meta.gps.latitude_deg is None
    assert any(e.startswith("gps.latitude_deg:") for e in meta.errors)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_and_upright_size(orientation: int) -> None:
    meta = extract_metadata(_encode(_gradient(64, 48), "JPEG", exif=_camera_exif(orientation).tobytes()))
    assert meta.image is not None
    assert (meta.image.width, meta.image.height, meta.image.orientation) == (64, 48, orientation)
    swapped = orientation in (5, 6, 7, 8)
    assert (meta.image.upright_width, meta.image.upright_height) == ((48, 64) if swapped else (64, 48))
    assert meta.colors is not None and meta.colors.sample_size == (meta.image.upright_width, meta.image.upright_height)


def test_avif_orientation_follows_exif() -> None:
    if not features.check("avif"):
        pytest.skip("this Pillow build has no AVIF support")
    meta = extract_metadata(_encode(_gradient(64, 48), "AVIF", exif=_camera_exif(6).tobytes()))
    image = meta.image
    assert image is not None and image.orientation == 6
    assert (image.width, image.height, image.upright_width, image.upright_height) == (64, 48, 48, 64)
    assert meta.colors is not None and meta.colors.sample_size == (48, 64)


def test_plain_png_has_no_camera_sections_and_no_errors() -> None:
    meta = extract_metadata(_encode(_gradient(), "PNG"))
    assert meta.errors == ()
    assert (meta.exif, meta.gps, meta.xmp, meta.iptc) == (None, None, None, None)
    assert meta.image is not None and meta.image.orientation is None  # absent, not assumed 1
    assert (meta.image.mode, meta.image.bands, meta.image.bit_depth, meta.image.has_alpha) == ("RGB", 3, 8, False)


def test_sixteen_bit_png_and_alpha() -> None:
    grey16 = Image.fromarray(np.full((8, 8), 32768, dtype=np.uint16))
    meta = extract_metadata(_encode(grey16, "PNG"))
    assert meta.image is not None and meta.image.bit_depth == 16
    assert meta.colors is not None and meta.colors.mean_rgb == (128, 128, 128)  # scaled, not clipped to 255
    rgba = extract_metadata(_encode(Image.new("RGBA", (8, 8), (0, 0, 255, 0)), "PNG"))
    assert rgba.image is not None and rgba.image.has_alpha and rgba.image.mode == "RGBA"


def test_frames_and_animation() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "green", "blue")]
    gif = extract_metadata(_encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50))
    assert gif.image is not None and (gif.image.frames, gif.image.animated) == (3, True)
    pages = [_gradient(8, 8), _gradient(8, 8)]
    tiff = extract_metadata(_encode(pages[0], "TIFF", save_all=True, append_images=pages[1:]))
    assert tiff.image is not None and (tiff.image.frames, tiff.image.animated) == (2, False)


def test_icc_profile_description() -> None:
    from PIL import ImageCms

    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    meta = extract_metadata(_encode(_gradient(), "PNG", icc_profile=icc))
    assert meta.image is not None and meta.image.icc_profile is not None and "sRGB" in meta.image.icc_profile


def test_result_is_frozen_and_json_ready() -> None:
    meta = extract_metadata(_encode(_gradient(), "JPEG", exif=_camera_exif().tobytes()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.file.format = "PNG"  # type: ignore[misc]
    assert json.loads(json.dumps(meta.to_dict()))["exif"]["iso"] == 400


# --- XMP --------------------------------------------------------------------------------------------------

XMP_PACKET = b"""<?xpacket begin='' id='W5M0MpCehiHzreSzNTczkc9d'?>
<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">
 <rdf:Description xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4" xmp:Label="Red"
   xmp:CreatorTool="Tool 1.2"/>
 <rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/">
  <dc:subject><rdf:Bag><rdf:li>cat</rdf:li><rdf:li>sofa</rdf:li></rdf:Bag></dc:subject>
  <dc:creator><rdf:Seq><rdf:li>Ada</rdf:li></rdf:Seq></dc:creator>
  <dc:title><rdf:Alt><rdf:li xml:lang="de">Katze</rdf:li><rdf:li xml:lang="x-default">Cat</rdf:li></rdf:Alt></dc:title>
 </rdf:Description>
</rdf:RDF></x:xmpmeta><?xpacket end='w'?>"""


def test_xmp_attributes_and_elements() -> None:
    info, errors = parse_xmp(XMP_PACKET)
    assert errors == [] and info is not None
    assert (info.rating, info.label, info.creator_tool) == (4.0, "Red", "Tool 1.2")
    assert info.keywords == ("cat", "sofa") and info.creators == ("Ada",) and info.title == "Cat"


def test_xmp_in_a_jpeg() -> None:
    meta = extract_metadata(_encode(_gradient(), "JPEG", xmp=XMP_PACKET))
    assert meta.xmp is not None and meta.xmp.keywords == ("cat", "sofa")


@pytest.mark.timeout(10)
def test_xmp_refuses_entities_oversize_and_garbage() -> None:
    bomb = b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><x>&b;</x>'
    assert parse_xmp(bomb)[0] is None and "refused" in parse_xmp(bomb)[1][0]
    assert parse_xmp(b"<x>" + b" " * MAX_XMP_BYTES + b"</x>")[0] is None
    assert parse_xmp(b"<x><unclosed></x>")[1][0].startswith("xmp: not well-formed")
    assert parse_xmp(b"no xml here") == (None, ["xmp: packet has no XML"])


# --- hostile and broken input: never raises, says what went wrong ------------------------------------------


def _with_sof_size(jpeg: bytes, width: int, height: int) -> bytes:
    at = jpeg.index(b"\xff\xc0")
    return jpeg[: at + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + jpeg[at + 9 :]


def _with_app1(jpeg: bytes, payload: bytes) -> bytes:
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def _tiff_with_ifd_loop() -> bytes:
    """A little-endian TIFF whose IFD0 names itself as the next IFD (an endless page chain)."""
    data = bytearray(_encode(_gradient(8, 8), "TIFF"))
    ifd = int.from_bytes(data[4:8], "little")
    next_at = ifd + 2 + 12 * int.from_bytes(data[ifd : ifd + 2], "little")
    data[next_at : next_at + 4] = ifd.to_bytes(4, "little")
    return bytes(data)


def _tiff_pages(pages: int) -> bytes:
    """A TIFF of `pages` 1x1 pages sharing one strip: 78 bytes a page, so 32 MB could hold 400k of them."""
    entries = [(256, 3, 1), (257, 3, 1), (258, 3, 8), (262, 3, 1), (273, 4, 0), (279, 4, 1)]
    ifd_size = 2 + 12 * len(entries) + 4
    strip = 8 + pages * ifd_size
    out = bytearray(b"II*\x00" + (8).to_bytes(4, "little"))
    for page in range(pages):
        out += len(entries).to_bytes(2, "little")
        for tag, kind, value in entries:
            out += struct.pack("<HHII", tag, kind, 1, strip if tag == 273 else value)
        out += (8 + (page + 1) * ifd_size if page < pages - 1 else 0).to_bytes(4, "little")
    return bytes(out + b"\x80")


HOSTILE = {
    "empty": b"",
    "not an image": b"hello world, definitely not pixels" * 10,
    "jpeg magic then garbage": b"\xff\xd8\xff" + os.urandom(2000),
    "png magic then garbage": b"\x89PNG\r\n\x1a\n" + os.urandom(200),
    "tiff ifd chain loop": _tiff_with_ifd_loop(),
    "tiff with 50k pages": _tiff_pages(50_000),
    "truncated jpeg": _encode(_gradient(512, 512), "JPEG")[:3000],
    "exif with wild offsets": _with_app1(
        _encode(_gradient(), "JPEG"), b"Exif\x00\x00MM\x00*\xff\xff\xff\xf0" + b"\x00" * 40
    ),
    "exif ifd loop": _with_app1(
        _encode(_gradient(), "JPEG"),
        b"Exif\x00\x00II*\x00\x08\x00\x00\x00\x01\x00\x69\x87\x04\x00\x01\x00\x00\x00\x08\x00\x00\x00\x08\x00\x00\x00",
    ),
    "xmp bomb in jpeg": _with_app1(
        _encode(_gradient(), "JPEG"),
        b"http://ns.adobe.com/xap/1.0/\x00<!DOCTYPE x [<!ENTITY a 'aaaa'>]><x:xmpmeta>&a;</x:xmpmeta>",
    ),
}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_never_raises(name: str) -> None:
    meta = extract_metadata(HOSTILE[name])
    assert isinstance(meta, ImageMetadata)
    assert all(isinstance(e, str) and ":" in e for e in meta.errors)
    if name in ("empty", "not an image", "jpeg magic then garbage", "png magic then garbage"):
        assert meta.image is None and meta.errors and meta.errors[0].startswith("file:")
    if name == "truncated jpeg":
        assert meta.image is not None and meta.image.width == 512  # the header is fine, the pixels are not
        assert any(e.startswith("pixels:") for e in meta.errors) and meta.colors is None
    if name == "tiff with 50k pages":  # Pillow's own count is O(n^2): ~20 s here, hours at 32 MB
        assert meta.image is not None and meta.image.frames == 1000
        assert any(e.startswith("image.frames:") for e in meta.errors)
    if name == "tiff ifd chain loop":
        assert meta.image is not None and meta.image.frames == 1
    if name == "xmp bomb in jpeg":
        assert meta.xmp is None and any(e.startswith("xmp:") for e in meta.errors)


def test_byte_and_pixel_limits() -> None:
    data = _encode(_gradient(), "JPEG", exif=_camera_exif().tobytes())
    too_big = extract_metadata(data, DecodeLimits(max_bytes=100))
    assert too_big.image is None and too_big.errors[0].startswith("file:") and too_big.file.size_bytes == len(data)
    # Declared 11000 x 10000 px: the header and EXIF are read, no pixel is decoded.
    huge = extract_metadata(_with_sof_size(data, 11000, 10000))
    assert huge.image is not None and (huge.image.width, huge.image.height) == (11000, 10000)
    assert huge.exif is not None and huge.exif.make == "Canon"
    assert huge.colors is None and huge.file.phash is None
    assert any(e.startswith("pixels:") and "not decoded" in e for e in huge.errors)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "WEBP"])
def test_formats_decoded_at_full_size_beyond_their_limit_keep_their_metadata(fmt: str) -> None:
    """A PNG/TIFF/WebP over the full-decode pixel limit (40 MP by default) is refused by the decoders (413), but its
    header and EXIF are safe to read: metadata answers them and withholds only the pixel fields (it was a 413)."""
    data = _encode(_gradient(), fmt, exif=_camera_exif().tobytes())
    limits = DecodeLimits(max_full_decode_pixels=64 * 48 - 1)
    over = extract_metadata(data, limits)
    assert over.image is not None and (over.image.width, over.image.height) == (64, 48)
    assert over.exif is not None and over.exif.make == "Canon"
    assert over.colors is None and over.file.phash is None
    assert any(e.startswith(f"pixels: {fmt} image of 64x48 exceeds") for e in over.errors), over.errors
    stage = MetadataStage(limits).extract(data)
    assert stage["exif"]["make"] == "Canon" and stage["file"]["phash"] is None
    within = extract_metadata(data, dataclasses.replace(limits, max_full_decode_pixels=64 * 48))
    assert within.colors is not None and within.file.phash is not None
    assert not any(e.startswith("pixels:") for e in within.errors)
    with pytest.raises(ImageTooLargeError):  # the same limits still keep the pixels from the decoder
        open_validated(data, limits)


# --- perceptual hash --------------------------------------------------------------------------------------


def test_dct_matrix_is_dct_ii() -> None:
    pixels = np.random.default_rng(1).random((32, 32))
    n = np.arange(32)
    naive = np.array([[sum(pixels[x, y] * np.cos(np.pi * u * (2 * x + 1) / 64) * np.cos(np.pi * v * (2 * y + 1) / 64)
                        for x in n for y in n) for v in range(3)] for u in range(3)])  # fmt: skip
    fast = _dct_matrix() @ pixels @ _dct_matrix().T
    np.testing.assert_allclose(fast[:3, :3], naive, rtol=1e-9, atol=1e-9)


def test_phash_is_stable_under_resize_and_recompression_not_content() -> None:
    image = _gradient(256, 192)
    image.paste((255, 255, 255), (20, 20, 120, 90))
    small = Image.open(io.BytesIO(_encode(image.resize((128, 96)), "JPEG", quality=70)))
    assert hamming_distance(phash(image), phash(small)) <= 4
    assert hamming_distance(phash(image), phash(image.transpose(Image.Transpose.ROTATE_180))) > 16


# --- the shared exif-samples ------------------------------------------------------------------------------


def _sample(relative: str) -> bytes:
    if not SAMPLES.is_dir():
        pytest.skip(f"{SAMPLES} is absent: real photos are read from ../shared/data, not the repo")
    return (SAMPLES / relative).read_bytes()


@pytest.mark.timeout(120)
def test_every_sample_file_yields_metadata_or_messages() -> None:
    _sample("jpg/Canon_40D.jpg")
    files = sorted(p for p in SAMPLES.rglob("*") if p.is_file())
    for path in files:
        meta = extract_metadata(path.read_bytes())  # colours on: exercises the whole pixel path
        assert all(isinstance(e, str) for e in meta.errors), path
        if not path.name.startswith("README"):
            assert meta.image is not None, (path, meta.errors)
            assert meta.file.phash is not None or any(e.startswith("pixels:") for e in meta.errors), path


def test_known_sample_values() -> None:
    gps = extract_metadata(_sample("jpg/gps/DSCN0010.jpg")).gps
    assert gps is not None  # exiftool -n: 43.4674483333333, 11.8851266666639
    assert gps.latitude_deg == pytest.approx(43.4674483333333, abs=1e-9)
    assert gps.longitude_deg == pytest.approx(11.8851266666639, abs=1e-9)
    square = extract_metadata(_sample("jpg/xmp/BlueSquare.jpg"))
    assert square.xmp is not None and square.iptc is not None
    assert square.xmp.keywords == square.iptc.keywords == ("XMP", "Blue Square", "test file", "Photoshop", ".jpg")


def test_heic_orientation_and_size() -> None:
    pytest.importorskip("pillow_heif")
    meta = extract_metadata(_sample("heic/mobile/iphone_13_pro_max.HEIC"), colors=False)
    assert meta.file.format == "HEIF" and meta.file.mime == "image/heic"
    assert meta.image is not None and meta.image.orientation == 6
    assert (meta.image.width, meta.image.height) == (4032, 3024)  # coded, as exiftool reports
    assert (meta.image.upright_width, meta.image.upright_height) == (3024, 4032)
    assert meta.exif is not None and meta.exif.datetime_original == "2022-02-16T12:55:41.762+01:00"


_DIHEDRAL = [
    lambda a: a,
    np.fliplr,
    lambda a: np.rot90(a, 2),
    np.flipud,
    lambda a: np.transpose(a),
    lambda a: np.rot90(a, -1),
    lambda a: np.rot90(a, 2).T,
    lambda a: np.rot90(a, 1),
]


def _grey_small(image: Image.Image) -> np.ndarray:
    # Standardised (zero mean, unit spread): the _1 files are a little brighter than the other seven.
    grey = np.asarray(image.convert("L").resize((48, 48)), dtype=np.float64)
    return (grey - grey.mean()) / grey.std()


@pytest.mark.parametrize("decoder", ["pillow", "opencv"])
@pytest.mark.parametrize("kind", ["landscape", "portrait"])
def test_orientation_samples_decode_to_the_same_upright_image(kind: str, decoder: str) -> None:
    spec = PreprocessSpec(resize_policy="none", crop_size=None)
    reference = None
    for index in range(1, 9):
        data = _sample(f"jpg/orientation/{kind}_{index}.jpg")
        rgb = decode_rgb(data, spec, DecodeLimits(), decoder=decoder, reduced=False).rgb  # type: ignore[arg-type]
        expected_size = (600, 450) if kind == "landscape" else (450, 600)
        assert rgb.size == expected_size, (kind, index)
        meta = extract_metadata(data, colors=False)
        assert meta.image is not None and (meta.image.upright_width, meta.image.upright_height) == expected_size
        grey = _grey_small(rgb)
        if reference is None:
            reference, reference_hash = grey, meta.file.phash
            continue
        # Upright means: of the 8 ways to flip/rotate the reference, the identity matches best, by far.
        errors = [float(np.abs(transform(reference) - grey).mean()) for transform in _DIHEDRAL]
        assert int(np.argmin(errors)) == 0 and errors[0] * 4 < min(errors[1:]), (kind, index, errors)
        assert meta.file.phash is not None and hamming_distance(meta.file.phash, reference_hash) <= 6


def _gif_with_frames(count: int) -> bytes:
    """A 1x1 GIF of `count` frames, ~15 bytes each (issue #18's probe: 2 million frames in 30 MB)."""
    screen = b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + b"\x00\x00\x00\xff\xff\xff"
    frame = b"\x2c\x00\x00\x00\x00\x01\x00\x01\x00\x00" + b"\x02\x02\x4c\x01\x00"  # descriptor, LZW data
    return screen + frame * count + b"\x3b"


@pytest.mark.timeout(30)
def test_gif_with_two_million_frames_is_counted_only_to_the_cap() -> None:
    data = _gif_with_frames(2_000_000)
    start = time.perf_counter()
    meta = extract_metadata(data, colors=False)
    assert time.perf_counter() - start < 2.0
    assert meta.image is not None and meta.image.frames == 1000 and meta.image.animated
    assert any(e.startswith("image.frames:") and "counting stopped" in e for e in meta.errors)


def _gif(frames: list[Image.Image], **options: Any) -> bytes:
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], **options)
    return buffer.getvalue()


def test_gif_frames_are_counted_from_the_blocks_as_pillow_counts_them() -> None:
    rng = np.random.default_rng(3)
    frames = [Image.fromarray(rng.integers(0, 255, (20 + i, 30, 3), dtype=np.uint8)) for i in range(7)]
    cases = [
        _gif(frames, loop=0, duration=40, comment=b"made here"),
        _gif([f.convert("P", palette=Image.Palette.ADAPTIVE, colors=16) for f in frames], optimize=False),
        _gif(frames[:1]),
        _gif([f.convert("L") for f in frames], disposal=2, transparency=0),
    ]
    for data in cases:
        assert gif_frame_count(data) == Image.open(io.BytesIO(data)).n_frames


def test_many_tiny_frames_on_a_huge_gif_canvas_are_counted_without_decoding() -> None:
    """Pillow's seek() composites each frame onto the 6000x6000 canvas: 1,000 of them took minutes."""
    header = b"GIF89a" + struct.pack("<HHBBB", 6000, 6000, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<4HB", 0, 0, 1, 1, 0) + b"\x02\x02\x44\x01\x00"
    data = header + frame * 5000 + b"\x3b"
    start = time.perf_counter()
    metadata = extract_metadata(data)
    assert time.perf_counter() - start < 2.0
    assert metadata.image.frames == MAX_COUNTED_PAGES and any("counting stopped" in e for e in metadata.errors)
