"""Webhook sender: signed POSTs, retried with exponential backoff, every attempt recorded.

Signed the Standard Webhooks way (https://www.standardwebhooks.com/), so receivers verify
with its libraries in any language (or batchq.webhooks.verify):
  webhook-id         the event id (the same on every retry: receivers drop repeats by it)
  webhook-timestamp  Unix seconds when this attempt was sent
  webhook-signature  `v1,<base64 HMAC-SHA256(key, "{id}.{timestamp}.{body}")>`, one per
                     secret, space separated (app.dispatch.webhook_secrets)
`X-Batchq-Event` names the event type for routing; it is not signed (the body's `type` is).

Deliveries go only where app.dispatch.guarded_transport lets them (public addresses, checked
at connect time), redirects are not followed, and any failure at all — a refusal, a network
error, a non-2xx answer, an exception nobody foresaw — is one failed attempt on the record,
retried with backoff until webhook_max_attempts: no webhook stays pending unseen.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import httpcore
import httpx

from batchq.webhooks import sign

from app.clock import Clock
from app.config import Settings
from app.dispatch.guarded_transport import GuardedTransport
from app.dispatch.webhook_secrets import SigningSecrets
from app.domain.models import Webhook
from app.domain.rules import backoff_delay
from app.services.callback_guard import Refused
from app.store.base import Store
from app.telemetry.tracing import Tracing

log = logging.getLogger(__name__)
USER_AGENT = "batchq-webhooks/1"
# What a receiver that is down, slow or misbehaving causes; anything else is logged with its traceback.
NETWORK_ERRORS = (httpx.HTTPError, httpcore.NetworkError, httpcore.TimeoutException, httpcore.ProtocolError,
                  httpcore.UnsupportedProtocol)  # fmt: skip


def webhook_client(settings: Settings) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=GuardedTransport(settings.allow_private_callbacks),
        timeout=settings.webhook_timeout_s,
        follow_redirects=False,
        trust_env=False,
    )


def signed_headers(webhook: Webhook, body: bytes, secrets: list[str], timestamp: int) -> httpx.Headers:
    headers = httpx.Headers(webhook.headers)  # validated at creation; an older record may still hold anything
    headers.setdefault("User-Agent", USER_AGENT)
    headers.update({
        "Content-Type": "application/json",
        "X-Batchq-Event": webhook.event_type,
        "webhook-id": webhook.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(sign(secret, webhook.id, timestamp, body) for secret in secrets),
    })  # fmt: skip
    return headers


class WebhookSender:
    def __init__(
        self, store: Store, settings: Settings, clock: Clock, client: httpx.AsyncClient | None = None,
        tracing: Tracing | None = None,
    ):  # fmt: skip
        self.store = store
        self.clock = clock
        self.settings = settings
        self.secrets = SigningSecrets(settings, store.installation)
        self.client = client or webhook_client(settings)
        self.tracing = tracing or Tracing()

    async def close(self) -> None:
        await self.client.aclose()

    async def step(self) -> int:
        secrets = await self.secrets.current()  # before claiming: a store that cannot answer holds nothing back
        # Hold claimed webhooks long enough for one delivery attempt, so another replica
        # does not send the same one meanwhile.
        due = await self.store.claim_due_webhooks(self.clock(), 20, hold_s=self.settings.webhook_timeout_s * 3)
        if due:
            await asyncio.gather(*(self.deliver(w, secrets) for w in due))
        return len(due)

    async def deliver(self, webhook: Webhook, secrets: list[str]) -> None:
        started = time.time()
        record: dict[str, Any] = {"attempt": webhook.attempts + 1, "at": self.clock()}
        # In the batch's trace (its traceparent came with the headers: app.services.engine).
        attributes = {"batchq.batch_id": webhook.batch_id, "batchq.event_id": webhook.id, "batchq.attempt": record["attempt"]}
        parent = next((v for k, v in webhook.headers.items() if k.lower() == "traceparent"), None)
        with self.tracing.span(f"batchq.webhook {webhook.event_type}", parent, "client", attributes) as span:
            try:
                body = json.dumps(webhook.body, separators=(",", ":"), sort_keys=True).encode()
                headers = signed_headers(webhook, body, secrets, int(time.time()))
                traceparent = self.tracing.traceparent()  # this delivery's span, a child of the batch's
                if traceparent:
                    headers["traceparent"] = traceparent
                response = await self.client.post(webhook.url, content=body, headers=headers)
                record["status_code"] = response.status_code
                span.set_attribute("http.response.status_code", response.status_code)
                ok = 200 <= response.status_code < 300
                if not ok:
                    record["error"] = f"HTTP {response.status_code}" + (
                        " (redirects are not followed)" if 300 <= response.status_code < 400 else ""
                    )
            except Refused as exc:
                ok = False
                record["error"] = f"refused: {exc}"
            except Exception as exc:  # noqa: BLE001 - whatever went wrong, it is this attempt's outcome
                ok = False
                record["error"] = f"{type(exc).__name__}: {exc}"
                if not isinstance(exc, NETWORK_ERRORS):
                    log.warning("webhook %s of batch %s: unexpected error while sending", webhook.id, webhook.batch_id,
                                exc_info=exc, extra={"batch_id": webhook.batch_id})  # fmt: skip
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
