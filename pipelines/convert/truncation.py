"""Truncated inputs are a 400 (`InvalidImageError`), as in the decode stage, not an image with a grey or black bottom or
an animation that silently lost its last frames: how strictly libvips' loader is told to fail, and a check of GIF
animations that libnsgif decodes as far as the data goes."""

# libvips' fail_on levels: "truncated" (most loaders report a short file as truncation) and "error" (libtiff reports a
# short strip of an uncompressed TIFF as a read error, and the rest of the image came out black)
_FAIL_ON = {"TIFF": "error"}


def loader_options(input_format: str, pages: int) -> str:
    """The option string of libvips' loader for an input of Pillow format `input_format`, `pages` frames kept."""
    return f"fail_on={_FAIL_ON.get(input_format, 'truncated')}" + (f",n={pages}" if pages > 1 else "")


def gif_is_complete(data: bytes) -> bool:
    """Whether a GIF's blocks end with its trailer (0x3B). Image data cut short leaves the walk inside a block: libnsgif
    then decodes the frames before the cut and says nothing. A file ending in the trailer byte is taken as whole
    without the walk (the walk is `pipelines.frames.gif_frame_count`'s, a step per sub-block)."""
    n = len(data)
    if data.endswith(b"\x3b"):
        return True
    if n < 13:
        return False
    i = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)  # header, screen descriptor, global colours
    while i < n:
        block = data[i]
        if block == 0x21:  # extension: label, then data sub-blocks
            i += 2
        elif block == 0x2C:  # image descriptor (10 bytes), local colours, LZW code size, then data sub-blocks
            if i + 10 > n:
                return False
            packed = data[i + 9]
            i += 11 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)
        else:
            return block == 0x3B
        while i < n and data[i]:  # sub-blocks up to the zero-length terminator
            i += data[i] + 1
        i += 1
    return False
