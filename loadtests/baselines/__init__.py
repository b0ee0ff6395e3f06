"""Baseline servers the benchmark compares imgserve against (naive FastAPI, NVIDIA Triton via PyTriton)."""
