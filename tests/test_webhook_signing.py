"""Webhook signatures receivers verify with standard tools (issue 9): Standard Webhooks
headers, one signature per configured secret (rotation), and with none configured a secret
generated once per installation, kept in its store and shown to admin keys only."""
from __future__ import annotations

import asyncio
import base64

import httpx
import pytest
from pydantic import ValidationError
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError as StandardVerificationError

from batchq.webhooks import WebhookVerificationError, verify

from app.config import Settings
from app.main import create_app
from conftest import WEBHOOK_SECRET
from receiver import Receiver

OLD = "whsec_" + base64.b64encode(b"the-old-secret-being-retired-now").decode()
NEW = "whsec_" + base64.b64encode(b"the-new-secret-receivers-move-to").decode()
STRANGER = "whsec_" + base64.b64encode(b"a-secret-nobody-signs-with-here!").decode()


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


async def one_delivery(api, receiver) -> tuple[dict, object]:  # noqa: ANN001
    batch = await api.create({"jobs": ["A"], "on_complete": {"url": receiver.url, "headers": {"X-Tenant": "acme"}}})
    (m,) = await api.claim_until(1)
    await api.complete(m)
    (delivery,) = await receiver.wait_for(1)
    return batch, delivery


async def test_a_real_delivery_verifies_with_the_standardwebhooks_package_and_the_sdk(api, receiver):
    batch, delivery = await one_delivery(api, receiver)
    h = delivery.headers
    event = Webhook(WEBHOOK_SECRET).verify(delivery.body, h)  # the reference library, as any receiver would
    assert event["type"] == "batch.completed" and event["batch_id"] == batch["id"] and event["id"] == h["webhook-id"]
    assert verify(WEBHOOK_SECRET, h, delivery.body) == event  # the SDK's helper
    with pytest.raises(StandardVerificationError):
        Webhook(STRANGER).verify(delivery.body, h)
    with pytest.raises(WebhookVerificationError):
        verify(WEBHOOK_SECRET, h, delivery.body.replace(b"completed", b"failed"))
    # The scheme's headers, the event type for routing, the caller's own; the old scheme is gone.
    assert h["webhook-signature"].startswith("v1,") and " " not in h["webhook-signature"]
    assert h["x-batchq-event"] == "batch.completed" and h["x-tenant"] == "acme"
    assert h["content-type"] == "application/json" and h["user-agent"] == "batchq-webhooks/1"
    assert not {"x-batchq-signature", "x-batchq-timestamp", "x-batchq-event-id"} & set(h)


async def test_retries_keep_the_webhook_id_and_sign_afresh(api, receiver):
    receiver.statuses = [500]
    await api.create({"jobs": ["A"], "on_complete": {"url": receiver.url}})
    (m,) = await api.claim_until(1)
    await api.complete(m)
    first, second = await receiver.wait_for(2)
    assert first.headers["webhook-id"] == second.headers["webhook-id"] == first.json["id"]
    for d in (first, second):
        assert Webhook(WEBHOOK_SECRET).verify(d.body, d.headers) == d.json


async def test_every_configured_secret_signs_each_delivery_so_receivers_can_rotate(api_factory, receiver):
    api = await api_factory(webhook_secret=OLD, webhook_secrets=[NEW, OLD])
    _, delivery = await one_delivery(api, receiver)
    h = delivery.headers
    assert len(h["webhook-signature"].split(" ")) == 2  # OLD once, then NEW
    for secret in (OLD, NEW):  # a receiver holding either one verifies
        assert Webhook(secret).verify(delivery.body, h)["type"] == "batch.completed"
        assert verify(secret, h, delivery.body)["type"] == "batch.completed"
    with pytest.raises(StandardVerificationError):
        Webhook(STRANGER).verify(delivery.body, h)
    secrets = (await api.get("/v1/webhook-secret")).json()
    assert secrets == {"secrets": [OLD, NEW], "generated": False}


def test_secrets_are_read_from_the_environment_as_a_list(monkeypatch):
    monkeypatch.setenv("BATCHQ_WEBHOOK_SECRETS", f"{NEW} {OLD}")
    assert Settings().signing_secrets == [NEW, OLD]
    monkeypatch.setenv("BATCHQ_WEBHOOK_SECRETS", f"{NEW},{OLD}")
    assert Settings().signing_secrets == [NEW, OLD]
    monkeypatch.setenv("BATCHQ_WEBHOOK_SECRETS", f'["{OLD}"]')
    monkeypatch.setenv("BATCHQ_WEBHOOK_SECRET", NEW)
    assert Settings().signing_secrets == [NEW, OLD]
    monkeypatch.delenv("BATCHQ_WEBHOOK_SECRETS")
    monkeypatch.delenv("BATCHQ_WEBHOOK_SECRET")
    assert Settings().signing_secrets == []  # none: the installation's generated one is used


@pytest.mark.parametrize(
    "secret, words",
    [
        ("change-me", "whsec_"),
        ("whsec_c2hvcnQ=", "at least 24"),  # b"short"
        ("whsec_***not base64***", "base64"),
        ("whsec_", "base64"),
    ],
)
def test_guessable_or_unusable_secrets_are_refused_at_start(secret, words):
    with pytest.raises(ValidationError) as one:
        Settings(webhook_secret=secret)
    assert words in str(one.value)
    with pytest.raises(ValidationError):
        Settings(webhook_secrets=[NEW, secret])


async def test_without_a_configured_secret_one_is_generated_once_and_kept_in_the_store(api_factory, receiver):
    api = await api_factory(webhook_secret=None)
    # Two more replicas on the same store, all asking at once on a fresh installation.
    others = [create_app(api.settings) for _ in range(2)]
    contexts = [app.router.lifespan_context(app) for app in others]
    for context in contexts:
        await context.__aenter__()
    try:
        clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://replica") for app in others]
        replies = await asyncio.gather(api.get("/v1/webhook-secret"), *(c.get("/v1/webhook-secret") for c in clients))
        for client in clients:
            await client.aclose()
    finally:
        for context in contexts:
            await context.__aexit__(None, None, None)
    answers = [r.json() for r in replies]
    assert all(r.status_code == 200 for r in replies) and answers[0] == answers[1] == answers[2], answers
    (secret,) = answers[0]["secrets"]
    assert answers[0]["generated"] is True and secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    # Deliveries are signed with it.
    _, delivery = await one_delivery(api, receiver)
    assert Webhook(secret).verify(delivery.body, delivery.headers)["type"] == "batch.completed"
    # A replica started later, after a restart, reads the same one from the store.
    later = create_app(api.settings)
    async with later.router.lifespan_context(later):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=later), base_url="http://later") as client:
            assert (await client.get("/v1/webhook-secret")).json() == answers[0]


async def test_only_an_admin_key_reads_the_webhook_secret(api_factory):
    keys = {scope: f"{scope}-key-0123456789abcdef" for scope in ("produce", "read", "work", "admin")}
    api = await api_factory(api_keys=[{"key": k, "scopes": [s]} for s, k in keys.items()], webhook_secret=None)
    for scope in ("produce", "read", "work"):
        r = await api.get("/v1/webhook-secret", headers={"Authorization": f"Bearer {keys[scope]}"})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden", r.text
        assert "whsec_" not in r.text
    r = await api.get("/v1/webhook-secret")
    assert r.status_code == 401 and "WWW-Authenticate" in r.headers
    r = await api.get("/v1/webhook-secret", headers={"Authorization": f"Bearer {keys['admin']}"})
    assert r.status_code == 200 and r.json()["generated"] is True and r.json()["secrets"][0].startswith("whsec_")
