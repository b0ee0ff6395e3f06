"""The conversion baseline teams write first, as a function and as a bulk script: Pillow, full-size decode, resize,
encode. The naive conversion server (`naive_convert_server`) serves `pillow_convert`; the script is what
`imgserve convert` is measured against in bulk (`python -m loadtests.convert_bench --parts cli`):

    python -m loadtests.baselines.pillow_convert SRC_DIR OUT_DIR --format webp --quality 80 --max-side 2048

It imports Pillow and nothing else (no web framework), two threads (Pillow releases the GIL while it decodes,
resizes and encodes), glibc's malloc defaults: what a plain script does.
"""

import argparse
import io
import os
from concurrent.futures import ThreadPoolExecutor

from PIL import Image, ImageOps

PILLOW_FORMATS = {"jpeg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp"), "png": ("PNG", "image/png")}


def pillow_convert(data: bytes, fmt: str, quality: int, max_side: int) -> bytes:
    """Decode at full size, turn upright, fit inside max_side (Lanczos), encode with Pillow's defaults."""
    image = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, PILLOW_FORMATS[fmt][0], quality=quality)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source")
    parser.add_argument("out")
    parser.add_argument("--format", default="webp", choices=sorted(PILLOW_FORMATS))
    parser.add_argument("--quality", type=int, default=80)
    parser.add_argument("--max-side", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)

    def one(name: str) -> None:
        with open(os.path.join(args.source, name), "rb") as f:
            data = f.read()
        with open(os.path.join(args.out, f"{name}.{args.format}"), "wb") as f:
            f.write(pillow_convert(data, args.format, args.quality, args.max_side))

    with ThreadPoolExecutor(args.threads) as pool:
        list(pool.map(one, sorted(os.listdir(args.source))))


if __name__ == "__main__":
    main()
