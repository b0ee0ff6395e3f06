"""How many frames or pages an image holds, counted without decoding them and with a cap (hostile files hold
millions). Light on purpose (Pillow only): the conversion path needs it without the metadata package."""

from PIL import Image

MAX_COUNTED_PAGES = 1000  # Pillow walks a TIFF page chain in O(n^2): 50k hostile pages take ~20 s
SEEK_COUNTED_FORMATS = frozenset({"TIFF", "GIF"})  # frames found only by walking the file: counting is capped


def gif_frame_count(data: bytes, cap: int = MAX_COUNTED_PAGES) -> int:
    """Image descriptors in a GIF, found by walking its blocks without decoding anything (Pillow's seek() composites
    every frame onto the canvas: 1,000 one-pixel frames on a 6000x6000 canvas would cost minutes). At most `cap` + 1
    are counted; a damaged block structure ends the count where it breaks."""
    n, frames = len(data), 0
    if n < 13:
        return 0
    i = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # header, screen descriptor, global colours

    def skip_sub_blocks(i: int) -> int:
        while i < n and data[i]:
            i += data[i] + 1
        return i + 1

    while i < n and frames <= cap:
        block = data[i]
        if block == 0x21:  # extension: label, then data sub-blocks
            i = skip_sub_blocks(i + 2)
        elif block == 0x2C:  # image descriptor (10 bytes), local colours, LZW code size, data sub-blocks
            frames += 1
            if i + 10 > n:
                break
            packed = data[i + 9]
            i += 10 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
            i = skip_sub_blocks(i + 1)
        else:  # 0x3B trailer, or garbage
            break
    return frames


def frame_count(image: Image.Image, data: bytes = b"") -> tuple[int, str | None]:
    """(frames, error). PNG/WebP/HEIF/MPO counts are read from a header, GIF frames from the block structure;
    TIFF pages are found only by walking the file (a 30 MB file can hold 2 million), so at most `MAX_COUNTED_PAGES`
    pages and frames are counted."""
    if image.format == "GIF" and data:
        pages = max(gif_frame_count(data), 1)
    elif image.format not in SEEK_COUNTED_FORMATS:
        return int(getattr(image, "n_frames", 1)), None
    else:
        pages = 1
        try:
            while pages <= MAX_COUNTED_PAGES:
                image.seek(pages)  # EOFError past the last page
                pages += 1
        except EOFError:
            pass
        finally:
            image.seek(0)
    if pages > MAX_COUNTED_PAGES:
        return MAX_COUNTED_PAGES, f"image.frames: more than {MAX_COUNTED_PAGES} frames; counting stopped"
    return pages, None
