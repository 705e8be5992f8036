"""Webhook sender: signed POSTs, retried with exponential backoff, every attempt recorded.

Signature: header `X-Batchq-Signature: v1=<hex>` where hex is
HMAC-SHA256(secret, f"{timestamp}.{body}") and timestamp is `X-Batchq-Timestamp`
(Unix seconds). A receiver recomputes it over the raw body and rejects old timestamps.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time

import httpx

from app.clock import Clock
from app.config import Settings
from app.domain.rules import backoff_delay
from app.domain.models import Webhook
from app.store.base import Store
from app.telemetry.tracing import Tracing

log = logging.getLogger(__name__)


def sign(secret: str, timestamp: str, body: bytes) -> str:
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "v1=" + mac.hexdigest()


def verify(secret: str, timestamp: str, body: bytes, signature: str, tolerance_s: float = 300) -> bool:
    """What a receiver does (shown here for the README and the tests)."""
    if abs(time.time() - float(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)


class WebhookSender:
    def __init__(
        self, store: Store, settings: Settings, clock: Clock, client: httpx.AsyncClient | None = None,
        tracing: Tracing | None = None,
    ):  # fmt: skip
        self.store = store
        self.clock = clock
        self.settings = settings
        self.client = client or httpx.AsyncClient(timeout=settings.webhook_timeout_s)
        self.tracing = tracing or Tracing()

    async def close(self) -> None:
        await self.client.aclose()

    async def step(self) -> int:
        # Hold claimed webhooks long enough for one delivery attempt, so another replica
        # does not send the same one meanwhile.
        due = await self.store.claim_due_webhooks(self.clock(), 20, hold_s=self.settings.webhook_timeout_s * 3)
        if due:
            await asyncio.gather(*(self.deliver(w) for w in due))
        return len(due)

    async def deliver(self, webhook: Webhook) -> None:
        body = json.dumps(webhook.body, separators=(",", ":"), sort_keys=True).encode()
        timestamp = str(int(time.time()))
        headers = {
            **webhook.headers,
            "Content-Type": "application/json",
            "User-Agent": "batchq-webhooks/1",
            "X-Batchq-Event": webhook.event_type,
            "X-Batchq-Event-Id": webhook.id,
            "X-Batchq-Timestamp": timestamp,
            "X-Batchq-Signature": sign(self.settings.webhook_secret, timestamp, body),
        }
        started = time.time()
        record: dict = {"attempt": webhook.attempts + 1, "at": self.clock()}
        # In the batch's trace (its traceparent came with the headers: app.services.engine).
        attributes = {"batchq.batch_id": webhook.batch_id, "batchq.event_id": webhook.id, "batchq.attempt": record["attempt"]}
        parent = next((v for k, v in webhook.headers.items() if k.lower() == "traceparent"), None)
        with self.tracing.span(f"batchq.webhook {webhook.event_type}", parent, "client", attributes) as span:
            traceparent = self.tracing.traceparent()  # this delivery's span, a child of the batch's
            if traceparent:
                headers = {**{k: v for k, v in headers.items() if k.lower() != "traceparent"}, "traceparent": traceparent}
            try:
                response = await self.client.post(webhook.url, content=body, headers=headers)
                record["status_code"] = response.status_code
                span.set_attribute("http.response.status_code", response.status_code)
                ok = 200 <= response.status_code < 300
                if not ok:
                    record["error"] = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                ok = False
                record["error"] = f"{type(exc).__name__}: {exc}"
            if not ok:
                span.fail(record["error"])
        record["duration_ms"] = round((time.time() - started) * 1000, 1)
        webhook.attempts += 1
        webhook.deliveries = [*webhook.deliveries, record]
        if ok:
            webhook.status = "delivered"
            webhook.delivered_at = self.clock()
            webhook.last_error = None
        else:
            webhook.last_error = record["error"]
            if webhook.attempts >= self.settings.webhook_max_attempts:
                webhook.status = "failed"
            else:
                webhook.next_attempt_at = self.clock() + backoff_delay(
                    webhook.attempts, self.settings.webhook_backoff_base_s, self.settings.webhook_backoff_max_s
                )
        await self.store.save_webhook(webhook)
