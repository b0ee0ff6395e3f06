#!/bin/sh
# Called by deploy/Dockerfile after the package's dependencies are installed, with the image's EXTRAS.
# The `gpu` extra adds PyTorch and TensorRT; ONNX Runtime's CUDA provider is in another distribution,
# onnxruntime-gpu, which installs the same `onnxruntime` module and cannot sit beside the CPU build (a base
# dependency of imgserve). So a GPU image swaps one for the other; any other image keeps the CPU build.
# ORT_GPU_VERSION pins it (empty: the newest; PyPI's onnxruntime-gpu 1.31 wants CUDA 13 and cuDNN 9, so pick the
# base image, or this version, to match). Where CUDA cannot start, the server still serves every model on the CPU
# and says so in its log (serving/backends/onnxruntime_backend.py).
set -eu
extras="${1:-}"
case ",${extras}," in
*,gpu,*)
    pip uninstall -y onnxruntime
    pip install -c constraints.txt "onnxruntime-gpu${ORT_GPU_VERSION:+==${ORT_GPU_VERSION}}"
    ;;
*) echo "EXTRAS=${extras}: the CPU build of ONNX Runtime stays" ;;
esac
