"""Job webhooks: a signed JSON POST when a job ends (completed, failed, cancelled), retried with backoff.

Targets: the URL is checked when the job is submitted and again before every attempt
(`serving.security.egress`): every address its host resolves to must be public, or allow-listed through
`IMGSERVE_WEBHOOK_ALLOW`; the POST goes to one of those checked addresses (the original `Host` header, and for
https the original name as SNI and for the certificate), so a DNS answer that changes after the check (DNS
rebinding) reaches nothing. Redirects are never followed: a 3xx is a failed delivery. No proxy from the
environment is used (a proxy would resolve the name again).

Signatures: `X-Imgserve-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of f"{t}." + raw body>`, made afresh for
every attempt with the job's secret (`secret_for(job)`; by default `IMGSERVE_WEBHOOK_SECRET`). Receivers check
it with `verify`, which rejects timestamps more than `tolerance_s` away from now (replays).

Every attempt is a row in `webhook_deliveries` holding only its outcome: the HTTP status class of the answer
("2xx".."5xx"), or "no_response", or "refused" (the target failed the check; permanent). Never the error text
of a connection: that would make `/events` an oracle for what answers where. The job's `webhook_state` turns
`delivered` in the same transaction as the successful attempt, so a restarted worker resumes unfinished
deliveries and never repeats a finished one; each attempt is claimed by one job loop (`deliver`), so replicas
sharing the store do not POST a notification twice. `X-Imgserve-Delivery` is the same for every attempt of one
notification: receivers can drop the rare duplicate (a crash between the receiver's 2xx and our commit).
"""

import asyncio
import hashlib
import hmac
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from serving.errors import BadRequestError
from serving.jobs.records import JobRecord
from serving.jobs.settings import JobSettings
from serving.jobs.work_queue import WorkQueue
from serving.security.egress import ResolvedTarget, Resolver, check_webhook_url

logger = logging.getLogger("imgserve.jobs")
SIGNATURE_HEADER = "X-Imgserve-Signature"
RETRYABLE_4XX = {408, 425, 429}
DEFAULT_TOLERANCE_S = 300
CLAIM_MARGIN_S = 30.0  # a claim outlasts its attempt (bounded by webhook_timeout_s) by this much
Secrets = bytes | tuple[bytes, ...] | None  # a job's signing secret(s): after a rotation, the new and the old
SecretFor = Callable[[JobRecord], Secrets]


def _mac(body: bytes, secret: bytes, timestamp: int) -> str:
    return hmac.new(secret, f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign(body: bytes, secret: bytes | tuple[bytes, ...], timestamp: int | None = None) -> str:
    """The signature header value: `t=<unix seconds>,v1=<hex HMAC-SHA256 over f"{t}." + body>`, one `v1` per
    secret (a receiver accepts the delivery when one matches its secret)."""
    t = int(time.time()) if timestamp is None else int(timestamp)
    keys = (secret,) if isinstance(secret, bytes) else secret
    return ",".join([f"t={t}", *(f"v1={_mac(body, key, t)}" for key in keys)])


def verify(
    body: bytes, secret: bytes, header: str | None, tolerance_s: float = DEFAULT_TOLERANCE_S, now: float | None = None
) -> bool:
    """What a receiver does: the timestamp is within `tolerance_s` of now (else a replay, or a stale request) and
    one `v1` signature matches the raw body, compared in constant time."""
    if not header:
        return False
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
    if timestamp is None or not signatures:
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = _mac(body, secret, timestamp)
    return any(hmac.compare_digest(expected, s) for s in signatures)


def status_class(code: int) -> str:
    return f"{code // 100}xx"


def payload(job: JobRecord) -> dict[str, Any]:
    counts = {"total": job.total, **{k: job.counts.get(k, 0) for k in ("done", "failed", "cancelled")}}
    return {
        "event": f"job.{job.status}",
        "job_id": job.id,
        "status": job.status,
        "counts": counts,
        "model": job.model,
        "stages": list(job.stages),
        "error": job.error,
        "created_at": job.created_at,
        "finished_at": job.finished_at,
        "status_url": f"/v1/jobs/{job.id}",
        "results_url": f"/v1/jobs/{job.id}/results",
    }


def default_client(settings: JobSettings) -> httpx.AsyncClient:
    """No redirects, no proxy from the environment, no kept-alive connections (each attempt connects to the
    address it just checked, and a TLS connection verified for one name is never reused for another)."""
    return httpx.AsyncClient(
        timeout=settings.webhook_timeout_s,
        follow_redirects=False,
        trust_env=False,
        limits=httpx.Limits(max_keepalive_connections=0),
    )


class WebhookSender:
    def __init__(
        self,
        queue: WorkQueue,
        settings: JobSettings,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        secret_for: SecretFor | None = None,
        resolver: Resolver | None = None,
        clock: Callable[[], float] = time.time,
    ):
        """`secret_for(job)`: the job's signing secret (None: unsigned); the global secret unless given.
        `resolver(host, port)`: addresses of a host (default getaddrinfo); `clock`: the signature's time."""
        self.queue, self.settings, self.sleep, self.clock = queue, settings, sleep, clock
        self.client = client or default_client(settings)
        self.secret_for: SecretFor = secret_for or (lambda job: settings.secret_bytes())
        self.resolver = resolver
        self.allow = settings.webhook_allow_list()
        self.owner = f"{socket.gethostname()[:48]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"  # this loop, in claims

    def _request(self, job: JobRecord) -> tuple[bytes, dict[str, str], str]:
        body = json.dumps(payload(job), sort_keys=True, separators=(",", ":")).encode()
        delivery_id = hashlib.sha256(f"{job.id}:{job.status}".encode()).hexdigest()[:32]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "imgserve-webhook/1",
            "X-Imgserve-Event": f"job.{job.status}",
            "X-Imgserve-Delivery": delivery_id,
        }
        return body, headers, delivery_id

    async def _post(self, target: ResolvedTarget, body: bytes, headers: dict[str, str]) -> int | None:
        """POST to the checked addresses in turn until one connects: its status code (the answer's body is never
        read), or None when none answered."""
        extensions = {"sni_hostname": target.server_name} if target.scheme == "https" else {}
        headers = {**headers, "Host": target.host_header}
        for address in target.addresses:
            try:
                async with self.client.stream(
                    "POST",
                    target.pinned_url(address),
                    content=body,
                    headers=headers,
                    extensions=extensions,
                    follow_redirects=False,
                ) as response:
                    return response.status_code
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                logger.info("webhook to %s (%s) did not connect: %r", target.host, address, exc)
            except httpx.HTTPError as exc:
                logger.info("webhook to %s (%s) got no answer: %r", target.host, address, exc)
                return None
        return None

    async def _attempt(
        self, job: JobRecord, body: bytes, headers: dict[str, str], secret: Secrets
    ) -> tuple[int | None, str, bool]:
        """(status code, outcome class, permanent failure) of one POST; the class is "2xx" when delivered."""
        assert job.webhook_url is not None
        try:
            target = await asyncio.to_thread(check_webhook_url, job.webhook_url, self.allow, self.resolver)
        except BadRequestError:
            logger.warning("webhook of job %s refused: its target is not a public address now", job.id)
            return None, "refused", True
        if secret:
            headers = {**headers, SIGNATURE_HEADER: sign(body, secret, int(self.clock()))}
        code = await self._post(target, body, headers)
        if code is None:
            return None, "no_response", False
        permanent = 300 <= code < 400 or (400 <= code < 500 and code not in RETRYABLE_4XX)
        return code, status_class(code), permanent

    async def deliver(self, job: JobRecord) -> bool:
        """POST the job's final state until a 2xx, a permanent failure or the attempt limit; True if delivered.
        Each attempt is claimed first (`WorkQueue.claim_webhook`, for one attempt's time): while another job loop
        holds the notification this one leaves it, so two replicas never POST it both; one that died is taken
        over when its claim runs out. The attempt number is counted after the claim."""
        if not job.webhook_url or await asyncio.to_thread(self.queue.webhook_state, job.id) != "pending":
            return False
        body, headers, delivery_id = self._request(job)
        limit = self.settings.webhook_max_attempts
        lease_s = self.settings.webhook_timeout_s + CLAIM_MARGIN_S
        while True:
            made = await asyncio.to_thread(self.queue.delivery_attempts, job.id, delivery_id)
            if made >= limit:
                break
            if made:
                await self.sleep(self.settings.webhook_backoff_s * 2 ** (made - 1))
            if not await asyncio.to_thread(self.queue.claim_webhook, job.id, self.owner, lease_s):
                return False  # another loop is delivering it
            attempt = await asyncio.to_thread(self.queue.delivery_attempts, job.id, delivery_id) + 1
            if attempt > limit:
                break
            start = time.perf_counter()
            # read for every attempt (a retry after a rotation signs with the new secret too); may read the database
            secret = await asyncio.to_thread(self.secret_for, job)
            try:  # the whole attempt, the target's address check included: httpx's timeout bounds each read only,
                # a receiver may trickle its answer, and the claim lasts the timeout plus CLAIM_MARGIN_S
                async with asyncio.timeout(self.settings.webhook_timeout_s):
                    code, outcome, permanent = await self._attempt(job, body, headers, secret)
            except TimeoutError:
                logger.info(
                    "webhook of job %s: no complete answer within %.0f s", job.id, self.settings.webhook_timeout_s
                )
                code, outcome, permanent = None, "no_response", False
            delivered = outcome == "2xx"
            final = "delivered" if delivered else "failed" if permanent or attempt == limit else None
            row = {
                "job_id": job.id,
                "delivery_id": delivery_id,
                "event": f"job.{job.status}",
                "attempt": attempt,
                "url": job.webhook_url,
                "status_code": code,
                "error": None if delivered else outcome,  # the outcome class only, never an error message
                "delivered": delivered,
                "duration_ms": (time.perf_counter() - start) * 1000.0,
            }
            await asyncio.to_thread(self.queue.record_delivery, row, final)
            if final:
                logger.info("webhook for job %s %s after %d attempt(s)", job.id, final, attempt)
                return delivered
        await asyncio.to_thread(self.queue.close_webhook, job.id, "failed")  # attempts spent before a restart
        return False

    async def close(self) -> None:
        await self.client.aclose()
