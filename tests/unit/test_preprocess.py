"""decode_image against the plain-Pillow reference on real photos: within a grey level, reduced-scale, EXIF-oriented."""

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from pipelines.decode import DecodedImage, DecoderName, decode_image
from pipelines.preprocess import (
    PreprocessSpec,
    geometry_pil,
    normalize,
    reference_geometry,
    reference_preprocess,
)

pytestmark = pytest.mark.unit

DECODERS: list[DecoderName] = ["pillow", "opencv"]
# RGB landscape and portrait photos, and two stored as greyscale (mode L) JPEGs.
PHOTOS = [
    "n01440764_tench.JPEG",
    "n02097474_Tibetan_terrier.JPEG",
    "n02669723_academic_gown.JPEG",
    "n04243546_slot.JPEG",
    "n04254680_soccer_ball.JPEG",
    "n03804744_nail.JPEG",
]
CAMERA_PHOTO = "blur-samples/106_NIKON-D3400-35MM_S.JPG"  # 2048x1365 DSLR frame
# Both decoders use libjpeg-turbo: measured 0.0 on 200 ImageNet photos (RGB and L) and 0.0078 (one grey level of
# 1/128) on a CMYK JPEG, where OpenCV's CMYK->RGB conversion rounds differently. Two grey levels is the bound.
OPENCV_MEAN_ABS = 2 / 128


def photo(data: Path, name: str) -> bytes:
    return (data / "imagenet-samples" / name).read_bytes()


def centred(tensor: np.ndarray) -> np.ndarray:
    """The tensor minus its per-channel mean: compares content, not overall brightness."""
    return tensor - tensor.mean(axis=(1, 2), keepdims=True)


def mean_abs(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).mean())


GREY_LEVEL = 1 / 128  # one 8-bit step after MobileNet's (x - 128) / 128


def assert_within_one_grey_level(served: np.ndarray, reference: np.ndarray, step: float = 1.0) -> None:
    """The served geometry (only the crop resampled) against resize-then-crop: Pillow rounds to 8 bits between
    its two passes, so a value may move by one level; measured max 1 level, ~2 % of values (up to 24 % on one
    shape), mean signed difference ~0.001 level. Half-pixel shifts or a wrong crop measure tens of levels."""
    assert served.shape == reference.shape
    diff = (served.astype(np.float64) - reference.astype(np.float64)) / step
    assert np.abs(diff).max() <= 1.0 + 1e-4
    assert float((np.abs(diff) > 0.5).mean()) < 0.35
    assert abs(float(diff.mean())) < 0.02


@pytest.mark.parametrize("name", PHOTOS)
def test_pillow_decoder_matches_the_reference(shared_data: Path, mobilenet_spec: PreprocessSpec, name: str) -> None:
    data = photo(shared_data, name)
    reference = reference_preprocess(Image.open(io.BytesIO(data)), mobilenet_spec)
    for reduced in (False, True):  # these photos are too small for a reduced decode: both paths are full-size
        decoded = decode_image(data, mobilenet_spec, decoder="pillow", reduced=reduced)
        assert decoded.decode_scale == 1
        assert decoded.tensor.dtype == np.float32 and decoded.tensor.shape == (3, 224, 224)
        assert_within_one_grey_level(decoded.tensor, reference, GREY_LEVEL)
    assert (decoded.width, decoded.height) == Image.open(io.BytesIO(data)).size
    assert decoded.format == "JPEG"


# (width, height, spec): landscape, portrait, odd sizes, an exact resize, no crop, and an image already at size.
GEOMETRY_CASES = [
    (500, 375, PreprocessSpec()),
    (375, 500, PreprocessSpec()),
    (641, 479, PreprocessSpec(interpolation="bicubic")),
    (1023, 257, PreprocessSpec()),
    (400, 300, PreprocessSpec(resize_policy="exact", resize_size=(240, 320), crop_size=(224, 224))),
    (333, 500, PreprocessSpec(crop_size=None)),
    (256, 300, PreprocessSpec()),
]


@pytest.mark.parametrize(("width", "height", "spec"), GEOMETRY_CASES)
def test_geometry_resamples_only_the_crop(shared_data: Path, width: int, height: int, spec: PreprocessSpec) -> None:
    image = Image.open(io.BytesIO(photo(shared_data, PHOTOS[0]))).convert("RGB").resize((width, height))
    served, reference = geometry_pil(image, spec), reference_geometry(image, spec)
    assert served.dtype == np.uint8 and served.shape[:2] == (spec.crop_size or reference.shape[:2])
    assert_within_one_grey_level(served, reference)
    shifted = reference_geometry(image.transform(image.size, Image.Transform.AFFINE, (1, 0, 2, 0, 1, 0)), spec)
    assert np.abs(served.astype(int) - shifted).max() > 1  # the bound is tight enough to see a 2-pixel shift


def test_normalize_is_the_textbook_formula() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (2, 7, 5, 3), dtype=np.uint8)
    for spec in (
        PreprocessSpec(scale=1.0, mean=(128.0,) * 3, std=(128.0,) * 3),
        PreprocessSpec(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        PreprocessSpec(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), layout="NHWC"),
    ):
        x = pixels.astype(np.float64)
        textbook = (x * spec.scale - np.asarray(spec.mean)) / np.asarray(spec.std)
        if spec.layout == "NCHW":
            textbook = np.moveaxis(textbook, -1, -3)
        tensor = normalize(pixels, spec)
        assert tensor.dtype == np.float32 and tensor.flags.c_contiguous and tensor.shape == textbook.shape
        np.testing.assert_allclose(tensor, textbook, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", PHOTOS)
def test_opencv_decoder_is_within_two_grey_levels(shared_data: Path, mobilenet_spec: PreprocessSpec, name: str) -> None:
    data = photo(shared_data, name)
    reference = reference_preprocess(Image.open(io.BytesIO(data)), mobilenet_spec)
    decoded = decode_image(data, mobilenet_spec, decoder="opencv", reduced=False)
    assert decoded.tensor.shape == reference.shape
    assert mean_abs(decoded.tensor, reference) <= OPENCV_MEAN_ABS


def test_opencv_decoder_on_cmyk_jpeg(shared_data: Path, mobilenet_spec: PreprocessSpec) -> None:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(photo(shared_data, PHOTOS[0]))).convert("CMYK").save(buffer, "JPEG", quality=95)
    reference = reference_preprocess(Image.open(buffer), mobilenet_spec)
    decoded = decode_image(buffer.getvalue(), mobilenet_spec, decoder="opencv", reduced=False)
    assert mean_abs(decoded.tensor, reference) <= OPENCV_MEAN_ABS


def assert_close_to_reference(decoded: DecodedImage, reference: np.ndarray) -> None:
    """Loose bounds for a DCT-domain reduced decode; measured 0.003 to 0.045 mean abs on real photos."""
    assert decoded.tensor.shape == reference.shape == (3, 224, 224)
    assert mean_abs(decoded.tensor, reference) < 0.08
    np.testing.assert_allclose(decoded.tensor.mean(axis=(1, 2)), reference.mean(axis=(1, 2)), atol=0.02)
    assert 0.95 < decoded.tensor.std() / reference.std() < 1.05
    assert np.corrcoef(decoded.tensor.ravel(), reference.ravel())[0, 1] > 0.97


@pytest.mark.parametrize("decoder", DECODERS)
def test_reduced_decode_of_camera_photo(
    shared_data: Path, mobilenet_spec: PreprocessSpec, decoder: DecoderName
) -> None:
    path = shared_data / CAMERA_PHOTO
    reference = reference_preprocess(Image.open(path), mobilenet_spec)
    decoded = decode_image(path.read_bytes(), mobilenet_spec, decoder=decoder, reduced=True)
    assert decoded.decode_scale == 4  # 2048x1365 / 4 = 512x342 still covers the 384x256 resize
    assert_close_to_reference(decoded, reference)


@pytest.fixture(scope="module")
def rotated_large_jpeg(shared_data: Path) -> bytes:
    """A real photo upscaled to 3000x2000 and stored sideways (EXIF orientation 6: upright it is 2000x3000)."""
    image = Image.open(io.BytesIO(photo(shared_data, PHOTOS[0]))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.resize((3000, 2000), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90, exif=exif)
    return buffer.getvalue()


@pytest.mark.parametrize("decoder", DECODERS)
def test_reduced_decode_respects_orientation(
    rotated_large_jpeg: bytes, mobilenet_spec: PreprocessSpec, decoder: DecoderName
) -> None:
    upright = ImageOps.exif_transpose(Image.open(io.BytesIO(rotated_large_jpeg)))
    reference = reference_preprocess(upright, mobilenet_spec)
    decoded = decode_image(rotated_large_jpeg, mobilenet_spec, decoder=decoder, reduced=True)
    assert decoded.decode_scale == 4  # 2000/8 = 250 < 256, so 4 is the largest scale that keeps the resize
    assert_close_to_reference(decoded, reference)
    assert mean_abs(decoded.tensor, reference) < 0.01  # a smooth upscaled image loses almost nothing


@pytest.mark.parametrize(
    "decoder",
    [
        "pillow",
        "opencv",
    ],
)
def test_reduced_decode_reports_original_size(
    rotated_large_jpeg: bytes, mobilenet_spec: PreprocessSpec, decoder: DecoderName
) -> None:
    decoded = decode_image(rotated_large_jpeg, mobilenet_spec, decoder=decoder, reduced=True)
    assert (decoded.width, decoded.height) == (2000, 3000)


# File 1 of each orientation set is a separately exported, brighter copy (channel means ~0.1 higher), so content
# is compared after removing each channel's mean. Correct orientations measure <= 0.055; mirrored or rotated
# versions of file 1 measure >= 0.2, which the sanity check below keeps true.
ORIENTATION_BOUND = 0.1


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(("kind", "size"), [("landscape", (600, 450)), ("portrait", (450, 600))])
def test_every_exif_orientation_decodes_upright(
    shared_data: Path, mobilenet_spec: PreprocessSpec, decoder: DecoderName, kind: str, size: tuple[int, int]
) -> None:
    folder = shared_data / "exif-samples" / "jpg" / "orientation"
    decoded = {
        i: decode_image((folder / f"{kind}_{i}.jpg").read_bytes(), mobilenet_spec, decoder=decoder) for i in range(1, 9)
    }
    upright = centred(decoded[1].tensor)
    wrong = [upright[:, :, ::-1], upright[:, ::-1, :], upright.transpose(0, 2, 1), np.rot90(upright, axes=(1, 2))]
    assert min(mean_abs(w, upright) for w in wrong) > 2 * ORIENTATION_BOUND
    for i, image in decoded.items():
        assert (image.width, image.height) == size, f"{kind}_{i}"
        assert mean_abs(centred(image.tensor), upright) < ORIENTATION_BOUND, f"{kind}_{i}"
    for i in range(3, 9):  # files 2..8 come from one export and agree closely without any centring
        assert mean_abs(decoded[i].tensor, decoded[2].tensor) < 0.05, f"{kind}_{i}"


def test_mobilenet_normalisation_range(mobilenet_spec: PreprocessSpec) -> None:
    pixels = np.array([[[0, 0, 0], [128, 128, 128], [255, 255, 255]]], dtype=np.uint8)  # 1x3 HWC
    tensor = normalize(pixels, mobilenet_spec)
    assert tensor.shape == (3, 1, 3) and tensor.dtype == np.float32
    np.testing.assert_array_equal(tensor[:, 0, :], [[-1.0, 0.0, 0.9921875]] * 3)


def test_scaled_normalisation_and_layouts() -> None:
    spec = PreprocessSpec(scale=1 / 255, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), layout="NHWC")
    pixels = np.full((2, 4, 5, 3), 255, dtype=np.uint8)  # a batch works too
    tensor = normalize(pixels, spec)
    assert tensor.shape == (2, 4, 5, 3)
    np.testing.assert_allclose(tensor[0, 0, 0], (1 - np.array(spec.mean)) / np.array(spec.std), rtol=1e-6)
    assert normalize(pixels, PreprocessSpec(dtype="uint8")).dtype == np.uint8
    assert normalize(pixels, PreprocessSpec(dtype="float16")).shape == (2, 3, 4, 5)


def test_real_photo_tensor_stays_in_range(shared_data: Path, mobilenet_spec: PreprocessSpec) -> None:
    tensor = decode_image(photo(shared_data, PHOTOS[1]), mobilenet_spec).tensor
    assert tensor.min() >= -1.0 and tensor.max() <= 0.9921875
    assert tensor.flags.c_contiguous
