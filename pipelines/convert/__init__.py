"""Format conversion: encoded image in, encoded image out, with resize, orientation, colour and metadata handling.

    result = convert_image(data, ConvertOptions.parse(format="webp", quality=80, max_side=2048), DecodeLimits())
    result.data, result.content_type, result.ratio

Options and their defaults: `pipelines.convert.options`; formats and engines: `pipelines.convert.formats`.
"""

from dataclasses import dataclass

from pipelines.convert.formats import FORMATS, OutputFormat, available_formats
from pipelines.convert.jpeg_fast import DECODE_BUDGET
from pipelines.convert.options import ConvertOptions
from pipelines.convert.vips_io import SourceInfo, direct_webp, encode_vips, load_vips, prepare_for
from pipelines.limits import DecodeLimits


@dataclass(frozen=True)
class ConvertResult:
    data: bytes
    format: str  # output format name (FORMATS key)
    width: int
    height: int
    frames: int
    source: SourceInfo
    input_bytes: int

    @property
    def content_type(self) -> str:
        return FORMATS[self.format].content_type

    @property
    def output_bytes(self) -> int:
        return len(self.data)

    @property
    def ratio(self) -> float:
        """Input bytes per output byte (2.0: the output is half the size)."""
        return self.input_bytes / max(1, len(self.data))

    def summary(self) -> dict[str, object]:
        """JSON-ready facts about the conversion (without the image bytes)."""
        return {
            "input_format": self.source.format.lower(),
            "format": self.format,
            "content_type": self.content_type,
            "input_size": [self.source.width, self.source.height],
            "size": [self.width, self.height],
            "frames": self.frames,
            "input_bytes": self.input_bytes,
            "output_bytes": self.output_bytes,
            "compression_ratio": round(self.ratio, 4),
        }


def convert_image(data: bytes, options: ConvertOptions, limits: DecodeLimits) -> ConvertResult:
    """Decode (bounded by `limits`), resize, and encode `data` as `options` say. Raises `ImageInputError`s."""
    with DECODE_BUDGET.scope():  # a lossy WebP's decode is held from the budget until its frame is in memory
        image, source, options = load_vips(data, options, limits)
        image = prepare_for(image, options)
        width, height = image.width, image.height
        page_height = image.get("page-height") if "page-height" in image.get_fields() else height
        frame = direct_webp(image, options)
        libvips_encoded = encode_vips(image, options) if frame is None else None
        del image  # the pipeline and the decoded photo it holds go before libwebp allocates its planes
    encoded = libvips_encoded if frame is None else frame.encode()
    frames = max(1, height // max(1, page_height))
    return ConvertResult(encoded, options.format or "jpeg", width, page_height, frames, source, len(data))


__all__ = ["ConvertOptions", "ConvertResult", "OutputFormat", "available_formats", "convert_image", "FORMATS"]
