"""Job webhooks: a signed JSON POST when a job ends (completed, failed, cancelled), retried with backoff.

The body is signed with HMAC-SHA256 under the configured secret; the header is
`X-Imgserve-Signature: sha256=<hex>`. Every attempt is a row in `webhook_deliveries`; the job's
`webhook_state` turns `delivered` in the same transaction as the successful attempt, so a restarted worker
resumes unfinished deliveries and never repeats a finished one. `X-Imgserve-Delivery` is the same for every
attempt of one notification: receivers can drop the rare duplicate (a crash between the receiver's 2xx and
our commit).
"""

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from serving.jobs.records import JobRecord
from serving.jobs.settings import JobSettings
from serving.jobs.work_queue import WorkQueue

logger = logging.getLogger("imgserve.jobs")
SIGNATURE_HEADER = "X-Imgserve-Signature"
RETRYABLE_4XX = {408, 425, 429}


def sign(body: bytes, secret: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(body: bytes, secret: bytes, header: str | None) -> bool:
    """What a receiver does: recompute the signature over the raw body and compare in constant time."""
    return header is not None and hmac.compare_digest(sign(body, secret), header)


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


class WebhookSender:
    def __init__(
        self,
        queue: WorkQueue,
        settings: JobSettings,
        client: httpx.AsyncClient | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ):
        self.queue, self.settings, self.sleep = queue, settings, sleep
        self.client = client or httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False)

    def _request(self, job: JobRecord) -> tuple[bytes, dict[str, str], str]:
        body = json.dumps(payload(job), sort_keys=True, separators=(",", ":")).encode()
        delivery_id = hashlib.sha256(f"{job.id}:{job.status}".encode()).hexdigest()[:32]
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "imgserve-webhook/1",
            "X-Imgserve-Event": f"job.{job.status}",
            "X-Imgserve-Delivery": delivery_id,
        }
        secret = self.settings.secret_bytes()
        if secret:
            headers[SIGNATURE_HEADER] = sign(body, secret)
        return body, headers, delivery_id

    async def _attempt(self, url: str, body: bytes, headers: dict[str, str]) -> tuple[int | None, str | None, bool]:
        """(status code, error, permanent failure) of one POST."""
        try:
            response = await self.client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return None, f"{type(exc).__name__}: {exc}", False
        code = response.status_code
        if 200 <= code < 300:
            return code, None, False
        return code, f"HTTP {code}", 400 <= code < 500 and code not in RETRYABLE_4XX

    async def deliver(self, job: JobRecord) -> bool:
        """POST the job's final state until a 2xx, a permanent 4xx or the attempt limit; True if delivered."""
        if not job.webhook_url or await asyncio.to_thread(self.queue.webhook_state, job.id) != "pending":
            return False
        body, headers, delivery_id = self._request(job)
        made = await asyncio.to_thread(self.queue.delivery_attempts, job.id, delivery_id)
        limit = self.settings.webhook_max_attempts
        for attempt in range(made + 1, limit + 1):
            if attempt > 1:
                await self.sleep(self.settings.webhook_backoff_s * 2 ** (attempt - 2))
            start = time.perf_counter()
            code, error, permanent = await self._attempt(job.webhook_url, body, headers)
            delivered = error is None
            final = "delivered" if delivered else "failed" if permanent or attempt == limit else None
            row = {
                "job_id": job.id,
                "delivery_id": delivery_id,
                "event": f"job.{job.status}",
                "attempt": attempt,
                "url": job.webhook_url,
                "status_code": code,
                "error": error,
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
