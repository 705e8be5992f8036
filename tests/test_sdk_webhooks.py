"""batchq.webhooks.verify against deliveries signed by the reference `standardwebhooks` package."""
from __future__ import annotations

import base64
import json
import time
from datetime import datetime, timezone

import pytest
from standardwebhooks import Webhook

from batchq.webhooks import WebhookVerificationError, sign, verify

SECRET = "whsec_" + base64.b64encode(b"batchq-test-secret-of-32-bytes!!").decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"the-previous-secret-0123456789ab").decode()
BODY = json.dumps({"id": "ev_1", "type": "batch.completed", "batch_id": "b1", "data": {"total": 3}}, separators=(",", ":"))


def delivery(secret: str = SECRET, msg_id: str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", at: float | None = None,
             body: str = BODY) -> dict[str, str]:
    """The headers a Standard Webhooks sender puts on a delivery."""
    moment = datetime.fromtimestamp(time.time() if at is None else at, tz=timezone.utc)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(moment.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, moment, body),
    }


def test_a_delivery_signed_by_the_reference_library_verifies():
    headers = delivery()
    assert verify(SECRET, headers, BODY.encode()) == json.loads(BODY)
    assert verify(SECRET, headers, BODY) == json.loads(BODY)  # str bodies too
    # Header names in any case (as frameworks hand them over).
    assert verify(SECRET, {k.upper(): v for k, v in headers.items()}, BODY.encode())["id"] == "ev_1"
    # Our signer agrees with the reference one.
    assert sign(SECRET, headers["webhook-id"], headers["webhook-timestamp"], BODY) == headers["webhook-signature"]


def test_any_one_of_several_signatures_or_secrets_is_enough():
    headers = delivery()
    rotated = delivery(secret=OLD_SECRET)["webhook-signature"]
    # The sender signs with the old and the new secret while rotating.
    both = {**headers, "webhook-signature": f"{rotated} {headers['webhook-signature']}"}
    assert verify(SECRET, both, BODY)["id"] == "ev_1"
    # Other schemes (v1a: asymmetric) are skipped, not a failure.
    with_v1a = {**headers, "webhook-signature": f"v1a,bm90LWNoZWNrZWQ= {headers['webhook-signature']}"}
    assert verify(SECRET, with_v1a, BODY)["id"] == "ev_1"
    # The receiver may hold several secrets while rotating.
    assert verify([OLD_SECRET, SECRET], headers, BODY)["id"] == "ev_1"
    raw_key = base64.b64decode(SECRET.removeprefix("whsec_"))
    assert verify(raw_key, headers, BODY)["id"] == "ev_1"


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda h, b: (h, b.replace("3", "4")), id="changed body"),
        pytest.param(lambda h, b: ({**h, "webhook-id": "msg_other"}, b), id="changed id"),
        pytest.param(lambda h, b: ({**h, "webhook-timestamp": str(int(h["webhook-timestamp"]) + 1)}, b), id="changed timestamp"),
        pytest.param(lambda h, b: (delivery(secret=OLD_SECRET), b), id="wrong secret"),
        pytest.param(lambda h, b: (delivery(at=time.time() - 600), b), id="too old"),
        pytest.param(lambda h, b: (delivery(at=time.time() + 600), b), id="too new"),
        pytest.param(lambda h, b: ({k: v for k, v in h.items() if k != "webhook-signature"}, b), id="no signature"),
        pytest.param(lambda h, b: ({**h, "webhook-signature": "v1,not base64!"}, b), id="garbled signature"),
        pytest.param(lambda h, b: ({**h, "webhook-timestamp": "yesterday"}, b), id="bad timestamp"),
    ],
)
def test_a_delivery_that_is_not_authentic_is_refused(tamper):
    headers, body = tamper(delivery(), BODY)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers, body)


def test_the_tolerance_is_a_setting():
    headers = delivery(at=time.time() - 600)
    assert verify(SECRET, headers, BODY, tolerance_s=900)["id"] == "ev_1"
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, delivery(), BODY, now=time.time() + 400)


def test_a_malformed_secret_is_a_configuration_error_not_a_forgery():
    for secret in ("whsec_***", [], ""):
        with pytest.raises(ValueError):
            verify(secret, delivery(), BODY)
