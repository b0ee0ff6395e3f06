"""`make bench`: imgserve against its ceiling and two baselines, same machine, same model, same real JPEGs.

    .venv/bin/python -m loadtests.bench            # full run: 20 s per level after a warm-up (~20-25 min)
    .venv/bin/python -m loadtests.bench --quick    # smoke run: short levels, image subsets, concurrency 1, 8, 16

One run measures, one thing at a time (never two servers at once):

- limit: model-only throughput of ONNX Runtime (mobilenet_v2_imagenet) on preprocessed tensors already in memory,
  best of batch 1/8/16/32/64; decode+preprocess-only throughput (`pipelines.decode.decode_image`, one process,
  per mix); and the combined decode+model limit 1 / (1/decode + 1/model): a single pipeline that decodes and then
  runs the model, with no overlap, cannot beat it on this machine.
- naive: loadtests/baselines/naive_server.py (FastAPI + uvicorn, full-size Pillow decode, one ORT call per request).
- triton: loadtests/baselines/triton_server.py (NVIDIA Triton via PyTriton, dynamic batching, same decode and model
  in its Python callable), in its own venv loadtests/.venv-triton, created here on first use.
- imgserve_http / imgserve_grpc: `imgserve serve --config serve_config.yaml`, exactly what `make serve` runs (the
  default placement: local, in-process on one machine) on free ports, each started fresh; /v1/classify and
  ImageService.Classify with one image per request. The ratios use the better of the two.
- imgserve_graph_grpc: the same over gRPC with `--placement graph` (per-stage graph: Ingress -> Decoder -> model
  deployments), to show what the actor hops cost on this machine.
- imgserve_http_auth / imgserve_grpc_auth: imgserve_http / imgserve_grpc with `IMGSERVE_AUTH=required`, each start
  with a database of its own (a temp SQLite file) holding one key made by `imgserve keys create --name bench --role
  analyst --tenant bench`; the clients send it (`Authorization: Bearer`, gRPC `authorization` metadata). Each runs
  right after its twin; the report's auth table sets single-image p50 (c1) and peak images/s side by side
  (goal: p50 at most +0.5 ms). `--servers imgserve_grpc imgserve_grpc_auth` measures just one pair.

Every server gets the same closed-loop asyncio clients (`loadtests.closed_loop.run_level`) at each concurrency
(16 always among them: the placement ratios compare imgserve's placements at c16), on both mixes
(`loadtests.images`: web = 1000 ImageNet JPEGs ~0.2 MP, camera = clean 3-12 MP photos). Per level:
images/s, p50/p99 latency, errors, CPU steal (time the hypervisor gave other guests: a level with high steal
measured a slower machine), a speed probe before and after (ms per fixed single-thread JPEG decode: these VMs
also slow down by up to ~2x without any steal), the server's CPU seconds and peak RSS summed over its whole
process tree (Ray's raylet, GCS and workers included), and the load generator's own CPU time (a generator
using less than half a core is not the bottleneck). Results go to loadtests/results/bench.json and into BENCHMARKS.md.

Modules: machine (CPU steal, speed probe, quiet-machine gate, machine description), monitor (process-tree CPU and
RSS), servers (the servers under test, on loadtests.server_process), auth (the *_auth servers' key), senders
(baseline clients), triton_venv, limits, measure (levels and rounds), report (peaks, ratios, auth overhead,
bench.json), markdown (BENCHMARKS.md), cli.
"""
