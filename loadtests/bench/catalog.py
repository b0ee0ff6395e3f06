"""What the bench measures and where it writes: the servers by name, imgserve's command lines, the paths."""

import shlex
from pathlib import Path

from loadtests.server_process import PROJECT_ROOT

RESULTS_DIR: Path = PROJECT_ROOT / "loadtests" / "results"
LOG_DIR: Path = RESULTS_DIR / "logs"
TRITON_VENV: Path = PROJECT_ROOT / "loadtests" / ".venv-triton"
BENCHMARKS_MD: Path = PROJECT_ROOT / "BENCHMARKS.md"
MODEL_NAME = "mobilenet_v2_imagenet"

SERVERS = ("naive", "triton", "imgserve_http", "imgserve_grpc", "imgserve_graph_grpc")
# Every imgserve server runs what `make serve` runs, serve_config.yaml, on free ports; these are the arguments
# appended to `imgserve serve --config serve_config.yaml --http-port H --grpc-port G`. No placement flag is the
# default placement (local: decode and models in process, on one machine).
SERVE_CONFIG = "serve_config.yaml"
IMGSERVE_EXTRA_ARGS: dict[str, list[str]] = {
    "imgserve_http": [],
    "imgserve_grpc": [],
    "imgserve_graph_grpc": ["--placement", "graph"],
}
IMGSERVE_SERVERS = ("imgserve_http", "imgserve_grpc")  # the ratios' imgserve: the default placement
GRAPH_SERVER = "imgserve_graph_grpc"
PLACEMENT_CONCURRENCY = 16  # the level at which the placement ratios compare imgserve's placements

CONCURRENCY = [1, 8, 16, 32, 64]
QUICK_CONCURRENCY = [1, 8, 16]


def imgserve_command_line(name: str) -> str:
    """The imgserve server's command line as a reader would type it (ports left out: free ones per run)."""
    return shlex.join(["imgserve", "serve", "--config", SERVE_CONFIG, *IMGSERVE_EXTRA_ARGS[name]])
