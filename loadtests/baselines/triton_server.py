"""NVIDIA Triton baseline: PyTriton (tritonserver 2.51) with dynamic batching, JPEG decode + ONNX Runtime in Python.

Runs in its own virtualenv (nvidia-pytriton 0.7.0 pins numpy<2); `python -m loadtests.bench`
(loadtests/bench/triton_venv.py) creates it at loadtests/.venv-triton and starts this script with
LD_LIBRARY_PATH holding the Python lib dir (the bundled tritonserver's Python stub links libpython3.11):

    loadtests/.venv-triton/bin/python loadtests/baselines/triton_server.py --model M.onnx --http-port 8200

Model `mobilenet_v2_imagenet`: input IMAGE (BYTES, [-1, 1], one encoded JPEG per row), outputs INDICES (INT64,
[-1, 5]) and SCORES (FP32, [-1, 5]). Triton's dynamic batcher (max batch 32, preferred 8/16/32, 4 ms queue delay
-- imgserve's own batching settings) groups requests; the Python callable decodes each image with the same
Pillow preprocessing as imgserve (`pipelines.decode.decode_image`, pillow decoder): JPEG draft mode at
1/2-1/8 scale when the photo is much larger than needed (off with --full-decode), EXIF orientation, RGB,
shorter side 256 bilinear, centre crop 224, (x - 128) / 128, NCHW -- then one `InferenceSession.run` per batch.
An image that does not decode gets index -1 (the client counts it as an error) without failing its batch.

This file imports only numpy, Pillow and onnxruntime at module level (pytriton inside `main`), so the main
venv's unit tests can check `preprocess` against imgserve's decoder.
"""

import argparse
import io
import logging
import signal
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

MODEL_NAME = "mobilenet_v2_imagenet"
RESIZE, CROP = 256, 224
TOP_K = 5
_SWAPS_AXES = {5, 6, 7, 8}


def _resized(width: int, height: int) -> tuple[int, int]:
    if width <= height:
        return RESIZE, max(1, int(round(height * RESIZE / width)))
    return max(1, int(round(width * RESIZE / height))), RESIZE


def _orientation(image: Image.Image) -> int:
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - broken EXIF: treat as upright, as imgserve does
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def preprocess(data: bytes, reduced: bool = True) -> np.ndarray:
    """Encoded image -> float32 [3, 224, 224], numerically imgserve's pillow decode path (array-equal)."""
    image = Image.open(io.BytesIO(data))
    orientation = _orientation(image)
    if reduced and image.format in ("JPEG", "MPO"):
        stored_w, stored_h = image.size
        up_w, up_h = (stored_h, stored_w) if orientation in _SWAPS_AXES else (stored_w, stored_h)
        need_w, need_h = _resized(up_w, up_h)
        scale = 1
        while scale < 8 and up_w // (scale * 2) >= need_w and up_h // (scale * 2) >= need_h:
            scale *= 2
        if scale > 1:
            image.draft(image.mode if image.mode in ("RGB", "L") else None, (stored_w // scale, stored_h // scale))
    if orientation != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode == "RGB":
        image.load()
    else:
        image = image.convert("RGB")
    # Resample only the crop's source rectangle (the resize-then-crop result, without the cropped-away columns).
    width, height = image.size
    size = _resized(width, height)
    left, top = int(round((size[0] - CROP) / 2.0)), int(round((size[1] - CROP) / 2.0))
    sx, sy = width / size[0], height / size[1]
    box = (left * sx, top * sy, (left + CROP) * sx, (top + CROP) * sy)
    pixels = np.asarray(image.resize((CROP, CROP), Image.Resampling.BILINEAR, box=box))
    tensor = pixels.transpose(2, 0, 1).astype(np.float32, order="C")
    tensor *= np.float32(1.0 / 128.0)
    tensor -= np.float32(1.0)
    return tensor


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def make_infer(session, reduced: bool):  # noqa: ANN001, ANN201 - pytriton decorators inspect the signature
    from pytriton.decorators import batch

    input_name = session.get_inputs()[0].name

    @batch
    def infer(IMAGE: np.ndarray) -> dict[str, np.ndarray]:  # noqa: N803 - the tensor's name
        tensors, ok = [], []
        for row in IMAGE:
            try:
                tensors.append(preprocess(bytes(row[0]), reduced))
                ok.append(True)
            except Exception:  # noqa: BLE001 - one bad image must not fail its batch-mates
                tensors.append(np.zeros((3, CROP, CROP), np.float32))
                ok.append(False)
        probs = session.run(None, {input_name: np.stack(tensors)})[0]
        indices = np.argsort(probs, axis=1)[:, ::-1][:, :TOP_K].astype(np.int64)
        scores = np.take_along_axis(probs, indices, axis=1).astype(np.float32)
        indices[~np.asarray(ok)] = -1
        return {"INDICES": indices, "SCORES": scores}

    return infer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="mobilenet_v2_imagenet ONNX file")
    parser.add_argument("--http-port", type=int, default=8200)
    parser.add_argument("--grpc-port", type=int, default=8201)
    parser.add_argument("--metrics-port", type=int, default=8202)
    parser.add_argument("--instances", type=int, default=2, help="model instances (Python callables) in parallel")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--preferred", type=int, nargs="*", default=[8, 16, 32])
    parser.add_argument("--queue-delay-us", type=int, default=4000)
    parser.add_argument("--ort-threads", type=int, default=0, help="ONNX Runtime intra-op threads (0: ORT default)")
    parser.add_argument("--full-decode", action="store_true", help="no JPEG draft (reduced-scale) decoding")
    args = parser.parse_args()

    import onnxruntime as ort
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig

    logging.basicConfig(level=logging.WARNING)
    options = ort.SessionOptions()
    if args.ort_threads:
        options.intra_op_num_threads = args.ort_threads
    session = ort.InferenceSession(str(args.model), options, providers=["CPUExecutionProvider"])
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=args.http_port,
        grpc_address="127.0.0.1",
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        allow_gpu_metrics=False,
        log_verbose=0,
    )
    # SIGTERM -> KeyboardInterrupt, which Triton.serve() turns into a clean stop of tritonserver and its stubs.
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    with Triton(config=config) as triton:
        triton.bind(
            model_name=MODEL_NAME,
            infer_func=[make_infer(session, not args.full_decode) for _ in range(max(1, args.instances))],
            inputs=[Tensor(name="IMAGE", dtype=np.bytes_, shape=(1,))],
            outputs=[
                Tensor(name="INDICES", dtype=np.int64, shape=(TOP_K,)),
                Tensor(name="SCORES", dtype=np.float32, shape=(TOP_K,)),
            ],
            config=ModelConfig(
                max_batch_size=args.max_batch,
                batcher=DynamicBatcher(
                    max_queue_delay_microseconds=args.queue_delay_us, preferred_batch_size=args.preferred
                ),
            ),
            strict=True,
        )
        print(
            f"triton baseline bound in {time.perf_counter() - started:.1f} s: http 127.0.0.1:{args.http_port}",
            flush=True,
        )
        triton.serve()


if __name__ == "__main__":
    main()
