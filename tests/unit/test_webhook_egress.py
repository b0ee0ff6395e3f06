"""Webhooks without SSRF: targets judged by what they resolve to, the checked address is the one connected to,
no redirects, outcome-only delivery records, timestamped signatures (replays rejected).

Listeners here bind and listen but never accept: a connection attempt would complete in the kernel and wait in
the backlog, so "no connection" is checked by a non-blocking accept that finds nothing.
"""

import asyncio
import io
import ipaddress
import itertools
import socket
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from PIL import Image

from serving.errors import BadRequestError
from serving.jobs.database import create_store_engine, migrate
from serving.jobs.records import JobRecord, JobSpec, NewItem
from serving.jobs.schemas import JobEvents
from serving.jobs.settings import JobSettings
from serving.jobs.store import JobStore
from serving.jobs.webhooks import SIGNATURE_HEADER, WebhookSender, sign, verify
from serving.jobs.work_queue import WorkQueue
from serving.security.egress import REFUSED, EgressAllowList, check_webhook_url, is_public

pytestmark = pytest.mark.unit
PUBLIC = "93.184.215.14"
PUBLIC6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"
NOTHING = EgressAllowList()


# ---- helpers ---------------------------------------------------------------------------------------------
class Listener:
    """A listening TCP socket that never accepts; `connections()` drains and counts what reached it."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, port))
        self.sock.listen(64)
        self.port: int = self.sock.getsockname()[1]

    def connections(self) -> int:
        self.sock.setblocking(False)
        count = 0
        while True:
            try:
                conn, _ = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return count
            conn.close()
            count += 1

    def close(self) -> None:
        self.sock.close()


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.fixture
def loopback() -> Iterator[list[Listener]]:
    """Listeners on one port on 127.0.0.1 and (where the host has IPv6) on ::1."""
    for _ in range(20):
        v4 = Listener("127.0.0.1")
        if not _ipv6_loopback():
            listeners = [v4]
            break
        try:
            listeners = [v4, Listener("::1", v4.port)]
            break
        except OSError:
            v4.close()
    else:
        pytest.fail("no free port on both loopbacks")
    yield listeners
    for listener in listeners:
        listener.close()


class Receiver:
    """An HTTP server on 127.0.0.1 recording each POST; answers `status` with `headers`."""

    def __init__(self, status: int = 200, headers: dict[str, str] | None = None):
        self.calls: list[tuple[str, dict[str, str], bytes]] = []
        calls, answer = self.calls, (status, headers or {})

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                calls.append((self.path, dict(self.headers.items()), body))
                self.send_response(answer[0])
                for key, value in answer[1].items():
                    self.send_header(key, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


Answer = list[str] | Callable[[], list[str]]


@pytest.fixture
def dns(monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Answer], Counter[str]]:
    """getaddrinfo answering the names put in the dict (a list, or a function called per lookup; [] = NXDOMAIN)
    and counting lookups of those names; every other name or literal goes to the real resolver."""
    answers: dict[str, Answer] = {}
    lookups: Counter[str] = Counter()
    real = socket.getaddrinfo

    def fake(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name not in answers:
            return real(host, port, *args, **kwargs)
        lookups[name] += 1
        value = answers[name]
        addresses = value() if callable(value) else value
        if not addresses:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", (a, int(port), 0, 0))
            if ":" in a
            else (socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port)))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    return answers, lookups


def _refused(url: str, allow: EgressAllowList = NOTHING) -> str:
    with pytest.raises(BadRequestError) as caught:
        check_webhook_url(url, allow)
    return str(caught.value)


# ---- the policy ------------------------------------------------------------------------------------------
ACCEPTANCE_FORMS = ["127.0.0.1", "[::1]", "2130706433", "0x7f.1", "localhost."]
NON_PUBLIC_LITERALS = [
    "[::ffff:127.0.0.1]",  # IPv4-mapped loopback
    "[::ffff:10.0.0.1]",
    "[fd00::1]",  # unique local
    "[fe80::1]",  # link-local
    "[fec0::1]",  # site-local (deprecated, counts as global in ipaddress)
    "[ff02::1]",  # multicast
    "[::]",
    "[::127.0.0.1]",  # IPv4-compatible
    "[64:ff9b::7f00:1]",  # NAT64 of 127.0.0.1
    "[64:ff9b::a9fe:a9fe]",  # NAT64 of 169.254.169.254
    "[2002:7f00:1::1]",  # 6to4 of 127.0.0.1
    "[2001:0:808:808:0:0:f5ff:fffe]",  # Teredo, client 10.0.0.1
    "169.254.169.254",  # cloud metadata
    "100.64.0.1",  # CGNAT
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "192.0.0.8",
    "198.18.0.1",
    "224.0.0.1",  # multicast (is_global in ipaddress on 3.11)
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "127.1",
    "0",
]


@pytest.mark.parametrize("host", ACCEPTANCE_FORMS + NON_PUBLIC_LITERALS)
def test_non_public_targets_are_refused_without_saying_where(host: str) -> None:
    message = _refused(f"http://{host}:8080/hook")
    assert message == REFUSED  # nothing about the address, nor whether the name resolved at all


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "gopher://example.com:70/",
        "http://user:pw@example.com/",
        "http://user@example.com/",
        "http:///hook",
        "http://0177.0.0.1/",  # octal: httpx refuses to parse it (getaddrinfo would read 127.0.0.1)
        "not a url",
        "",
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    assert _refused(url)


def test_every_resolved_address_must_be_public(dns) -> None:
    answers, _ = dns
    answers.update(
        {
            "internal.example": ["10.1.2.3"],
            "mixed.example": [PUBLIC, "127.0.0.1"],  # the attacker's own DNS mixes one in
            "v6.example": ["fd00::5"],
            "mapped.example": ["::ffff:192.168.0.1"],
            "meta.example": ["169.254.169.254"],
            "nx.example": [],
            "public.example": [PUBLIC, PUBLIC6],
        }
    )
    for name in ("internal", "mixed", "v6", "mapped", "meta", "nx"):
        assert _refused(f"https://{name}.example/hook") == REFUSED
    target = check_webhook_url("https://Public.Example/hook?x=1", NOTHING)
    assert target.addresses == (PUBLIC, PUBLIC6) and target.port == 443 and target.host == "public.example"
    assert target.host_header == "public.example" and target.server_name == "public.example"
    assert str(target.pinned_url(PUBLIC)) == f"https://{PUBLIC}/hook?x=1"
    assert str(target.pinned_url(PUBLIC6)) == f"https://[{PUBLIC6}]/hook?x=1"


def test_is_public() -> None:
    for text in (PUBLIC, PUBLIC6, "8.8.8.8", "::ffff:8.8.8.8", "1.1.1.1"):
        assert is_public(ipaddress.ip_address(text)), text
    for text in ("127.0.0.1", "::1", "100.127.255.255", "fc00::1", "ff0e::1", "2001:db8::1", "::ffff:0:7f00:1"):
        assert not is_public(ipaddress.ip_address(text)), text


def test_allow_list_names_addresses_ports_and_host_names(dns) -> None:
    answers, _ = dns
    answers.update(
        {
            "hooks.internal": ["10.9.9.9"],
            "hooks.internal.": ["10.9.9.9"],
            "other.internal": ["10.9.9.9"],
            "pinned.internal": ["10.7.0.1"],
        }
    )
    allow = EgressAllowList.parse("127.0.0.1:8080, [::1]:9000, 192.168.0.0/16, Hooks.Internal., pinned.internal:8443")
    check_webhook_url("http://127.0.0.1:8080/x", allow)
    check_webhook_url("http://2130706433:8080/x", allow)  # the same address, however spelt
    check_webhook_url("http://[::ffff:127.0.0.1]:8080/x", allow)  # IPv4-mapped matches the IPv4 entry
    check_webhook_url("http://[::1]:9000/x", allow)
    check_webhook_url("http://192.168.4.5:1/x", allow)  # a network: any port
    check_webhook_url("http://hooks.internal:1234/x", allow)  # a name: whatever it resolves to, any port
    check_webhook_url("http://HOOKS.internal./x", allow)
    check_webhook_url("https://pinned.internal:8443/x", allow)
    for url in (
        "http://127.0.0.1:8081/x",  # another port
        "http://127.0.0.2:8080/x",
        "http://[::1]:9001/x",
        "http://other.internal/x",  # same address, but the name is not on the list
        "https://pinned.internal/x",  # 443, not 8443
        "http://10.0.0.1/x",
    ):
        assert _refused(url, allow) == REFUSED, url


@pytest.mark.parametrize("entry", ["http://x", "a b", "[::1", "[hooks]:80", "host:70000", "10.0.0.0/33", "*.x"])
def test_bad_allow_list_entries_fail_at_startup(entry: str, tmp_path: Path) -> None:
    env = {"IMGSERVE_CACHE_DIR": str(tmp_path), "IMGSERVE_WEBHOOK_ALLOW": f"127.0.0.1,{entry}"}
    with pytest.raises(ValueError, match="IMGSERVE_WEBHOOK_ALLOW") as refused:  # named by the variable to change
        JobSettings.from_env(env)
    assert entry in str(refused.value)


def test_allow_list_from_the_environment(tmp_path: Path) -> None:
    env = {"IMGSERVE_CACHE_DIR": str(tmp_path), "IMGSERVE_WEBHOOK_ALLOW": " 10.0.0.0/8 ,hooks.internal:8443,,"}
    settings = JobSettings.from_env(env)
    assert settings.webhook_allow == ["10.0.0.0/8", "hooks.internal:8443"]
    assert len(settings.webhook_allow_list().entries) == 2
    assert JobSettings.from_env({"IMGSERVE_CACHE_DIR": str(tmp_path)}).webhook_allow_list().entries == ()


# ---- signatures ------------------------------------------------------------------------------------------
def test_signature_carries_a_timestamp_and_rejects_replays() -> None:
    body, secret, t = b'{"job_id":"j"}', b"k", 1_700_000_000
    header = sign(body, secret, t)
    assert header.startswith(f"t={t},v1=") and len(header.split("v1=")[1]) == 64
    assert verify(body, secret, header, now=t + 10)
    assert verify(body, secret, header, now=t + 300) and verify(body, secret, header, now=t - 300)
    assert not verify(body, secret, header, now=t + 301)  # replayed (or held) past the tolerance
    assert not verify(body, secret, header, now=t - 301)  # from the future
    assert verify(body, secret, header, tolerance_s=3600, now=t + 3000)
    assert not verify(body + b" ", secret, header, now=t) and not verify(body, b"other", header, now=t)
    moved = header.replace(f"t={t}", f"t={t + 100}")  # a fresh timestamp on an old signature
    assert not verify(body, secret, moved, now=t + 100)
    rotated = f"t={t},v1={'0' * 64},v1={header.split('v1=')[1]}"  # several v1: any one may match
    assert verify(body, secret, rotated, now=t)
    for bad in (None, "", "sha256=" + "0" * 64, f"v1={header.split('v1=')[1]}", f"t=x,{header.split(',')[1]}"):
        assert not verify(body, secret, bad, now=t), bad
    assert verify(body, secret, sign(body, secret))  # now, by default


# ---- delivery --------------------------------------------------------------------------------------------
@pytest.fixture
def store(tmp_path: Path) -> sa.Engine:
    engine = create_store_engine(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    migrate(engine)
    return engine


def _settings(tmp_path: Path, allow: list[str], **more: Any) -> JobSettings:
    values: dict[str, Any] = {
        "database_url": "sqlite://",
        "object_store": str(tmp_path / "objects"),
        "webhook_allow": allow,
        "webhook_secret": "global-secret",
        "webhook_backoff_s": 0.01,
        "webhook_max_attempts": 3,
        "webhook_timeout_s": 5.0,
    }
    return JobSettings(**{**values, **more})


def _finished_job(engine: sa.Engine, url: str) -> JobRecord:
    job_id = JobStore(engine).create_job(JobSpec("m", 1, ("classification",), url), [NewItem("a.jpg", "none", "")])
    queue = WorkQueue(engine)
    queue.fail_job(job_id, "test")  # a final state with a webhook to deliver
    job = queue.job(job_id)
    assert job is not None and job.webhook_state == "pending"
    return job


def _deliver(engine: sa.Engine, settings: JobSettings, job: JobRecord, **kwargs: Any) -> tuple[bool, list[Any]]:
    async def run() -> bool:
        sender = WebhookSender(WorkQueue(engine), settings, **kwargs)
        try:
            return await sender.deliver(job)
        finally:
            await sender.close()

    delivered = asyncio.run(run())
    return delivered, JobStore(engine).deliveries([job.id])


def test_dns_rebinding_after_the_check_reaches_nothing(dns, store: sa.Engine, tmp_path: Path) -> None:
    answers, lookups = dns
    listener = Listener("127.0.0.1")
    try:
        sequence = itertools.chain([[PUBLIC]], itertools.repeat(["127.0.0.1"]))
        answers["rebind.example"] = lambda: next(sequence)
        url = f"http://rebind.example:{listener.port}/hook"
        check_webhook_url(url, NOTHING)  # at submission: public
        job = _finished_job(store, url)
        delivered, rows = _deliver(store, _settings(tmp_path, []), job)
        assert not delivered and lookups["rebind.example"] == 2
        assert [(r["attempt"], r["status_code"], r["error"], r["delivered"]) for r in rows] == [
            (1, None, "refused", False)  # permanent: no retries
        ]
        assert JobStore(store).get_job(job.id).webhook_state == "failed"
        assert listener.connections() == 0
    finally:
        listener.close()


def test_delivery_connects_to_the_checked_address_with_the_original_host(dns, store: sa.Engine, tmp_path) -> None:
    answers, lookups = dns
    receiver = Receiver(200)
    try:
        answers["hooks.internal"] = ["127.0.0.1"]
        url = f"http://hooks.internal:{receiver.port}/done?x=1"
        job = _finished_job(store, url)
        secrets = {job.id: b"tenant-secret"}
        delivered, rows = _deliver(
            store, _settings(tmp_path, ["hooks.internal"]), job, secret_for=lambda j: secrets.get(j.id)
        )
        assert delivered and [(r["status_code"], r["error"]) for r in rows] == [(200, None)]
        assert lookups["hooks.internal"] == 1  # resolved once, by the check; the client connected to its answer
        ((path, headers, body),) = receiver.calls
        assert path == "/done?x=1" and headers["Host"] == f"hooks.internal:{receiver.port}"
        assert verify(body, b"tenant-secret", headers[SIGNATURE_HEADER])  # the job's secret, not the global one
        assert not verify(body, b"global-secret", headers[SIGNATURE_HEADER])
    finally:
        receiver.close()


def _self_signed(name: str, folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for DNS name `name` (it is its own CA) and its key, as PEM files."""
    pytest.importorskip("cryptography")
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{name}.crt", folder / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_https_to_the_checked_address_verifies_the_certificate_for_the_name(dns, store: sa.Engine, tmp_path) -> None:
    """Connecting to the pinned IP still sends the URL's name as SNI and checks the certificate against it."""
    answers, _ = dns
    cert_file, key_file = _self_signed("hooks.internal", tmp_path)
    receiver = Receiver(200)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert_file, key_file)
    names: list[str | None] = []
    server_side.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,misc,return-value]
    receiver.server.socket = server_side.wrap_socket(receiver.server.socket, server_side=True)
    trusted = ssl.create_default_context(cafile=str(cert_file))
    try:
        answers.update({"hooks.internal": ["127.0.0.1"], "other.internal": ["127.0.0.1"]})
        settings = _settings(tmp_path, ["hooks.internal", "other.internal"])
        good = _finished_job(store, f"https://hooks.internal:{receiver.port}/tls")
        delivered, rows = _deliver(store, settings, good, client=httpx.AsyncClient(verify=trusted))
        assert delivered and [(r["status_code"], r["error"]) for r in rows] == [(200, None)]
        assert names == ["hooks.internal"] and receiver.calls[0][1]["Host"] == f"hooks.internal:{receiver.port}"
        wrong = _finished_job(store, f"https://other.internal:{receiver.port}/tls")  # certificate is not for it
        delivered, rows = _deliver(store, settings, wrong, client=httpx.AsyncClient(verify=trusted), sleep=_no_sleep)
        assert not delivered and {r["error"] for r in rows} == {"no_response"} and len(receiver.calls) == 1
    finally:
        receiver.close()


def test_a_redirect_is_a_failed_delivery_and_is_not_followed(store: sa.Engine, tmp_path: Path) -> None:
    elsewhere = Listener("127.0.0.1")  # loopback, not on the allow-list
    receiver = Receiver(302, {"Location": f"http://127.0.0.1:{elsewhere.port}/steal"})
    try:
        job = _finished_job(store, f"http://127.0.0.1:{receiver.port}/hook")
        settings = _settings(tmp_path, [f"127.0.0.1:{receiver.port}"])
        following = httpx.AsyncClient(follow_redirects=True)  # even a client that would follow does not
        for client in (None, following):
            delivered, rows = _deliver(store, settings, job, client=client)
            assert not delivered and len(receiver.calls) == 1
            assert [(r["status_code"], r["error"], r["delivered"]) for r in rows] == [(302, "3xx", False)]
            assert elsewhere.connections() == 0
            with store.begin() as conn:  # deliver the same job again with the other client
                conn.execute(sa.text("DELETE FROM webhook_deliveries"))
                conn.execute(sa.text("UPDATE jobs SET webhook_state = 'pending'"))
            receiver.calls.clear()
    finally:
        receiver.close()
        elsewhere.close()


def test_no_answer_is_recorded_as_a_class_never_as_error_text(store: sa.Engine, tmp_path: Path) -> None:
    closed = Listener("127.0.0.1")
    port = closed.port
    closed.close()  # nothing listens there now: connection refused
    job = _finished_job(store, f"http://127.0.0.1:{port}/hook")
    delivered, rows = _deliver(store, _settings(tmp_path, [f"127.0.0.1:{port}"]), job, sleep=_no_sleep)
    assert not delivered and [(r["attempt"], r["error"]) for r in rows] == [(i, "no_response") for i in (1, 2, 3)]
    shown = JobEvents(events=[], webhook_deliveries=rows).model_dump()["webhook_deliveries"]
    assert [(d["attempt"], d["outcome"], d["status_class"]) for d in shown] == [
        (i, "failed", "no_response") for i in (1, 2, 3)
    ]
    assert all(
        set(d) == {"delivery_id", "event", "attempt", "outcome", "status_class", "at", "duration_ms"} for d in shown
    )
    old = {**rows[0], "error": "ConnectError: All connection attempts failed"}  # a row from before this change
    delivered_row = {**rows[0], "status_code": 204, "error": None, "delivered": True}
    mixed = JobEvents(events=[], webhook_deliveries=[old, delivered_row]).webhook_deliveries
    assert [d.status_class for d in mixed] == ["no_response", "2xx"]
    assert "Connect" not in JobEvents(events=[], webhook_deliveries=[old]).model_dump_json()


async def _no_sleep(seconds: float) -> None:
    return None


# ---- through the HTTP API ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, JobSettings]]:
    from serving.http.app import create_http_app
    from serving.jobs.service import JobService
    from tests.unit.tiny_models import tiny_local_service

    root = tmp_path_factory.mktemp("tiny-hooks")
    service, server = tiny_local_service(root)
    settings = _settings(root, [], database_url=f"sqlite:///{root / 'jobs.sqlite3'}")
    jobs = JobService(service, settings)
    with TestClient(create_http_app(service, jobs, server)) as client:
        yield client, settings


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 60, 30)).save(buffer, "JPEG")
    return buffer.getvalue()


def test_batch_refuses_loopback_webhooks_with_400_and_connects_nowhere(api, loopback: list[Listener]) -> None:
    client, _ = api
    port = loopback[0].port
    for host in ACCEPTANCE_FORMS:
        url = f"http://{host}:{port}/hook"
        for response in (
            client.post("/v1/batch", params={"webhook_url": url}, files=[("image", ("a.jpg", _jpeg()))]),
            client.post("/v1/batch", json={"uris": ["s3://bucket/a.jpg"], "webhook_url": url}),  # the body's URL
        ):
            assert response.status_code == 400, (url, response.text)
            assert response.json() == {"error": REFUSED, "kind": "bad_request"}
    time.sleep(0.2)
    assert [listener.connections() for listener in loopback] == [0] * len(loopback)
    assert client.get("/v1/jobs").json()["jobs"] == []  # nothing was created


def test_batch_takes_an_allow_listed_receiver(api, loopback: list[Listener], monkeypatch: pytest.MonkeyPatch) -> None:
    client, settings = api
    port = loopback[0].port
    allowed = settings.model_copy(update={"webhook_allow": [f"127.0.0.1:{port}"]})
    monkeypatch.setattr(client.app.state.jobs, "settings", allowed)  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{port}/hook"
    response = client.post("/v1/batch", params={"webhook_url": url}, files=[("image", ("a.jpg", _jpeg()))])
    assert response.status_code == 202, response.text
    refused = client.post("/v1/batch", params={"webhook_url": f"http://[::1]:{port}/hook"}, json={"uris": []})
    assert refused.status_code == 400 and refused.json()["kind"] == "bad_request"


@pytest.mark.parametrize("port", ["0", "99999", "65536"])
def test_a_port_outside_1_to_65535_is_refused_as_such(port: str) -> None:
    """:99999 was accepted (delivery then failed for ever) and :0 was checked as port 80 (a public address's)."""
    assert "port must be 1-65535" in _refused(f"http://93.184.216.34:{port}/hook")
