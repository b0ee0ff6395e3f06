"""Format conversion (`pipelines.convert`): every output format round-trips, lossless is lossless, options are
checked, resize/orientation/colour/metadata/animation are handled."""

import io

import numpy as np
import pytest
import pyvips
from PIL import Image, ImageOps

from pipelines.convert import FORMATS, ConvertOptions, available_formats, convert_image
from pipelines.convert.formats import TIFF_COMPRESSION, tiff_compressions
from pipelines.errors import ImageTooLargeError, InvalidImageError, InvalidOptionError
from pipelines.limits import DecodeLimits
from pipelines.metadata import extract_metadata
from tests.paths import EXIF_SAMPLES, IMAGENET_SAMPLES, require

pytestmark = pytest.mark.unit
LIMITS = DecodeLimits()


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def textured(size: tuple[int, int] = (240, 160)) -> Image.Image:
    rng = np.random.default_rng(1)
    base = np.linspace(0, 255, size[0] * size[1] * 3).reshape(size[1], size[0], 3)
    return Image.fromarray(np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8))


@pytest.fixture(scope="module")
def photo() -> bytes:
    """A real camera-style JPEG (no embedded ICC profile, so sRGB conversion leaves its pixels alone)."""
    path = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[5]
    return path.read_bytes()


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_every_format_round_trips(photo: bytes, fmt: str) -> None:
    if fmt not in {f.name for f in available_formats()}:
        pytest.skip(f"no {fmt} encoder installed here")
    result = convert_image(photo, ConvertOptions.parse(format=fmt), LIMITS)
    source = ImageOps.exif_transpose(decoded(photo))
    out = decoded(result.data)
    assert out.size == source.size == (result.width, result.height)
    assert out.mode in ("RGB", "P"), out.mode  # GIF is palette
    assert result.content_type == FORMATS[fmt].content_type
    assert result.summary()["compression_ratio"] == pytest.approx(len(photo) / len(result.data), rel=1e-3)


@pytest.mark.parametrize(
    "fmt, options",
    [
        ("png", {}),
        ("webp", {"lossless": True}),
        ("tiff", {}),
        ("bmp", {}),
        ("avif", {"lossless": True}),
        ("heif", {"lossless": True}),  # was YUV 4:2:0 with quality=-1: errors of up to 240 levels
    ],
)
def test_lossless_outputs_are_pixel_identical(photo: bytes, fmt: str, options: dict) -> None:
    if fmt not in {f.name for f in available_formats()}:
        pytest.skip(f"no {fmt} encoder installed here")
    reference = np.asarray(ImageOps.exif_transpose(decoded(photo)).convert("RGB"))
    out = np.asarray(decoded(convert_image(photo, ConvertOptions.parse(format=fmt, **options), LIMITS).data))
    assert out.shape == reference.shape and np.array_equal(out, reference)


def test_jpeg_quality_orders_sizes(photo: bytes) -> None:
    high = convert_image(photo, ConvertOptions.parse(format="jpeg", quality=95), LIMITS).output_bytes
    low = convert_image(photo, ConvertOptions.parse(format="jpeg", quality=40), LIMITS).output_bytes
    assert high > 2 * low


def test_animated_gif_to_webp_keeps_every_frame() -> None:
    frames = [Image.new("RGB", (64, 48), (i * 40, 100, 200 - i * 40)) for i in range(5)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    result = convert_image(out.getvalue(), ConvertOptions.parse(format="webp", max_side=32), LIMITS)
    webp = decoded(result.data)
    assert webp.format == "WEBP" and webp.is_animated and webp.n_frames == 5 == result.frames
    assert webp.size == (32, 24)
    first = convert_image(out.getvalue(), ConvertOptions.parse(format="png"), LIMITS)  # PNG: first frame
    assert first.frames == 1 and np.asarray(decoded(first.data).convert("RGB"))[0, 0].tolist() == [0, 100, 200]
    still = convert_image(out.getvalue(), ConvertOptions.parse(format="webp", animated=False), LIMITS)
    assert not getattr(decoded(still.data), "is_animated", False)


def test_animation_pixel_budget_applies() -> None:
    frames = [Image.new("L", (400, 400), i) for i in range(0, 250, 10)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageTooLargeError, match="frames"):
        convert_image(out.getvalue(), ConvertOptions.parse(format="webp"), DecodeLimits(max_full_decode_pixels=10**6))


def test_cmyk_jpeg_becomes_rgb_with_the_right_colour() -> None:
    red = encode(Image.new("CMYK", (80, 60), (0, 255, 255, 0)), "JPEG", quality=95)
    out = decoded(convert_image(red, ConvertOptions.parse(format="png"), LIMITS).data)
    r, g, b = np.asarray(out.convert("RGB"))[30, 40].tolist()
    assert out.mode == "RGB" and r > 180 and g < 90 and b < 90  # red, not the inverted cyan of a raw CMYK read


def test_sixteen_bit_png_is_scaled_not_clipped() -> None:
    ramp = np.linspace(0, 65535, 100 * 80).reshape(80, 100).astype(np.uint16)
    data = encode(Image.fromarray(ramp), "PNG")
    for fmt in ("jpeg", "png", "webp"):
        out = np.asarray(decoded(convert_image(data, ConvertOptions.parse(format=fmt), LIMITS).data).convert("L"))
        expected = (ramp / 257.0).round()
        assert np.abs(out.astype(float) - expected).mean() < 2.0, fmt


def test_alpha_is_flattened_onto_the_background_for_jpeg() -> None:
    data = encode(Image.new("RGBA", (40, 40), (255, 0, 0, 0)), "PNG")
    black = decoded(convert_image(data, ConvertOptions.parse(format="jpeg", background="000"), LIMITS).data)
    white = decoded(convert_image(data, ConvertOptions.parse(format="jpeg"), LIMITS).data)
    assert np.asarray(black).max() < 10 and np.asarray(white).min() > 245
    # BMP too: its 32-bit form's fourth byte is ignored by readers (the transparent area showed as the hidden red)
    bmp = decoded(convert_image(data, ConvertOptions.parse(format="bmp", background="00ff00"), LIMITS).data)
    assert bmp.mode == "RGB" and np.asarray(bmp)[..., 1].min() > 245 and np.asarray(bmp)[..., 0].max() < 10
    kept = decoded(convert_image(data, ConvertOptions.parse(format="webp", lossless=True), LIMITS).data)
    assert kept.mode == "RGBA" and np.asarray(kept)[..., 3].max() == 0


def test_resize_fits_the_box_and_does_not_upscale(photo: bytes) -> None:
    width, height = decoded(photo).size
    # upscale without a size is no resize (it was fitted to the 10-million-pixel "unbounded" box: a 413)
    for source in (photo, encode(ImageOps.exif_transpose(decoded(photo)), "PNG")):  # JPEG and libvips paths
        same = convert_image(source, ConvertOptions.parse(format="jpeg", upscale=True), LIMITS)
        assert (same.width, same.height) == ImageOps.exif_transpose(decoded(photo)).size
    fit = convert_image(photo, ConvertOptions.parse(format="jpeg", max_side=128), LIMITS)
    assert max(fit.width, fit.height) == 128 and abs(fit.width / fit.height - width / height) < 0.02
    narrow = convert_image(photo, ConvertOptions.parse(format="jpeg", width=100), LIMITS)
    assert narrow.width == 100
    same = convert_image(photo, ConvertOptions.parse(format="jpeg", max_side=10_000), LIMITS)
    assert (same.width, same.height) == (width, height)
    larger = convert_image(photo, ConvertOptions.parse(format="jpeg", max_side=2 * width, upscale=True), LIMITS)
    assert max(larger.width, larger.height) == 2 * max(width, height)


def test_exif_orientation_is_applied() -> None:
    folder = require(EXIF_SAMPLES / "jpg" / "orientation")
    upright = np.asarray(decoded((folder / "landscape_1.jpg").read_bytes()).convert("RGB")).astype(int)
    for k in range(2, 9):
        out = decoded(
            convert_image((folder / f"landscape_{k}.jpg").read_bytes(), ConvertOptions(format="png"), LIMITS).data
        )
        pixels = np.asarray(out.convert("RGB")).astype(int)
        assert pixels.shape == upright.shape, k
        assert np.abs(pixels - upright).mean() < 8, k  # the same picture (re-encoded files differ a little)
        assert np.abs(np.flipud(pixels) - upright).mean() > 20, k  # and not a mirrored one
        assert out.getexif().get(0x0112, 1) == 1  # the tag is gone: no viewer turns it twice


def test_metadata_kept_stripped_and_anonymised() -> None:
    data = sorted(require(EXIF_SAMPLES / "jpg" / "gps").glob("*.jpg"))[0].read_bytes()
    kept = extract_metadata(convert_image(data, ConvertOptions(format="jpeg"), LIMITS).data, LIMITS).to_dict()
    assert kept["gps"] is not None and kept["exif"]["make"]
    anonymous = convert_image(data, ConvertOptions(format="jpeg", anonymize=True), LIMITS).data
    document = extract_metadata(anonymous, LIMITS).to_dict()
    assert document["gps"] is None and document["exif"]["make"] == kept["exif"]["make"]
    stripped = convert_image(data, ConvertOptions(format="jpeg", metadata="strip"), LIMITS).data
    assert "exif" not in decoded(stripped).info


@pytest.mark.parametrize(
    "options, message",
    [
        ({"format": "jpeg2000"}, "not supported"),
        ({"format": "jpeg", "quality": 0}, "out of range"),
        ({"format": "jpeg", "quality": 101}, "out of range"),
        ({"format": "png", "quality": 80}, "does not apply"),
        ({"format": "jpeg", "lossless": True}, "lossless"),
        ({"format": "tiff", "quality": 5}, "compression=jpeg or webp, not deflate"),  # was ignored
        ({"format": "tiff", "quality": 5, "compression": "lzw"}, "not lzw"),
        ({"format": "avif", "lossless": True, "subsampling": "on"}, "subsampling= does not apply"),  # was ignored
        ({"format": "webp", "effort": 9}, "out of range"),
        ({"format": "tiff", "compression": "rar"}, "choose one of"),
        ({"format": "jpeg", "compression": "lzw"}, "compression"),
        ({"format": "jpeg", "max_side": 0}, "out of range"),
        ({"format": "jpeg", "colour": "red"}, "unknown conversion options"),
        ({"format": "jpeg", "background": "zz0000"}, "hex colour"),
        ({"format": "jpeg", "upscale": "maybe"}, "true or false"),
    ],
)
def test_bad_options_are_400_with_a_clear_message(options: dict, message: str) -> None:
    with pytest.raises(InvalidOptionError, match=message) as error:
        ConvertOptions.parse(**options)
    assert error.value.http_status == 400


def test_corrupt_and_truncated_inputs_are_errors(photo: bytes) -> None:
    with pytest.raises(InvalidImageError):
        convert_image(photo[: len(photo) // 2], ConvertOptions(format="png"), LIMITS)
    for options in (ConvertOptions(format="png"), ConvertOptions(format="png", max_side=64)):
        with pytest.raises(InvalidImageError):  # the fast JPEG path's fallback still refuses truncation
            convert_image(photo[: len(photo) // 2], options, LIMITS)
    with pytest.raises(ImageTooLargeError):
        convert_image(photo, ConvertOptions(format="png"), DecodeLimits(max_pixels=1000))


def test_a_jpeg_with_stray_bytes_before_its_end_marker_converts(photo: bytes) -> None:
    """A common, harmless defect (libjpeg: "extraneous bytes before marker 0xd9") that Pillow, libvips and the
    classify path read: /v1/convert refused it with a 400, the fast JPEG decoder being strict about warnings."""
    assert photo.endswith(b"\xff\xd9")
    stray = photo[:-2] + b"\x00\x00\x00\x00\xff\xd9"
    size = ImageOps.exif_transpose(decoded(photo)).size
    for options in (ConvertOptions(format="png"), ConvertOptions(format="webp", max_side=64)):
        result = convert_image(stray, options, LIMITS)
        assert max(result.width, result.height) == (64 if options.max_side else max(size))
        assert decoded(result.data).size == (result.width, result.height)


def test_wide_gamut_profiles_are_converted_to_srgb_or_kept() -> None:
    data = require(IMAGENET_SAMPLES / "n01532829_house_finch.JPEG").read_bytes()  # Adobe RGB (1998)
    raw = np.asarray(decoded(data).convert("RGB")).astype(int)
    kept = decoded(convert_image(data, ConvertOptions(format="png", icc="keep"), LIMITS).data)
    assert np.array_equal(np.asarray(kept.convert("RGB")), raw) and kept.info.get("icc_profile")
    converted = decoded(convert_image(data, ConvertOptions(format="png"), LIMITS).data)
    pixels = np.asarray(converted.convert("RGB")).astype(int)
    assert not converted.info.get("icc_profile")  # sRGB is what a viewer assumes without one
    assert np.abs(pixels - raw).mean() > 2  # Adobe RGB values mean more saturated colours in sRGB
    plain = sorted(require(IMAGENET_SAMPLES).glob("*.JPEG"))[5].read_bytes()  # no profile: no transform at all
    assert np.array_equal(
        np.asarray(decoded(convert_image(plain, ConvertOptions(format="png"), LIMITS).data)),
        np.asarray(decoded(plain).convert("RGB")),
    )


def test_outputs_are_bounded_like_full_size_decodes(photo: bytes) -> None:
    small = DecodeLimits(max_full_decode_pixels=100_000)
    with pytest.raises(ImageTooLargeError, match="max_side"):
        convert_image(photo, ConvertOptions(format="png"), small)  # 600x399 = 239,400 pixels out
    assert convert_image(photo, ConvertOptions(format="png", max_side=300), small).width == 300
    with pytest.raises(ImageTooLargeError):
        convert_image(photo, ConvertOptions(format="jpeg", max_side=16384, upscale=True), LIMITS)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_jpeg_fast_path_matches_pillow_and_keeps_exif(orientation: int) -> None:
    """Plain JPEGs take the simplejpeg path: upright pixels exactly Pillow's, EXIF kept with orientation 1."""
    exif = Image.Exif()
    exif[0x0112], exif[0x010F] = orientation, "TestMake"
    data = encode(textured((64, 48)), "JPEG", quality=90, exif=exif.tobytes())
    header = Image.open(io.BytesIO(data))
    from pipelines.convert import jpeg_fast

    assert jpeg_fast.applies(header, needs_transform=False)
    out = decoded(convert_image(data, ConvertOptions(format="png"), LIMITS).data)
    reference = np.asarray(ImageOps.exif_transpose(decoded(data)).convert("RGB"))
    assert np.array_equal(np.asarray(out.convert("RGB")), reference)
    kept = decoded(convert_image(data, ConvertOptions(format="jpeg", max_side=32), LIMITS).data)
    assert kept.getexif().get(0x0112) in (None, 1) and kept.getexif().get(0x010F) == "TestMake"
    assert max(kept.size) == 32


@pytest.mark.parametrize("max_side", [500, 160, 80])  # shrink left after the scaled decode: 1.05, 1.41, 1.88
def test_jpeg_fast_path_resizes_as_close_to_lanczos_as_area_averaging(photo: bytes, max_side: int) -> None:
    """The fast path's resize after the scaled decode (libvips' cubic) costs nothing in accuracy: against a Lanczos
    resize of the full decode, it is within 0.5 dB of area averaging the same scaled decode (OpenCV's INTER_AREA;
    nearest neighbour is 2-12 dB worse)."""
    import cv2

    from pipelines.jpeg_markers import decode_jpeg_checked

    full = decoded(photo).convert("RGB")
    out = decoded(convert_image(photo, ConvertOptions(format="png", max_side=max_side), LIMITS).data).convert("RGB")
    reference = np.asarray(full.resize(out.size, Image.Resampling.LANCZOS), float)
    scaled = decode_jpeg_checked(photo, "RGB", min_width=out.width, min_height=out.height)
    assert scaled is not None and scaled.shape[1] > out.width  # a resize is left after the scaled decode
    area = cv2.resize(scaled, out.size, interpolation=cv2.INTER_AREA)

    def error(pixels: np.ndarray) -> float:
        return float(np.mean((np.asarray(pixels, float) - reference) ** 2))

    assert error(np.asarray(out)) <= error(area) * 10 ** (0.5 / 10)


def test_a_format_without_its_encoder_is_a_clear_400(monkeypatch: pytest.MonkeyPatch) -> None:
    """AVIF asked of a server whose libvips has no AV1 encoder (simulated): 400 naming why, and /v1/formats says."""
    from pipelines.convert import formats, options

    missing = lambda name: "no AV1 encoder in this libvips" if name == "avif" else None  # noqa: E731
    monkeypatch.setattr(options, "encoder_missing", missing)
    monkeypatch.setattr(formats, "encoder_missing", missing)
    with pytest.raises(InvalidOptionError, match="format=avif is not available on this server: no AV1 encoder") as err:
        ConvertOptions.parse(format="avif")
    assert err.value.http_status == 400
    assert "avif" not in {f.name for f in formats.available_formats()}


@pytest.mark.parametrize("fmt", ["BMP", "HEIF"])
def test_inputs_libvips_cannot_read_go_through_pillow(fmt: str) -> None:
    import pipelines.decode  # noqa: F401 - registers the HEIF opener

    exif = Image.Exif()
    exif[0x0112] = 6  # stored 64x48, upright 48x64
    data = encode(textured((64, 48)), fmt, **({"exif": exif.tobytes(), "quality": 90} if fmt == "HEIF" else {}))
    out = decoded(convert_image(data, ConvertOptions(format="png", max_side=32), LIMITS).data)
    assert out.size == ((24, 32) if fmt == "HEIF" else (32, 24))
    heif = decoded(convert_image(data, ConvertOptions(format="heif"), LIMITS).data)  # written upright, tag reset
    assert ImageOps.exif_transpose(heif).size == ((48, 64) if fmt == "HEIF" else (64, 48))


def test_option_names_that_collide_with_python_are_just_unknown() -> None:
    with pytest.raises(InvalidOptionError, match="unknown conversion options"):
        ConvertOptions.parse(**{"cls": "x", "format": "png"})


def test_effort_is_checked_against_the_inputs_format_too() -> None:
    with pytest.raises(InvalidOptionError, match="effort=9 is out of range for format=webp"):
        ConvertOptions.parse(effort=9).resolved("WEBP")
    with pytest.raises(InvalidOptionError, match="lossless=true contradicts"):
        ConvertOptions.parse(format="tiff", compression="jpeg", lossless=True)


def test_too_many_animation_frames_are_refused() -> None:
    from pipelines.frames import MAX_COUNTED_PAGES

    frames = [Image.new("L", (2, 2), i % 256) for i in range(MAX_COUNTED_PAGES + 5)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], optimize=False)
    with pytest.raises(ImageTooLargeError, match="frames"):
        convert_image(out.getvalue(), ConvertOptions(format="webp"), LIMITS)
    first = convert_image(out.getvalue(), ConvertOptions(format="webp", animated=False), LIMITS)
    assert first.frames == 1


def test_encoder_limits_are_option_errors_that_say_what_to_do(photo: bytes) -> None:
    """They were 400 invalid_image 'image could not be decoded: ...' for a valid image: the encoder's failure."""
    wide = encode(Image.new("RGB", (20000, 40), (10, 200, 30)), "PNG")
    for fmt in ("webp", "avif"):
        if fmt not in {f.name for f in available_formats()}:
            continue
        with pytest.raises(InvalidOptionError, match="pixels a side.*max_side"):
            convert_image(wide, ConvertOptions.parse(format=fmt), LIMITS)
        assert convert_image(wide, ConvertOptions.parse(format=fmt, max_side=4000), LIMITS).width == 4000
    for name in TIFF_COMPRESSION:
        if name in tiff_compressions():
            grey = encode(Image.new("L", (32, 24), 90), "PNG")  # WebP in TIFF needs RGB: grey is made RGB
            out = convert_image(grey, ConvertOptions.parse(format="tiff", compression=name), LIMITS).data
            assert pyvips.Image.new_from_buffer(out, "").width == 32  # Pillow reads no WebP-in-TIFF
        else:
            with pytest.raises(InvalidOptionError, match=f"compression={name} is not available"):
                ConvertOptions.parse(format="tiff", compression=name)


def test_heif_keeps_only_an_rgb_profile_that_parses() -> None:
    """icc=keep copied any profile into a HEIF as it was: a CMYK JPEG's CMYK profile over its (now RGB) pixels, or
    a broken one. libvips' savers drop those; a profile fit for RGB is kept."""
    if "heif" not in {f.name for f in available_formats()}:
        pytest.skip("no heif encoder installed here")
    rgb = pyvips.Image.new_from_array(np.full((24, 32, 3), 120, np.uint8)).copy(interpretation="srgb")
    cmyk = rgb.icc_export(output_profile="cmyk").jpegsave_buffer(keep=31)  # CMYK pixels and a CMYK profile
    broken = encode(Image.new("RGB", (32, 24), (200, 40, 40)), "JPEG", icc_profile=b"\0" * 200)
    wide = require(IMAGENET_SAMPLES / "n01532829_house_finch.JPEG").read_bytes()  # Adobe RGB (1998)
    for data, kept in ((cmyk, False), (broken, False), (wide, True)):
        heif = decoded(convert_image(data, ConvertOptions(format="heif", icc="keep"), LIMITS).data)
        assert heif.mode == "RGB" and bool(heif.info.get("icc_profile")) is kept


def test_text_options_read_booleans_as_http_query_parameters_do() -> None:
    """gRPC's options are text: `lossless=t` and `upscale=y` were refused there and taken over HTTP."""
    for text, value in (("t", True), ("y", True), ("YES", True), ("f", False), ("n", False), ("Off", False)):
        assert ConvertOptions.parse(format="webp", lossless=text).lossless is value
    with pytest.raises(InvalidOptionError, match="expected true or false"):
        ConvertOptions.parse(format="webp", lossless="maybe")
