"""Verify webhook deliveries signed the Standard Webhooks way.

Headers: `webhook-id`, `webhook-timestamp` (Unix seconds) and `webhook-signature`, a
space-separated list of `v1,<base64 HMAC-SHA256>` over `"{id}.{timestamp}.{raw body}"`
(several while a secret is being rotated). Secrets are `whsec_<base64 key>`.

    from batchq.webhooks import verify, WebhookVerificationError

    try:
        event = verify(os.environ["BATCHQ_WEBHOOK_SECRET"], request.headers, raw_body)
    except WebhookVerificationError:
        return 400

Verify the raw bytes as received, before any JSON parsing, and use `webhook-id` to drop
repeats: delivery is at least once.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

SECRET_PREFIX = "whsec_"
DEFAULT_TOLERANCE_S = 300.0


class WebhookVerificationError(Exception):
    """Missing headers, a timestamp outside the tolerance, or no signature that matches."""


def secret_key(secret: str | bytes) -> bytes:
    """The HMAC key of a secret: `whsec_<base64>` (or bare base64) decoded; bytes are the key itself."""
    if isinstance(secret, bytes):
        key = secret
    else:
        text = secret.strip()
        text = text[len(SECRET_PREFIX):] if text.startswith(SECRET_PREFIX) else text
        try:
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("a webhook secret is whsec_ followed by base64") from exc
    if not key:
        raise ValueError("a webhook secret must not be empty")
    return key


def sign(secret: str | bytes, msg_id: str, timestamp: int | str, body: bytes | str) -> str:
    """The `v1,<base64>` signature of one delivery (what the sender puts in `webhook-signature`)."""
    raw = body.encode() if isinstance(body, str) else body
    content = f"{msg_id}.{timestamp}.".encode() + raw
    digest = hmac.new(secret_key(secret), content, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def verify(
    secret: str | bytes | Sequence[str | bytes],
    headers: Mapping[str, str],
    body: bytes | str,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> Any:
    """Check a delivery and return its parsed JSON body; raise WebhookVerificationError if it fails.

    `secret` may be several secrets (yours while rotating): one matching signature is enough.
    `headers` is any mapping of the request's headers (names in any case).
    """
    secrets = [secret] if isinstance(secret, (str, bytes)) else list(secret)
    keys = [secret_key(s) for s in secrets]
    if not keys:
        raise ValueError("give at least one webhook secret")
    lower = {str(k).lower(): str(v) for k, v in headers.items()}
    msg_id, stamp, signatures = lower.get("webhook-id"), lower.get("webhook-timestamp"), lower.get("webhook-signature")
    if not (msg_id and stamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature header")
    try:
        timestamp = int(stamp.strip())
    except ValueError:
        raise WebhookVerificationError("webhook-timestamp is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise WebhookVerificationError("webhook-timestamp is outside the tolerance (a replay, or a clock far off)")
    raw = body.encode() if isinstance(body, str) else body
    content = f"{msg_id}.{stamp.strip()}.".encode() + raw
    expected = [hmac.new(key, content, hashlib.sha256).digest() for key in keys]
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version != "v1":
            continue  # another scheme (e.g. v1a, asymmetric): not ours to check
        try:
            given = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            continue
        if any(hmac.compare_digest(given, e) for e in expected):
            return json.loads(raw) if raw else None
    raise WebhookVerificationError("no matching signature")
