"""Batched decode + preprocess with NVIDIA DALI, matching `pipelines.preprocess.reference_preprocess`.

`nvidia.dali` is imported lazily: importing this module (or `pipelines`) works without DALI installed.
"""

import threading
from typing import Any, Literal

import numpy as np

from pipelines.decode import DecodedImage, decode_for_model, exif_orientation, open_validated, upright_size
from pipelines.errors import ImageInputError, InvalidImageError
from pipelines.limits import DecodeLimits
from pipelines.preprocess import PreprocessSpec, crop_box

# Formats DALI decodes exactly like Pillow's convert("RGB") (checked against Pillow): JPEG (MPO is JPEG) and
# 8-bit PNG/BMP. Everything else (16-bit PNG, TIFF, WebP, GIF, HEIF, AVIF) goes through the Pillow path.
_DALI_FORMATS = frozenset({"JPEG", "MPO", "PNG", "BMP"})
_DALI_MODES = frozenset({"1", "L", "LA", "P", "PA", "RGB", "RGBA"})
_INTERP = {"bilinear": "INTERP_LINEAR", "bicubic": "INTERP_CUBIC", "nearest": "INTERP_NN"}
_DTYPES = {"float32": "FLOAT", "float16": "FLOAT16", "uint8": "UINT8"}


def dali_available() -> str | None:
    """None when `nvidia.dali` imports; otherwise the reason it cannot be used."""
    try:
        import nvidia.dali  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - ImportError, or a broken native library
        return f"nvidia.dali is not importable: {type(exc).__name__}: {exc}"
    return None


class DaliDecoder:
    """Decode and preprocess a batch of encoded images with one DALI pipeline.

    When to use it: with ``device="gpu"`` JPEGs are decoded by nvJPEG (``mixed`` backend, hardware decoder
    where present) and resize/crop/normalise run on the GPU; that is where DALI wins by a wide margin. With
    ``device="cpu"`` it is an alternative to the Pillow decoder (libjpeg-turbo, multithreaded per batch),
    useful when several cores are free; on a busy 2-core box Pillow with draft mode is as fast or faster.

    Every item is first validated with `open_validated` (allow-list, byte/pixel limits, header), so hostile
    input never reaches DALI. The upright size and per-sample resize target come from that header; DALI
    applies EXIF orientation itself (``adjust_orientation=True``), and an item whose decoded shape disagrees
    with the header's upright size is re-done with Pillow. Resizing uses explicit integer output sizes from
    `PreprocessSpec.resized_size` and the crop anchor from `crop_box`, so geometry matches the reference;
    only the resampling kernels differ slightly (see tests/unit/test_dali_decode.py for the measured gap).

    Results are returned per item, in order; bad items come back as `ImageInputError` instances. If DALI
    fails on a batch, the batch is retried item by item so one bad image cannot fail the others. Not
    thread-safe across processes; calls from several threads are serialised by a lock.
    """

    def __init__(
        self,
        spec: PreprocessSpec,
        limits: DecodeLimits,
        batch_size: int,
        device: Literal["cpu", "gpu"] = "cpu",
        num_threads: int = 1,
    ) -> None:
        reason = dali_available()
        if reason is not None:
            raise RuntimeError(reason)
        if spec.interpolation not in _INTERP:
            raise ValueError(f"DaliDecoder does not support interpolation {spec.interpolation!r}")
        if batch_size < 1 or num_threads < 1:
            raise ValueError("batch_size and num_threads must be >= 1")
        self.spec, self.limits, self.batch_size = spec, limits, batch_size
        self.device, self.num_threads = device, num_threads
        self._lock = threading.Lock()
        self._pipe: Any = self._build()

    def _build(self) -> Any:
        from nvidia.dali import fn, types
        from nvidia.dali.pipeline import Pipeline

        spec = self.spec
        gpu = self.device == "gpu"
        pipe = Pipeline(
            batch_size=self.batch_size,
            num_threads=self.num_threads,
            device_id=0 if gpu else None,
            prefetch_queue_depth=1,
        )
        with pipe:
            encoded = fn.external_source(name="encoded", dtype=types.UINT8, ndim=1)
            images = fn.decoders.image(
                encoded, device="mixed" if gpu else "cpu", output_type=types.RGB, adjust_orientation=True
            )
            decoded_shape = images.shape()
            if spec.resize_policy != "none":
                size = fn.external_source(name="size", dtype=types.FLOAT, ndim=1)  # (height, width)
                interp = getattr(types, _INTERP[spec.interpolation])
                images = fn.resize(
                    images, size=size, mode="stretch", interp_type=interp, antialias=spec.interpolation != "nearest"
                )
            if spec.dtype == "uint8":
                mean, std = [0.0] * 3, [1.0] * 3
            else:  # (pixel * scale - mean) / std == (pixel - mean / scale) / (std / scale)
                mean = [m / spec.scale for m in spec.mean]
                std = [s / spec.scale for s in spec.std]
            crop_args: dict[str, Any] = {}
            if spec.crop_size is not None:
                crop_pos = fn.external_source(name="crop_pos", dtype=types.FLOAT, ndim=1)  # (y, x) in 0..1
                crop_args = {"crop": spec.crop_size, "crop_pos_y": crop_pos[0], "crop_pos_x": crop_pos[1]}
            out = fn.crop_mirror_normalize(
                images,
                mean=mean,
                std=std,
                dtype=getattr(types, _DTYPES[spec.dtype]),
                output_layout="CHW" if spec.layout == "NCHW" else "HWC",
                **crop_args,
            )
            pipe.set_outputs(out, decoded_shape)
        pipe.build()
        return pipe

    def _plan(self, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-sample resize target (h, w) and crop anchor (y, x) as DALI's relative crop position."""
        new_w, new_h = self.spec.resized_size(width, height)
        left, top, _, _ = crop_box(new_w, new_h, self.spec.crop_size)
        # +0.25 px keeps DALI's rounding of pos * (extent - crop) on the same integer as crop_box's.
        crop_h, crop_w = self.spec.crop_size or (new_h, new_w)
        pos_y = min(1.0, (top + 0.25) / (new_h - crop_h)) if new_h > crop_h else 0.0
        pos_x = min(1.0, (left + 0.25) / (new_w - crop_w)) if new_w > crop_w else 0.0
        return np.array([new_h, new_w], np.float32), np.array([pos_y, pos_x], np.float32)

    def _run(self, items: list[tuple[bytes, int, int]]) -> list[tuple[np.ndarray, tuple[int, int]]]:
        """One DALI iteration over (bytes, upright width, upright height); raises on any DALI failure."""
        plans = [self._plan(w, h) for _, w, h in items]
        try:
            self._pipe.feed_input("encoded", [np.frombuffer(data, np.uint8) for data, _, _ in items])
            if self.spec.resize_policy != "none":
                self._pipe.feed_input("size", [size for size, _ in plans])
            if self.spec.crop_size is not None:
                self._pipe.feed_input("crop_pos", [pos for _, pos in plans])
            tensors, shapes = self._pipe.run()
        except Exception:
            self._pipe = self._build()  # DALI marks the pipeline object invalid after an operator error
            raise
        tensors, shapes = tensors.as_cpu(), shapes.as_cpu()  # no-op for CPU outputs
        decoded_hw = [tuple(int(v) for v in np.asarray(shapes[i])[:2]) for i in range(len(items))]
        return [(np.array(tensors[i]), (hw[0], hw[1])) for i, hw in enumerate(decoded_hw)]

    def decode_batch(self, images: list[bytes]) -> list[DecodedImage | ImageInputError]:
        """Validate, then decode + preprocess; one `DecodedImage` or `ImageInputError` per input, in order."""
        results: list[DecodedImage | ImageInputError | None] = [None] * len(images)
        queued: list[tuple[int, bytes, int, int, str]] = []
        for index, data in enumerate(images):
            try:
                header = open_validated(data, self.limits)
                width, height = upright_size(header, exif_orientation(header))
                if header.format in _DALI_FORMATS and header.mode in _DALI_MODES:
                    queued.append((index, data, width, height, header.format or ""))
                else:
                    results[index] = self._pillow(data)
            except ImageInputError as exc:
                results[index] = exc
        with self._lock:
            for start in range(0, len(queued), self.batch_size):
                chunk = queued[start : start + self.batch_size]
                for (index, data, width, height, fmt), outcome in zip(chunk, self._run_chunk(chunk), strict=True):
                    if isinstance(outcome, ImageInputError):
                        results[index] = outcome
                    elif outcome[1] != (height, width):  # DALI's orientation/size disagrees with the header
                        results[index] = self._pillow(data)
                    else:
                        results[index] = DecodedImage(tensor=outcome[0], width=width, height=height, format=fmt)
        return [r if r is not None else InvalidImageError("image was not decoded") for r in results]

    def _run_chunk(
        self, chunk: list[tuple[int, bytes, int, int, str]]
    ) -> list[tuple[np.ndarray, tuple[int, int]] | ImageInputError]:
        try:
            return list(self._run([(data, w, h) for _, data, w, h, _ in chunk]))
        except Exception:  # noqa: BLE001 - retry item by item so one bad image cannot fail the others
            pass
        outcomes: list[tuple[np.ndarray, tuple[int, int]] | ImageInputError] = []
        for _, data, w, h, _ in chunk:
            try:
                outcomes.append(self._run([(data, w, h)])[0])
            except RuntimeError:  # DALI's operator errors; anything else is a bug and propagates
                outcomes.append(InvalidImageError("image data is corrupt or truncated (DALI could not decode it)"))
        return outcomes

    def _pillow(self, data: bytes) -> DecodedImage | ImageInputError:
        try:
            return decode_for_model(data, self.spec, self.limits, decoder="pillow", reduced=False)
        except ImageInputError as exc:
            return exc
