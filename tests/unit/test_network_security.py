"""Closed network defaults without starting Ray: which hosts `imgserve serve` binds, when it refuses to start, how
it sets up Ray's network and token auth, the Ray worker hook that rebinds Serve's gRPC servers, and TLS on the
Ingress's own listeners (HTTPS and gRPC over TLS with a self-signed certificate made here).
tests/integration/test_network_defaults.py checks the listening sockets of a real server."""

import asyncio
import datetime
import ipaddress
import os
import ssl
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from fastapi import FastAPI
from grpc_health.v1 import health_pb2, health_pb2_grpc
from pydantic import ValidationError

from serving import ray_worker_setup, serve_control, server
from serving.cli import build_parser
from serving.config.app_args import DirectIngressOptions
from serving.deployments.direct_ingress import DirectListeners, reuse_port_socket
from serving.security.settings import is_loopback_host
from serving.server import StartRefused, listener_binds, load_serve_config, resolve_auth
from tests.paths import PROJECT_ROOT

pytestmark = pytest.mark.unit

SERVE_CONFIG = PROJECT_ROOT / "serve_config.yaml"
RAY_NETWORK_ENV = (
    "RAY_AUTH_MODE",
    "RAY_AUTH_TOKEN",
    "RAY_AUTH_TOKEN_PATH",
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER",
    ray_worker_setup.RAY_INTERNAL_HOST_ENV,
    ray_worker_setup.RAY_GRPC_PROXY_HOST_ENV,
)


def free_port() -> int:
    with reuse_port_socket("127.0.0.1", 0) as sock:
        return sock.getsockname()[1]


def hosts(binds: list[tuple[str, str]]) -> set[str]:
    return {host for _, host in binds}


@pytest.fixture
def ray_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """prepare_ray_network writes os.environ: start from none of its variables, restore them afterwards."""
    for name in RAY_NETWORK_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


# ---- bind hosts and the refusal ----


@pytest.mark.parametrize("placement", ["local", "graph"])
def test_default_config_binds_only_loopback(placement: str) -> None:
    config = load_serve_config(SERVE_CONFIG, placement=placement)  # type: ignore[arg-type]
    binds = listener_binds(config)
    assert hosts(binds) == {"127.0.0.1"}
    assert any(name.startswith("imgserve listeners") for name, _ in binds)
    assert resolve_auth(binds, env={}) == "off"


def test_ray_proxy_binds_the_http_host_for_both_proxies_on_a_local_ray() -> None:
    config = load_serve_config(SERVE_CONFIG, placement="graph", ray_proxy=True)
    binds = dict(listener_binds(config))
    assert binds["Ray Serve HTTP proxy"] == binds["Ray Serve gRPC proxy"] == "127.0.0.1"
    moved = dict(listener_binds(load_serve_config(SERVE_CONFIG, placement="graph", ray_proxy=True, host="0.0.0.0")))
    assert moved["Ray Serve HTTP proxy"] == moved["Ray Serve gRPC proxy"] == "0.0.0.0"
    assert moved["Ray (GCS, raylet, object manager, agents, workers, Serve replicas)"] == "127.0.0.1"


def test_on_a_ray_cluster_serves_grpc_servers_count_as_exposed() -> None:
    """Ray Serve binds its replicas' gRPC servers (and its gRPC proxy) on [::]; only a Ray started here rebinds."""
    config = load_serve_config(SERVE_CONFIG, placement="graph", ray_proxy=True)
    binds = listener_binds(config, ray_address="ray://10.0.0.5:10001")
    assert "::" in hosts(binds) and "10.0.0.5" in hosts(binds)
    with pytest.raises(StartRefused, match="Ray Serve gRPC proxy on ::"):
        resolve_auth(binds, env={"IMGSERVE_AUTH": "off"})
    assert resolve_auth(binds, env={}) == "required"


def test_host_override_moves_every_direct_listener_and_the_proxy_host() -> None:
    config = load_serve_config(SERVE_CONFIG, 18000, 19000, placement="local", host="0.0.0.0")
    direct = config["applications"][0]["args"]["direct_ingress"]
    assert (direct["host"], direct["http_port"], direct["grpc_port"]) == ("0.0.0.0", 18000, 19000)
    assert config["http_options"]["host"] == "0.0.0.0"
    binds = listener_binds(config)
    assert ("imgserve listeners (direct_ingress)", "0.0.0.0") in binds
    assert resolve_auth(binds, env={}) == "required"  # auto: exposed means required
    assert resolve_auth(binds, env={"IMGSERVE_AUTH": "required"}) == "required"
    with pytest.raises(StartRefused, match=r"IMGSERVE_AUTH=off.*Exposed: imgserve listeners \(direct_ingress\)"):
        resolve_auth(binds, env={"IMGSERVE_AUTH": "off"})


@pytest.fixture
def nothing_may_start(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A local server whose start fails the test if it gets past its checks."""

    def must_not_run(*_: Any) -> str:
        raise AssertionError("the server went on after refusing")

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(server, "prepare_environment", must_not_run)
    monkeypatch.setattr(server, "prepare_ray_network", must_not_run)
    return monkeypatch


def test_refusal_happens_before_anything_starts(
    nothing_may_start: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    nothing_may_start.setenv("IMGSERVE_AUTH", "off")
    assert server.run_server(SERVE_CONFIG, host="0.0.0.0") == 2
    err = capsys.readouterr().err
    assert "refusing to start" in err and "0.0.0.0" in err
    assert os.environ["IMGSERVE_AUTH"] == "off"  # not rewritten: nothing was exported


def test_an_unknown_event_loop_is_refused_before_anything_starts(
    nothing_may_start: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    nothing_may_start.setenv("IMGSERVE_EVENT_LOOP", "trio")
    assert server.run_server(SERVE_CONFIG) == 2
    assert "IMGSERVE_EVENT_LOOP must be uvloop or asyncio, not 'trio'" in capsys.readouterr().err


def test_tls_is_refused_with_rays_proxy_and_with_a_half_pair(
    tls_pair: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cert, key = (str(path) for path in tls_pair)
    with pytest.raises(StartRefused, match="cannot serve gRPC over TLS"):
        load_serve_config(SERVE_CONFIG, placement="graph", ray_proxy=True, tls=(cert, key))
    monkeypatch.setattr(server, "prepare_environment", lambda: pytest.fail("started"))
    assert server.run_server(SERVE_CONFIG, tls_cert=cert) == 2
    assert "go together" in capsys.readouterr().err
    assert server.run_server(SERVE_CONFIG, tls_cert=cert, tls_key=cert) == 2  # a certificate is not a key
    assert "cannot use --tls-cert" in capsys.readouterr().err
    with pytest.raises(ValidationError, match="go together"):
        DirectIngressOptions(tls_cert=cert)


def test_tls_goes_to_the_direct_listeners_and_the_banner_says_https(tls_pair: tuple[Path, Path]) -> None:
    from ray.serve.schema import ServeDeploySchema

    cert, key = (str(path) for path in tls_pair)
    config = load_serve_config(SERVE_CONFIG, 18000, 19000, placement="local", tls=(cert, key))
    direct = DirectIngressOptions.model_validate(config["applications"][0]["args"]["direct_ingress"])
    assert direct.tls and (direct.tls_cert, direct.tls_key) == (cert, key)
    banner = serve_control.listening_at(ServeDeploySchema.model_validate(config))
    assert banner == "https://127.0.0.1:18000 (grpc port 19000, TLS)"


def test_serve_command_line_options() -> None:
    args = build_parser().parse_args(["serve", "--host", "0.0.0.0", "--tls-cert", "c.pem", "--tls-key", "k.pem"])
    assert (args.host, args.tls_cert, args.tls_key) == ("0.0.0.0", "c.pem", "k.pem")
    default = build_parser().parse_args(["serve"])
    assert (default.host, default.tls_cert, default.tls_key) == (None, None, None)
    assert yaml.safe_load(SERVE_CONFIG.read_text())["http_options"]["host"] == "127.0.0.1"  # so the default is


# ---- Ray's network and token auth ----


def test_loopback_ray_keeps_token_auth_off_and_binds_loopback(ray_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert server.prepare_ray_network(False, "127.0.0.1", tmp_path) == "disabled"
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"  # Ray's single-machine switch: node IP 127.0.0.1
    assert os.environ[ray_worker_setup.RAY_INTERNAL_HOST_ENV] == "127.0.0.1"
    assert os.environ[ray_worker_setup.RAY_GRPC_PROXY_HOST_ENV] == "127.0.0.1"
    assert not (tmp_path / server.TOKEN_FILE).exists()


def test_exposed_server_turns_ray_token_auth_on_with_a_private_token(
    ray_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ray_env.setenv("RAY_AUTH_MODE", "disabled")  # today's default must not survive exposure
    assert server.prepare_ray_network(True, "0.0.0.0", tmp_path) == "token"
    token = Path(os.environ["RAY_AUTH_TOKEN_PATH"])
    assert token == tmp_path / server.TOKEN_FILE
    assert stat.S_IMODE(token.stat().st_mode) == 0o600
    assert len(token.read_text()) == 64 and int(token.read_text(), 16) >= 0  # 256 random bits, hex
    assert os.environ[ray_worker_setup.RAY_GRPC_PROXY_HOST_ENV] == "0.0.0.0"


def test_a_given_ray_token_is_used_as_is(ray_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    ray_env.setenv("RAY_AUTH_TOKEN", "from-the-operator")
    assert server.prepare_ray_network(True, "0.0.0.0", tmp_path) == "token"
    assert "RAY_AUTH_TOKEN_PATH" not in os.environ and not (tmp_path / server.TOKEN_FILE).exists()
    ray_env.delenv("RAY_AUTH_TOKEN")
    ray_env.setenv("RAY_AUTH_MODE", "token")  # asked for on loopback too: gets its own token file
    assert server.prepare_ray_network(False, "127.0.0.1", tmp_path) == "token"
    assert Path(os.environ["RAY_AUTH_TOKEN_PATH"]).parent == tmp_path


def test_rebinding_moves_only_wildcard_addresses() -> None:
    seen: list[str] = []
    add = ray_worker_setup.rebinding(lambda _server, address: seen.append(address) or 1, "127.0.0.1")
    for address in ("[::]:0", "0.0.0.0:9000", "10.1.2.3:5", "[::1]:7"):
        add(None, address)
    assert seen == ["127.0.0.1:0", "127.0.0.1:9000", "10.1.2.3:5", "[::1]:7"]
    ray_worker_setup.rebinding(lambda _server, address: seen.append(address) or 1, "::1")(None, "[::]:8")
    assert seen[-1] == "[::1]:8"


def test_ray_worker_setup_rebinds_serves_grpc_servers(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hook patches the functions Ray Serve 2.60 binds its replica and proxy gRPC servers with; a real grpc
    server shows where they end up listening."""
    from ray._common import tls_utils
    from ray.serve._private import default_impl

    monkeypatch.setattr(tls_utils, "add_port_to_grpc_server", tls_utils.add_port_to_grpc_server)
    monkeypatch.setattr(default_impl, "add_grpc_address", default_impl.add_grpc_address)
    import ray.serve._private.replica as replica

    monkeypatch.setattr(replica, "add_port_to_grpc_server", replica.add_port_to_grpc_server)
    monkeypatch.setenv(ray_worker_setup.RAY_INTERNAL_HOST_ENV, "127.0.0.1")
    monkeypatch.setenv(ray_worker_setup.RAY_GRPC_PROXY_HOST_ENV, "127.0.0.1")
    ray_worker_setup.ray_worker_setup()
    assert replica.add_port_to_grpc_server is tls_utils.add_port_to_grpc_server
    grpc_server = grpc.server(ThreadPoolExecutor(1), options=[("grpc.so_reuseport", 0)])
    port = replica.add_port_to_grpc_server(grpc_server, "[::]:0")
    proxy_port = free_port()
    default_impl.add_grpc_address(grpc_server, f"[::]:{proxy_port}")
    grpc_server.start()
    try:
        listening = listening_sockets()
        assert {(host, p) for host, p in listening if p in (port, proxy_port)} == {
            ("127.0.0.1", port),
            ("127.0.0.1", proxy_port),
        }
    finally:
        grpc_server.stop(None)


def listening_sockets() -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket on this machine, IPv4-mapped IPv6 as IPv4."""
    found = []
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] != "0A":
                continue
            raw, port = fields[1].split(":")
            packed = bytes.fromhex(raw)
            if v6:
                address: Any = ipaddress.IPv6Address(b"".join(packed[i : i + 4][::-1] for i in range(0, 16, 4)))
                address = address.ipv4_mapped or address
            else:
                address = ipaddress.IPv4Address(packed[::-1])
            found.append((str(address), int(port, 16)))
    return found


def test_is_loopback_host_reads_mapped_and_named_addresses() -> None:
    assert is_loopback_host("127.0.0.1") and is_loopback_host("::1") and is_loopback_host("localhost")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("::") and not is_loopback_host("example.com")


# ---- TLS on the direct listeners ----


@pytest.fixture(scope="module")
def tls_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 / localhost and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "imgserve-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.IPv4Address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def servicer() -> Any:
    """Every RPC the listener registers, unimplemented, except Health/Check (SERVING)."""
    from serving.grpc.generated import image_service_pb2_grpc, inference_pb2_grpc

    class Servicer(
        inference_pb2_grpc.GRPCInferenceServiceServicer,
        image_service_pb2_grpc.ImageServiceServicer,
        health_pb2_grpc.HealthServicer,
    ):
        async def Check(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's method name
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    return Servicer()


def _tls_scenario(cert: Path, key: Path) -> tuple[int, Any, bool, bool]:
    """Direct listeners with TLS, probed over HTTPS/gRPC-TLS and plain text. Runs in a fresh process: the listeners
    load imgserve's generated OIP stubs, which cannot share a process with tritonclient's (other unit tests)."""
    http_port, grpc_port = free_port(), free_port()
    options = DirectIngressOptions(http_port=http_port, grpc_port=grpc_port, tls_cert=str(cert), tls_key=str(key))
    app = FastAPI()

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    async def scenario() -> tuple[int, Any, bool, bool]:
        listeners = DirectListeners(options, 1 << 20)
        await listeners.start(servicer(), app)
        try:
            async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(cert))) as client:
                status = (await client.get(f"https://127.0.0.1:{http_port}/v2/health/ready")).status_code
            plain_refused = False
            async with httpx.AsyncClient() as client:
                try:
                    await client.get(f"http://127.0.0.1:{http_port}/v2/health/ready")
                except httpx.HTTPError:
                    plain_refused = True  # a TLS listener does not speak plain HTTP
            credentials = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
            async with grpc.aio.secure_channel(f"127.0.0.1:{grpc_port}", credentials) as channel:
                health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            insecure_failed = False
            async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
                try:
                    await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
                except grpc.aio.AioRpcError:
                    insecure_failed = True
            return status, int(health.status), plain_refused, insecure_failed
        finally:
            await listeners.stop()

    return asyncio.run(scenario())


def test_direct_listeners_serve_https_and_grpc_over_tls(tls_pair: tuple[Path, Path]) -> None:
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        status, health, plain_refused, insecure_failed = pool.submit(_tls_scenario, *tls_pair).result(timeout=120)
    assert status == 200 and health == health_pb2.HealthCheckResponse.SERVING
    assert plain_refused and insecure_failed


def test_serve_grpc_proxy_gets_the_http_body_limit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Ray's gRPC proxy would accept 2 GiB messages; the server caps it at IMGSERVE_MAX_REQUEST_BYTES like HTTP
    monkeypatch.setenv(server.GRPC_MAX_MESSAGE_ENV, "unset")  # recorded, so the test leaves the environment as found
    monkeypatch.delenv(server.GRPC_MAX_MESSAGE_ENV)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("IMGSERVE_MAX_REQUEST_BYTES", str(5 * 1024 * 1024))
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    server.prepare_environment()
    assert os.environ[server.GRPC_MAX_MESSAGE_ENV] == str(5 * 1024 * 1024)


def test_ports_another_server_listens_on_are_refused_before_anything_starts(
    nothing_may_start: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A second `imgserve serve` on the same ports used to bind them too (the replicas' SO_REUSEPORT) and share
    connections with the first server without a word."""
    from loadtests.server_process import free_port
    from serving.deployments.direct_ingress import reuse_port_socket
    from serving.port_check import port_in_use

    http_port, grpc_port = free_port(), free_port()
    assert not port_in_use("127.0.0.1", http_port)
    held = reuse_port_socket("127.0.0.1", http_port)  # what a running server's replica holds
    try:
        assert port_in_use("127.0.0.1", http_port) and not port_in_use("127.0.0.1", grpc_port)
        assert server.run_server(SERVE_CONFIG, http_port=http_port, grpc_port=grpc_port) == 2
        err = capsys.readouterr().err
        assert f"HTTP port {http_port} on 127.0.0.1: already in use" in err and "--http-port" in err, err
        assert str(grpc_port) not in err
    finally:
        held.close()
    assert not port_in_use("127.0.0.1", http_port)


def test_the_worker_setup_hook_imports_no_imgserve_stack() -> None:
    """Every Ray worker runs the hook, the Serve controller too: its module loads neither the settings models nor
    the image libraries (serving.server did)."""
    code = (
        f"import sys, {server.WORKER_SETUP_HOOK.rsplit('.', 1)[0]} as hook; assert callable(hook.ray_worker_setup); "
        "print(sorted(m for m in ('PIL', 'numpy', 'pydantic', 'fastapi', 'serving.server') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"
