"""Two Ray nodes on this machine (`ray start --head` and `ray start --address`), serve_config.yaml deployed the
way `serve deploy` does it, the model replica pinned to the worker node by a custom resource: the replica runs
there, the head's proxy answers a real photo correctly, and the worker node's own Ray metrics port reports it.

Heavy on a 2-core machine (two raylets, five replicas; about 2 minutes): deselect it with `-k "not multinode"`.
Every Ray port is chosen here: a port Ray picks itself is reported through a file the raylet waits for, and
on a loaded machine that wait times out and kills the node.

Teardown never runs `ray stop`: that kills every Ray process on the machine, other test servers included.
Each node runs `ray start --block` in the foreground of a process this test owns, and SIGTERM to it makes Ray
shut down exactly the processes that node started. Stragglers are found by a marker environment variable that
every process of this cluster inherits, and killed by pid.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from loadtests.server_process import RAY_DEFAULT_PORTS
from serving.server import load_serve_config
from tests.paths import IMAGENET_SAMPLES, MOBILENET_DIR, PROJECT_ROOT, require

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]

MARKER = "IMGSERVE_MULTINODE_TEST"
MODEL_DEPLOYMENT = "model-mobilenet_v2_imagenet"
PHOTO = "n04335435_streetcar.JPEG"
RAY = Path(sys.executable).parent / "ray"

# Runs in its own interpreter, as `serve deploy` would: the Serve controller is a detached actor, so the
# application outlives this driver, and the pytest process never holds Ray state.
DEPLOY_SCRIPT = r"""
import json, logging, sys, time
import ray
from ray import serve
from ray.serve._private import api as serve_api
from ray.serve.config import gRPCOptions
from ray.serve.schema import ServeDeploySchema
from serving.grpc.stubs import ensure_generated

args = json.loads(sys.argv[1])
ensure_generated()
ray.init(address=args["address"], namespace="serve", logging_level=logging.WARNING, _node_ip_address="127.0.0.1")
deadline = time.monotonic() + 120
while sum(node["Alive"] for node in ray.nodes()) < 2:
    if time.monotonic() > deadline:
        raise SystemExit(f"worker node never joined: {ray.nodes()}")
    time.sleep(1)
config = ServeDeploySchema.model_validate(args["config"])
client = serve_api.serve_start(
    http_options=config.http_options.model_dump(),
    grpc_options=gRPCOptions(**config.grpc_options.model_dump()),
    proxy_location=config.proxy_location,
)
# deploy_apps(_blocking=True) gives up after a fixed 60 s; replicas start slower than that on a busy machine.
client.deploy_apps(config)
deadline = time.monotonic() + 240
while (status := serve.status().applications.get("imgserve")) is None or status.status != "RUNNING":
    if (status is not None and status.status == "DEPLOY_FAILED") or time.monotonic() > deadline:
        raise SystemExit(f"imgserve not running: {status}")
    time.sleep(2)
client.wait_for_proxies_serving(wait_for_applications_running=True)
nodes = {n["NodeID"]: {"resources": n["Resources"], "metrics_export_port": n["MetricsExportPort"]}
         for n in ray.nodes() if n["Alive"]}
# What `serve status` and GET /api/serve/applications/ report: every replica and proxy with its node.
print("RESULT " + json.dumps({"nodes": nodes, "serve": client.get_serve_details()}, default=str), flush=True)
"""


@dataclass(frozen=True)
class Cluster:
    address: str
    metrics_ports: tuple[int, int]  # head, worker
    env: dict[str, str]


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports free now, none of them one Ray's daemons take by default."""
    sockets = [socket.socket() for _ in range(count + len(RAY_DEFAULT_PORTS))]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        ports = [s.getsockname()[1] for s in sockets]
        return [port for port in ports if port not in RAY_DEFAULT_PORTS][:count]
    finally:
        for s in sockets:
            s.close()


def _ray_start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    common = ["--block", "--node-ip-address=127.0.0.1", "--num-cpus=2", "--min-worker-port=0", "--max-worker-port=0"]
    with log.open("wb") as out:
        return subprocess.Popen(
            [str(RAY), "start", *common, "--disable-usage-stats", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=PROJECT_ROOT,
            start_new_session=True,
        )


def _stop(processes: list[subprocess.Popen], grace_s: float = 2.0) -> None:
    """SIGTERM to every `ray start --block` at once, SIGKILL to whatever is left after `grace_s`.

    On SIGTERM a node drains for up to 30 s while actors run on it (Serve replicas, Ray Data workers), one node
    after the other when stopped in turn: 30-45 s of every teardown. Nothing a test checks depends on a graceful
    drain; the stragglers are killed by marker afterwards either way."""
    for proc in processes:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in processes:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _kill_marked(marker: str) -> None:
    """SIGKILL any process left over from this cluster: they all carry MARKER=<marker> in their environment."""
    needle = f"{MARKER}={marker}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle in (entry / "environ").read_bytes().split(b"\0"):
                os.kill(int(entry.name), signal.SIGKILL)
        except (OSError, ValueError):
            pass


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require(MOBILENET_DIR)
    if not RAY.exists():
        pytest.skip(f"{RAY} is absent: the ray CLI comes with ray[serve] in the virtualenv")
    tmp = tmp_path_factory.mktemp("multinode")
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PROMETHEUS_MULTIPROC_DIR")}
    env |= {MARKER: marker, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
    # Left unset, a replica deployed on a cluster requires keys (it cannot see where the proxy binds); this test's
    # nodes and proxy are on loopback, so it says so explicitly.
    env["IMGSERVE_AUTH"] = "off"
    # Short temp dirs: Ray's unix socket paths live under them and must stay under ~107 characters.
    head_dir = Path(tempfile.mkdtemp(prefix="imgs-head-", dir="/tmp"))
    worker_dir = Path(tempfile.mkdtemp(prefix="imgs-wrk-", dir="/tmp"))
    gcs, dashboard, client, *ports = _free_ports(15)
    head_ports, worker_ports = ports[:6], ports[6:]
    head = _ray_start(
        [
            "--head",
            f"--port={gcs}",
            '--resources={"head": 1}',
            f"--temp-dir={head_dir}",
            "--include-dashboard=false",
            f"--dashboard-port={dashboard}",
            f"--ray-client-server-port={client}",
            *_node_ports(head_ports),
        ],
        env,
        tmp / "head.log",
    )
    processes = [head]
    dirs = [head_dir, worker_dir]
    address = f"127.0.0.1:{gcs}"
    try:
        # The worker can join only once the head is up (`ray start` writes the address file last).
        deadline = time.monotonic() + 120
        while not (head_dir / "ray_current_cluster").exists():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"head node did not start:\n{(tmp / 'head.log').read_text(errors='replace')[-3000:]}")
            time.sleep(1)
        processes.append(
            _ray_start(
                [
                    f"--address={address}",
                    '--resources={"worker_node": 1}',
                    f"--temp-dir={worker_dir}",
                    *_node_ports(worker_ports),
                ],
                env,
                tmp / "worker.log",
            )
        )
        yield Cluster(address, (head_ports[5], worker_ports[5]), env)
    finally:
        _stop(processes)
        _kill_marked(marker)
        for directory in dirs:
            shutil.rmtree(directory, ignore_errors=True)


def _node_ports(ports: list[int]) -> list[str]:
    """Fixed ports for one node's raylet and agents (the last one is the metrics export port)."""
    node_manager, object_manager, agent_listen, agent_grpc, runtime_env_agent, metrics = ports
    return [
        f"--node-manager-port={node_manager}",
        f"--object-manager-port={object_manager}",
        f"--dashboard-agent-listen-port={agent_listen}",
        f"--dashboard-agent-grpc-port={agent_grpc}",
        f"--runtime-env-agent-port={runtime_env_agent}",
        f"--metrics-export-port={metrics}",
    ]


def _cluster_config(http_port: int, grpc_port: int) -> dict:
    """serve_config.yaml on free ports, with the model deployment pinned to the worker node and every other
    deployment to the head: left to the scheduler, two of them (the decoder, the embedding model) could take the
    worker's 2 CPUs first, and the pinned model replica then never started (CI once: "taken more than 30s to be
    scheduled", the deploy timed out)."""
    config = load_serve_config(PROJECT_ROOT / "serve_config.yaml", http_port, grpc_port)
    (app,) = config["applications"]
    for deployment in app["deployments"]:
        place = {"worker_node": 0.01} if deployment["name"] == MODEL_DEPLOYMENT else {"head": 0.01}
        deployment.setdefault("ray_actor_options", {})["resources"] = place
    return config


def test_replica_pinned_to_worker_node_serves_over_http(cluster: Cluster, tmp_path: Path) -> None:
    photo = (require(IMAGENET_SAMPLES) / PHOTO).read_bytes()
    http_port, grpc_port = _free_ports(2)
    args = json.dumps({"address": cluster.address, "config": _cluster_config(http_port, grpc_port)})
    deploy = subprocess.run(
        [sys.executable, "-c", DEPLOY_SCRIPT, args],
        capture_output=True,
        text=True,
        env=cluster.env,
        cwd=PROJECT_ROOT,
        timeout=300,
    )
    result_lines = [line for line in deploy.stdout.splitlines() if line.startswith("RESULT ")]
    assert deploy.returncode == 0 and result_lines, f"deploy failed:\n{deploy.stdout[-3000:]}\n{deploy.stderr[-3000:]}"
    result = json.loads(result_lines[-1].removeprefix("RESULT "))

    nodes = result["nodes"]
    assert len(nodes) == 2, nodes
    worker = next(node_id for node_id, node in nodes.items() if "worker_node" in node["resources"])
    head = next(node_id for node_id, node in nodes.items() if "head" in node["resources"])
    assert {node["metrics_export_port"] for node in nodes.values()} == set(cluster.metrics_ports)
    deployments = result["serve"]["applications"]["imgserve"]["deployments"]
    replicas = [r for r in deployments[MODEL_DEPLOYMENT]["replicas"] if r["state"].endswith("RUNNING")]
    assert replicas, deployments[MODEL_DEPLOYMENT]
    assert all(replica["node_id"] == worker for replica in replicas), (replicas, worker)
    assert set(result["serve"]["proxies"]) == {head}  # proxy_location: HeadOnly

    # The head's proxy -> Ingress -> Decoder -> the model replica on the worker node, and back.
    response = httpx.post(f"http://127.0.0.1:{http_port}/v1/classify", content=photo, params={"top_k": 3}, timeout=60)
    assert response.status_code == 200, response.text
    top = response.json()["results"][0]["predictions"][0]
    assert top["label"].startswith("streetcar") and top["score"] > 0.5, top

    # Each node exports its own replicas' Ray metrics on its own port: what Prometheus's `ray` job scrapes per node
    # (Ray's discovery file lists exactly these NodeManagerAddress:MetricsExportPort pairs).
    worker_metrics = f"http://127.0.0.1:{cluster.metrics_ports[1]}/metrics"
    needle = f'deployment="{MODEL_DEPLOYMENT}"'
    deadline = time.monotonic() + 60
    while True:
        text = httpx.get(worker_metrics, timeout=10).text
        if "ray_serve_replica_processing_queries{" in text and needle in text:
            break
        assert time.monotonic() < deadline, f"{worker_metrics} never reported the {MODEL_DEPLOYMENT} replica"
        time.sleep(2)
