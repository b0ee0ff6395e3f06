"""What the bench measures and where it writes: the servers by name, imgserve's command lines, the paths."""

import shlex
from pathlib import Path

from loadtests.server_process import PROJECT_ROOT

RESULTS_DIR: Path = PROJECT_ROOT / "loadtests" / "results"
LOG_DIR: Path = RESULTS_DIR / "logs"
TRITON_VENV: Path = PROJECT_ROOT / "loadtests" / ".venv-triton"
BENCHMARKS_MD: Path = PROJECT_ROOT / "BENCHMARKS.md"
MODEL_NAME = "mobilenet_v2_imagenet"

# Each *_auth server right after its twin without auth: the pair is measured back to back (the machine drifts).
SERVERS = (
    "naive",
    "triton",
    "triton_int8",
    "imgserve_http",
    "imgserve_http_auth",
    "imgserve_grpc",
    "imgserve_grpc_auth",
    "imgserve_graph_grpc",
)
# Every imgserve server runs what `make serve` runs, serve_config.yaml, on free ports; these are the arguments
# appended to `imgserve serve --config serve_config.yaml --http-port H --grpc-port G`. No placement flag is the
# default placement (local: decode and models in process, on one machine).
SERVE_CONFIG = "serve_config.yaml"
IMGSERVE_EXTRA_ARGS: dict[str, list[str]] = {
    "imgserve_http": [],
    "imgserve_http_auth": [],
    "imgserve_grpc": [],
    "imgserve_grpc_auth": [],
    "imgserve_graph_grpc": ["--placement", "graph"],
}
TRITON_SERVERS = ("triton", "triton_int8")  # float ONNX / the INT8 variant imgserve serves on CPU
IMGSERVE_SERVERS = ("imgserve_http", "imgserve_grpc")  # the ratios' imgserve: the default placement
PLACEMENT_SERVERS = ("imgserve_http", "imgserve_grpc", "imgserve_graph_grpc")  # one per placement and edge
GRAPH_SERVER = "imgserve_graph_grpc"
PLACEMENT_CONCURRENCY = 16  # the level at which the placement ratios compare imgserve's placements

# Auth on vs off: the *_auth server is its twin (same command line) started with IMGSERVE_AUTH=required, a database
# of its own (a fresh SQLite file per start, IMGSERVE_DATABASE_URL) and one analyst key created in it with the CLI
# just before the start; its clients send that key. Their twins run as `make serve` does (loopback: auth off).
AUTH_PAIRS: dict[str, str] = {"imgserve_http_auth": "imgserve_http", "imgserve_grpc_auth": "imgserve_grpc"}
IMGSERVE_ENV: dict[str, dict[str, str]] = {name: {"IMGSERVE_AUTH": "required"} for name in AUTH_PAIRS}
BENCH_KEY_ARGS = ["keys", "create", "--name", "bench", "--role", "analyst", "--tenant", "bench"]
AUTH_P50_GOAL_MS = 0.5  # issue #14: auth may add at most this to the single-image p50

CONCURRENCY = [1, 8, 16, 32, 64]
QUICK_CONCURRENCY = [1, 8, 16]


def is_grpc(name: str) -> bool:
    """Whether an imgserve server is measured over gRPC (else HTTP)."""
    return name.removesuffix("_auth").endswith("_grpc")


def imgserve_command_line(name: str) -> str:
    """The imgserve server's command line as a reader would type it (ports left out: free ones per run), its
    environment first (`IMGSERVE_AUTH=required imgserve serve ...`)."""
    env = [f"{key}={value}" for key, value in IMGSERVE_ENV.get(name, {}).items()]
    return shlex.join([*env, "imgserve", "serve", "--config", SERVE_CONFIG, *IMGSERVE_EXTRA_ARGS[name]])


def key_command_line() -> str:
    """How the *_auth servers' key is made, as a reader would type it (the key is the output's last line)."""
    return shlex.join(["imgserve", *BENCH_KEY_ARGS])
