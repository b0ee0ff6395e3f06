"""Start a local single-node Ray, deploy `serve_config.yaml` on it, and run until interrupted.

This is what `make serve` runs. On a cluster the same file goes to `serve deploy` or KubeRay instead.

Closed by default: every listener binds loopback unless `--host` says otherwise. Ray is started with a loopback node
address (its GCS, raylet, object manager, agents and workers bind 127.0.0.1), and the two gRPC servers Ray Serve
binds to every interface regardless are rebound in each Ray worker (`ray_worker_setup`). Before Ray starts, the
server refuses to run with `IMGSERVE_AUTH=off` when any listener binds beyond loopback; Ray's own token auth is on
whenever one does.
"""

import logging
import os
import secrets
import signal
import ssl
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ValidationError

from serving.config.app_args import DirectIngressOptions, Placement, direct_ingress_args
from serving.config.placement_overlay import apply_placement, choose_placement
from serving.local_ray import (
    LEAN_ENV,
    LEAN_SYSTEM_CONFIG,
    SignalFlag,
    WorkerLogFollower,
    block_unused_modules,
    lean_ray_enabled,
    logs_dir,
    trim_head_processes,
)
from serving.port_check import LOOPBACK, listener_ports, listener_problems, shared_ports
from serving.ray_supervisor import (
    STOP_SIGNALS,
    TOKEN_FILE,
    clean_up_ray_folder,
    hand_over_to_supervisor,
    new_ray_folder,
    serve_shutdown_timeout_s,
)
from serving.ray_worker_setup import RAY_GRPC_PROXY_HOST_ENV, RAY_INTERNAL_HOST_ENV
from serving.security.settings import SecuritySettings, is_loopback_host
from serving.serve_control import (
    deploy_serve,
    deploy_timeout_s,
    run_in_worker,
    shutdown_serve,
)
from serving.serve_file import StartRefused, check_keys, check_start, proxy_warnings
from serving.start_checks import check_host, check_jwt_files, check_settings, one_line, refusal, refuse

logger = logging.getLogger("imgserve.server")

# Run in every Ray worker of a local Ray (ray.init runtime_env); the env vars tell it where to bind.
WORKER_SETUP_HOOK = "serving.ray_worker_setup.ray_worker_setup"
GRPC_MAX_MESSAGE_ENV = "RAY_SERVE_GRPC_MAX_MESSAGE_SIZE"  # Serve's gRPC proxy: max send/receive message bytes


def load_serve_config(
    path: Path,
    http_port: int | None = None,
    grpc_port: int | None = None,
    placement: Placement | None = None,
    ray_proxy: bool = False,
    host: str | None = None,
    tls: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """The YAML with `placement` applied (serving.config.placement_overlay) and optional port and host overrides
    (tests run beside a developer's own server): they move Ray Serve's proxy and every direct listener alike.
    `tls` (cert, key) goes to every direct listener; Ray Serve's gRPC proxy cannot serve TLS, so a config without
    direct listeners is refused, as is a key Ray Serve or imgserve does not know (serving.serve_file)."""
    config = yaml.safe_load(path.read_text())
    check_keys(config, str(path))
    if placement is not None:
        config = apply_placement(config, placement, ray_proxy)
    if http_port is not None:
        config.setdefault("http_options", {})["port"] = http_port
    if grpc_port is not None and "grpc_options" in config:
        config["grpc_options"]["port"] = grpc_port
    if host is not None:
        config.setdefault("http_options", {})["host"] = host
    directs = list(direct_ingress_args(app.get("args") for app in config.get("applications", [])))
    for direct in directs:
        listeners = DirectIngressOptions.model_validate(direct)  # its defaults say which listeners are on
        if http_port is not None and listeners.http_port is not None:
            direct["http_port"] = http_port
        if grpc_port is not None and listeners.grpc_port is not None:
            direct["grpc_port"] = grpc_port
        if host is not None:
            direct["host"] = host
        if tls is not None:
            direct["tls_cert"], direct["tls_key"] = (str(Path(name).resolve()) for name in tls)
    if tls is not None and (not directs or config.get("proxy_location") != "Disabled"):
        raise StartRefused(
            "TLS (--tls-cert/--tls-key) is served by the Ingress's own listeners; Ray Serve's proxy (--ray-proxy, "
            "or a config with a proxy) cannot serve gRPC over TLS. Run without --ray-proxy, or terminate TLS in "
            "front of the proxy."
        )
    return config


def listener_binds(config: dict[str, Any], ray_address: str | None = None) -> list[tuple[str, str]]:
    """(listener, host it binds) for everything the server opens. Ray started here (no `ray_address`) binds
    loopback, Serve's gRPC proxy included (`ray_worker_setup`); on a Ray cluster, Serve binds every interface."""
    if ray_address:
        host = ray_address.split("://")[-1].rsplit(":", 1)[0] if ray_address not in ("auto", "local") else "unknown"
        binds = [(f"Ray cluster (RAY_ADDRESS={ray_address})", host), ("Ray Serve replicas' gRPC servers", "::")]
    else:
        binds = [("Ray (GCS, raylet, object manager, agents, workers, Serve replicas)", LOOPBACK)]
    for listener in listener_ports(config):
        if listener.direct:
            bind = ("imgserve listeners (direct_ingress)", listener.host)
        elif listener.what == "Ray Serve gRPC proxy" and ray_address:
            bind = (listener.what, "::")
        else:
            bind = (listener.what, listener.host)
        if bind not in binds:
            binds.append(bind)
    return binds


def resolve_auth(binds: list[tuple[str, str]], env: dict[str, str] | None = None) -> Literal["required", "off"]:
    """IMGSERVE_AUTH for these listeners (serving.security.settings); StartRefused when auth is off but a
    listener binds beyond loopback."""
    try:
        settings = SecuritySettings.from_env(env)
    except ValueError as exc:  # a value that is not valid: named by check_settings' one line
        raise refusal(exc) from None
    try:
        return settings.effective_auth([host for _, host in binds])
    except ValueError as exc:
        exposed = "; ".join(f"{name} on {host}" for name, host in binds if not is_loopback_host(host))
        raise StartRefused(f"{exc} Exposed: {exposed}.") from exc


def check_tls_files(cert: str, key: str) -> None:
    """Load the pair once here, so a wrong file stops the start with a clear message, not a failing replica."""
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise StartRefused(f"cannot use --tls-cert {cert} / --tls-key {key}: {exc}") from exc


def ray_metrics_port() -> int | None:
    """IMGSERVE_RAY_METRICS_PORT: the port of Ray's own metrics (`ray_serve_*`) on a Ray started here, for a
    Prometheus target that survives restarts (deploy/README.md); unset: a port Ray picks."""
    value = os.environ.get("IMGSERVE_RAY_METRICS_PORT", "").strip()
    if not value:
        return None
    if not value.isdecimal() or not 0 < int(value) < 65536:
        raise refuse("IMGSERVE_RAY_METRICS_PORT", value, "expected a port number (1-65535)")
    return int(value)


def prepare_environment(folder: Path | None = None) -> str:
    """Env vars every Ray worker inherits: no usage stats, one Prometheus multiprocess directory, and Serve's gRPC
    proxy limited to the HTTP body limit (Ray's default message limit is 2 GiB; the direct listeners already use
    `max_request_bytes`), and glibc's malloc arenas capped (`serving.memory`: MALLOC_ARENA_MAX is read when each
    process starts). Read by a Ray started here; a cluster joined with --address keeps its own setting."""
    from serving.config.settings import ServerSettings
    from serving.memory import arena_cap

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if arena_cap() > 0:
        os.environ.setdefault("MALLOC_ARENA_MAX", str(arena_cap()))
    os.environ.setdefault(GRPC_MAX_MESSAGE_ENV, str(ServerSettings.from_env().max_request_bytes))
    metrics_dir = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="imgserve-metrics-", dir=folder)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    return metrics_dir


def prepare_ray_network(exposed: bool, grpc_proxy_host: str, temp_dir: Path) -> str:
    """Env vars for a Ray started here (read before `import ray`, inherited by its daemons and workers): a
    loopback node address, where `ray_worker_setup` binds Serve's gRPC servers, and Ray's token auth whenever
    the server is exposed (a generated token, 0600 in Ray's temp dir, unless RAY_AUTH_TOKEN/_PATH give one).
    Returns RAY_AUTH_MODE."""
    # Ray's switch for single-machine Ray (ray/_private/services.py get_node_ip_address): node IP 127.0.0.1, and
    # Ray's C++ servers (GCS, raylet, object manager, core workers) listen on 127.0.0.1 only for that address.
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ[RAY_INTERNAL_HOST_ENV] = LOOPBACK
    os.environ[RAY_GRPC_PROXY_HOST_ENV] = grpc_proxy_host
    if exposed:
        os.environ["RAY_AUTH_MODE"] = "token"
    else:
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # loopback only; RAY_AUTH_MODE=token still works
    if os.environ["RAY_AUTH_MODE"] == "token" and not (
        os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
    ):
        path = temp_dir / TOKEN_FILE  # not Ray's default ~/.ray/auth_token: one token per server, gone with it
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    return os.environ["RAY_AUTH_MODE"]


def check_database_schema() -> None:
    """StartRefused, before Ray starts, for a job database a newer imgserve wrote (each replica refused it with a
    traceback and the deploy failed); a database that does not exist yet or cannot be reached now is the replicas'
    to make or report."""
    from serving.jobs.database import NewerSchemaError, check_schema_known, create_store_engine, current_revision
    from serving.jobs.settings import JobSettings

    try:
        engine = create_store_engine(JobSettings.from_env().database_url)
        try:
            revision = current_revision(engine)
        finally:
            engine.dispose()
    except Exception:  # noqa: BLE001 - unreachable or not made yet: the replicas say so
        return
    try:
        check_schema_known(revision)
    except NewerSchemaError as exc:
        raise StartRefused(str(exc)) from None


def print_key_hint() -> None:
    """With auth required and no key yet, say how to make the first one (the database is the root of trust)."""
    try:
        from serving.jobs.database import open_job_database
        from serving.security.keys import KeyStore

        engine = open_job_database()
        active = KeyStore(engine).count_active()
        engine.dispose()
    except Exception as exc:  # noqa: BLE001 - the replicas report the database themselves
        print(f"imgserve: cannot read API keys yet ({type(exc).__name__}: {exc})", flush=True)
        return
    if active == 0:
        print(
            "imgserve: auth is required and there is no API key yet: create one with\n"
            "  imgserve keys create --name admin --role admin --tenant default",
            flush=True,
        )


def run_server(
    config_path: Path,
    http_port: int | None = None,
    grpc_port: int | None = None,
    num_cpus: int | None = None,
    placement: Literal["auto"] | Placement = "auto",
    ray_proxy: bool = False,
    host: str | None = None,
    tls_cert: str | None = None,
    tls_key: str | None = None,
) -> int:
    """Blocking: start Ray + Serve, deploy, print where it listens, shut down cleanly on SIGINT/SIGTERM/SIGHUP. Returns
    the exit status: 2 when the configuration is refused (nothing was started)."""
    chosen, why = choose_placement(placement)
    print(f"imgserve: placement {chosen} ({why}); --placement local|graph chooses", flush=True)
    ray_address = os.environ.get("RAY_ADDRESS") or None
    try:
        tls_cert = tls_cert or os.environ.get("IMGSERVE_TLS_CERT") or None
        tls_key = tls_key or os.environ.get("IMGSERVE_TLS_KEY") or None
        if (tls_cert is None) != (tls_key is None):
            raise StartRefused("--tls-cert and --tls-key (IMGSERVE_TLS_CERT/IMGSERVE_TLS_KEY) go together")
        tls = (tls_cert, tls_key) if tls_cert and tls_key else None
        if tls is not None:
            check_tls_files(*tls)
        check_settings()  # IMGSERVE_* settings every replica reads: a bad value is said here, not in a replica
        ray_metrics_port()
        if host is not None:
            check_host(host)
        try:
            raw = load_serve_config(config_path, http_port, grpc_port, chosen, ray_proxy, host, tls)
        except (OSError, yaml.YAMLError, ValidationError) as exc:  # ValidationError: args.direct_ingress's values
            raise refuse("--config", config_path, one_line(exc)) from None
        check_start(raw)  # a listener to connect to, valid args, batch waits within the queue budget
        from serving.config.settings import ServerSettings

        for warning in proxy_warnings(raw, ServerSettings.from_env().body_read_timeout_s):
            print(f"imgserve: warning: {warning}", file=sys.stderr, flush=True)
        binds = listener_binds(raw, ray_address)
        auth = resolve_auth(binds)
        if auth == "required":
            check_jwt_files()  # read by every Ingress replica's authenticator
        clashes = shared_ports(raw)
        if clashes:
            raise StartRefused(f"{'; '.join(clashes)}: give each listener its own port (--http-port/--grpc-port)")
        # on a cluster, the nodes' addresses and ports are not ours to probe
        check_database_schema()
        busy, unbindable = listener_problems(raw) if ray_address is None else ([], [])
        if unbindable:
            raise StartRefused(f"cannot listen: {'; '.join(unbindable)} (--host must be an address of this machine)")
        if busy:
            raise StartRefused(
                f"{'; '.join(busy)}: already in use (another `imgserve serve`, or another program). Stop it, or "
                "choose other ports with --http-port/--grpc-port"
            )
    except StartRefused as exc:
        print(f"imgserve: refusing to start: {exc}", file=sys.stderr, flush=True)
        return 2
    os.environ["IMGSERVE_AUTH"] = auth  # every replica inherits the resolved mode
    if auth == "required":
        print_key_hint()
    # Removed should the start fail before Ray runs; a Ray of our own that failed keeps its logs (new_ray_folder)
    with new_ray_folder(own_ray=ray_address is None) as temp_dir:
        prepare_environment(temp_dir)  # its metrics folder inside Ray's: removed with it
        init_options: dict[str, Any] = {}
        if ray_address is None:
            exposed = any(not is_loopback_host(bind) for _, bind in binds)
            http_host = (raw.get("http_options") or {}).get("host", LOOPBACK)
            ray_auth = prepare_ray_network(exposed, http_host, temp_dir)
            init_options["runtime_env"] = {"worker_process_setup_hook": WORKER_SETUP_HOOK}
            print(f"imgserve: Ray listens on {LOOPBACK} only (Ray token auth: {ray_auth})", flush=True)
        from serving.grpc.stubs import ensure_generated

        ensure_generated()  # the gRPC proxy imports the generated servicer functions named in the config
        import ray

        # Ray's CPUs are a scheduling budget, not cores: replicas ask fractions, real threads are set per stage.
        cpus = num_cpus or max(4, 2 * (os.cpu_count() or 1))
        lean = ray_address is None and lean_ray_enabled()
        if lean:
            init_options["_system_config"] = LEAN_SYSTEM_CONFIG
            block_unused_modules()
        if ray_address is None:  # a Ray of our own: its CPU budget, dashboard, session folder and metrics port
            init_options |= {"num_cpus": cpus, "include_dashboard": False, "_temp_dir": str(temp_dir)}
            if metrics_port := ray_metrics_port():
                init_options["_metrics_export_port"] = metrics_port
        elif num_cpus:  # joining a cluster: its nodes say what they have (Ray refuses num_cpus here)
            print("imgserve: --num-cpus is ignored when joining a Ray cluster (RAY_ADDRESS)", file=sys.stderr)
        ray.init(namespace="serve", logging_level=logging.WARNING, **init_options)
        stop = SignalFlag()
        for sig in STOP_SIGNALS:
            signal.signal(sig, stop.request)
        logs_done = threading.Event()
        follower: WorkerLogFollower | None = None
        if lean:
            print(f"imgserve: stopped Ray's {', '.join(trim_head_processes())} (one machine; {LEAN_ENV}=0 keeps them)")
            worker_logs = logs_dir()
            if worker_logs is not None:
                follower = WorkerLogFollower(worker_logs, logs_done)
                follower.start()
    handed_over = False
    try:
        node_ip = ray.util.get_node_ip_address()
        if ray_address is None and not is_loopback_host(node_ip):
            raise RuntimeError(f"Ray started on {node_ip}, not loopback: stopping (its listeners would be exposed)")
        try:
            where = run_in_worker(deploy_serve, stop, raw, deploy_timeout_s())  # Serve's imports stay out of here
        except StartRefused as exc:  # Ray Serve's own schema (serve_file.check_serve_schema): nothing deployed
            print(f"imgserve: refusing to start: {exc}", file=sys.stderr, flush=True)
            return 2
        if where is None:
            return 0
        banner = "auth required" if auth == "required" else "auth OFF (loopback only)"
        print(f"imgserve is ready: {where} (placement {chosen}, {banner})", flush=True)
        if lean and follower is not None and not stop.is_set():
            handed_over = True
            hand_over_to_supervisor(follower, logs_done, temp_dir, stop)  # returns only if a stop came first
        while not stop.is_set():
            time.sleep(0.5)
    finally:
        if handed_over and not stop.is_set():  # execv failed: stop Ray here
            logger.error("could not hand over to serving.ray_supervisor; stopping")
        print("imgserve: shutting down", flush=True)
        try:
            # Bounded: a Ray that lost its raylet never runs the task, and the process must still exit.
            run_in_worker(shutdown_serve, None, timeout_s=serve_shutdown_timeout_s())
        finally:
            ray.shutdown()
            logs_done.set()
            clean_up_ray_folder(temp_dir, stop.is_set(), own_ray=ray_address is None, token=temp_dir / TOKEN_FILE)
    return 0
