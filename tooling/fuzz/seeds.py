"""Seed inputs for each fuzz target, made here from scratch (no third-party files): small valid images of every
accepted format with EXIF/GPS/XMP/IPTC/ICC, archives, and OIP requests in every encoding. The campaign mutates
these; `tests/unit/test_fuzz_regressions.py` replays them and the committed regression corpus.
"""

import io
import json
import struct
import tarfile
import zipfile
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageCms

XMP = (
    b'<?xpacket begin="\xef\xbb\xbf" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
    b'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
    b'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:Rating="4">'
    b"<dc:subject><rdf:Bag><rdf:li>cat</rdf:li><rdf:li>sofa</rdf:li></rdf:Bag></dc:subject>"
    b'<dc:title><rdf:Alt><rdf:li xml:lang="x-default">A title</rdf:li></rdf:Alt></dc:title>'
    b'</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
)


def _picture(size: tuple[int, int] = (40, 30), mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    pixels[:, : size[0] // 2] //= 2  # some structure, not only noise
    return Image.fromarray(pixels).convert(mode)


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x0112] = "Maker", "Model 1", 6  # make, model, orientation
    exif[0x0132] = "2024:05:01 12:30:00"
    ifd = exif.get_ifd(0x8769)
    ifd[0x829A], ifd[0x829D], ifd[0x8827] = (1, 250), (28, 10), 400  # exposure, f-number, ISO
    gps = exif.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (52.0, 22.0, 12.5), "E", (4.0, 53.0, 30.0)
    return exif


def _save(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def images() -> Iterator[tuple[str, bytes]]:
    rgb = _picture()
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    yield "baseline.jpg", _save(rgb, "JPEG", quality=80, exif=_exif(), icc_profile=icc)
    yield "progressive.jpg", _save(rgb, "JPEG", quality=60, progressive=True, xmp=XMP)
    yield "restart.jpg", _save(_picture((64, 48)), "JPEG", quality=70, restart_marker_blocks=1, subsampling=0)
    yield "grey.jpg", _save(rgb.convert("L"), "JPEG")
    yield "cmyk.jpg", _save(rgb.convert("CMYK"), "JPEG")
    yield "rgba.png", _save(_picture(mode="RGBA"), "PNG", exif=_exif())
    yield "palette.png", _save(rgb.convert("P"), "PNG", transparency=0)
    yield "deep.png", _save(Image.fromarray(np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50), "PNG")
    frames = [_picture(mode="P"), _picture((40, 30), "RGB").rotate(90).convert("P")]
    yield "anim.gif", _save(frames[0], "GIF", save_all=True, append_images=frames[1:], loop=0)
    yield "plain.bmp", _save(rgb, "BMP")
    yield "tiled.tiff", _save(rgb, "TIFF", compression="tiff_lzw", exif=_exif())
    yield "lossy.webp", _save(rgb, "WEBP", quality=50, exif=_exif())
    yield "lossless.webp", _save(_picture(mode="RGBA"), "WEBP", lossless=True)
    try:
        import pillow_heif

        pillow_heif.register_heif_opener()
        yield "photo.heic", _save(rgb, "HEIF", quality=50)
    except Exception:  # noqa: BLE001 - without libheif there is no HEIF seed
        pass


def _zip(entries: list[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("folder/", b"")
        for name, data in entries:
            archive.writestr(name, data)
    return buffer.getvalue()


def _tar(entries: list[tuple[str, bytes]], mode: str, long_names: bool = False) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode, format=tarfile.PAX_FORMAT) as archive:
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        archive.addfile(folder)
        link = tarfile.TarInfo("link.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
        for name, data in entries:
            info = tarfile.TarInfo(("deep/" * 30 if long_names else "") + name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def archives() -> Iterator[tuple[str, bytes]]:
    entries = [(name, data) for name, data in images()][:3] + [("notes.txt", b"not an image")]
    yield "photos.zip", _zip(entries)
    yield "photos.tar", _tar(entries, "w")
    yield "photos.tar.gz", _tar(entries, "w:gz", long_names=True)
    yield "photos.tar.bz2", _tar(entries[:1], "w:bz2")


def _oip_json(inputs: list[dict[str, object]], **extra: object) -> bytes:
    return json.dumps({"id": "1", "inputs": inputs, **extra}).encode()


def oip_http() -> Iterator[tuple[str, bytes]]:
    """First byte 0: JSON only; 1: a two-byte header length follows (the binary extension)."""
    fp32 = {"name": "input", "datatype": "FP32", "shape": [1, 3, 2, 2], "data": [0.5] * 12}
    yield "fp32.json", b"\x00" + _oip_json([fp32], outputs=[{"name": "out", "parameters": {"classification": 3}}])
    jpeg = dict(images())["baseline.jpg"]
    head = _oip_json(
        [{"name": "image", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": len(jpeg) + 4}}],
        parameters={"binary_data_output": True},
    )
    yield "bytes-binary.bin", b"\x01" + struct.pack(">H", len(head)) + head + struct.pack("<I", len(jpeg)) + jpeg
    raw = np.arange(12, dtype=np.float32).tobytes()
    head = _oip_json([{"name": "x", "datatype": "FP32", "shape": [3, 4], "parameters": {"binary_data_size": 48}}])
    yield "fp32-binary.bin", b"\x01" + struct.pack(">H", len(head)) + head + raw
    strings = {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "bc"]}
    uint8 = {"name": "u", "datatype": "UINT8", "shape": [2, 2], "data": [[1, 2], [3, 4]]}
    yield "mixed.json", b"\x00" + _oip_json([strings, uint8])


def oip_grpc() -> Iterator[tuple[str, bytes]]:
    from serving.grpc.stubs import load

    pb = load("inference_pb2")
    request = pb.ModelInferRequest(model_name="m", id="1")
    tensor = request.inputs.add(name="x", datatype="FP32", shape=[2, 2])
    tensor.contents.fp32_contents.extend([1.0, 2.0, 3.0, 4.0])
    request.outputs.add(name="out").parameters["classification"].int64_param = 2
    request.parameters["top_k"].int64_param = 3
    yield "typed.pb", request.SerializeToString()
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="image", datatype="BYTES", shape=[1])
    jpeg = dict(images())["baseline.jpg"]
    request.raw_input_contents.append(struct.pack("<I", len(jpeg)) + jpeg)
    yield "raw-bytes.pb", request.SerializeToString()
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="u", datatype="UINT8", shape=[2, 3])
    request.raw_input_contents.append(bytes(range(6)))
    yield "raw-uint8.pb", request.SerializeToString()


def jpeg_crop() -> Iterator[tuple[str, bytes]]:
    """Two bytes of claimed size, then a JPEG (see `targets._jpeg_crop`)."""
    for name, data in images():
        if name.endswith(".jpg"):
            yield name, bytes([6, 4]) + data


def xmp() -> Iterator[tuple[str, bytes]]:
    yield "packet.xmp", XMP
    yield "entities.xmp", b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><x>&a;&a;</x>'


SEEDS = {
    "decode": images,
    "metadata": images,
    "jpeg_crop": jpeg_crop,
    "xmp": xmp,
    "archive": archives,
    "oip_http": oip_http,
    "oip_grpc": oip_grpc,
}
