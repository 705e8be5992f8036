"""Callbacks cannot reach inside (issue 9): refused at creation in every spelling, checked
again at delivery against the address connected to, no redirects, headers validated, and
every failure to send is an attempt on the record.

The suite runs with BATCHQ_ALLOW_PRIVATE_CALLBACKS=true for its local receivers; these tests
turn the rule back on (allow_private_callbacks=False) to prove it.
"""
from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from app.domain.addresses import refusal
from app.domain.models import Webhook
from app.main import create_app
from app.services.engine import new_id
from receiver import Receiver

# (url, words the refusal names); every spelling of an address inside, and names of this machine.
INSIDE = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://2130706433/", "loopback"),
    ("http://017700000001/", "loopback"),
    ("http://0177.0.0.1/", "loopback"),
    ("http://0x7f.1/", "loopback"),
    ("http://0x7f000001:8080/", "loopback"),
    ("http://127.1/", "loopback"),
    ("http://127.0.0.1./", "loopback"),
    ("http://[::1]/", "loopback"),
    ("http://[::ffff:127.0.0.1]/", "loopback"),
    ("http://[::ffff:7f00:1]/", "loopback"),
    ("http://localhost/", "loopback"),
    ("http://localhost./", "loopback"),
    ("https://LOCALHOST:8443/", "loopback"),
    ("http://foo.localhost/", "loopback"),
    ("http://foo.localhost./x", "loopback"),
    ("http://10.1.2.3/", "private"),
    ("http://172.16.0.1/", "private"),
    ("http://192.168.1.1/", "private"),
    ("http://[fd00::1]/", "private"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]/", "link-local"),
    ("http://0.0.0.0:9/", "unspecified"),
    ("http://[::]/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://[ff02::1]/", "multicast"),
    ("http://100.64.0.1/", "CGNAT"),
    ("http://240.0.0.1/", "reserved"),
    ("http://255.255.255.255/", "reserved"),
    ("http://192.0.2.1/", "reserved"),
    ("http://[2002:7f00:1::]/", "loopback"),  # 6to4 around 127.0.0.1
    ("http://[64:ff9b::a9fe:a9fe]/", "link-local"),  # NAT64 around the metadata address
]
FIELDS = ["on_complete", "on_failure", "on_event"]
PUBLIC = ["http://93.184.215.14/hook", "https://[2606:4700:4700::1111]:8443/x"]  # literal: no DNS needed


def this_machine() -> tuple[str, str] | None:
    """A name of this machine other than localhost that resolves to an address inside (the
    host name usually does: loopback, or a private address in a container), with its reason."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)
    except OSError:
        return None
    from ipaddress import ip_address

    reasons = [refusal(ip_address(info[4][0].split("%")[0])) for info in infos]
    return (name, next(r for r in reasons if r)) if any(reasons) else None


def body_with(field: str, url: str, **extra) -> dict:  # noqa: ANN003
    return {"jobs": ["A"], field: {"url": url, **extra}}


@pytest.fixture
async def receiver():
    r = await Receiver().start()
    yield r
    await r.stop()


async def hooks_of(api, batch_id: str, done, timeout: float = 15.0) -> list[dict]:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while True:
        hooks = (await api.get(f"/v1/batches/{batch_id}/callbacks")).json()["webhooks"]
        if hooks and done(hooks):
            return hooks
        assert time.monotonic() < deadline, hooks
        await asyncio.sleep(0.05)


async def test_callback_urls_reaching_inside_are_refused_in_every_spelling(api_factory):
    api = await api_factory(allow_private_callbacks=False)
    inside = list(INSIDE)
    machine = this_machine()
    if machine is not None:
        inside.append((f"http://{machine[0]}/hook", machine[1].split()[0]))
    for i, (url, reason) in enumerate(inside):
        field = FIELDS[i % len(FIELDS)]
        r = await api.post("/v1/batches", body_with(field, url))
        assert r.status_code == 422, (url, r.text)
        error = r.json()["error"]
        assert error["code"] == "validation_error" and error["field"] == f"{field}.url", (url, error)
        assert reason in error["message"] and "BATCHQ_ALLOW_PRIVATE_CALLBACKS" in error["message"], (url, error)
    # On a chain too, and with a job beside the url; nothing was made.
    r = await api.post("/v1/chains", {"jobs": ["A"], "on_failure": {"url": "http://[::1]:80/", "job": {"name": "J"}}})
    assert r.status_code == 422 and r.json()["error"]["field"] == "on_failure.url"
    assert (await api.get("/v1/batches")).json()["batches"] == []


async def test_a_host_that_does_not_resolve_is_refused_at_creation(api_factory):
    api = await api_factory(allow_private_callbacks=False)
    r = await api.post("/v1/batches", body_with("on_failure", "http://no-such-host.invalid/hook"))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["field"] == "on_failure.url" and "no-such-host.invalid" in error["message"] and "resolve" in error["message"]


async def test_public_addresses_and_callback_jobs_are_accepted_with_the_rule_on(api_factory):
    api = await api_factory(allow_private_callbacks=False)
    for field, url in zip(FIELDS, PUBLIC + PUBLIC):
        created = await api.create(body_with(field, url))
        assert created[field]["url"] == url
        assert (await api.post(f"/v1/batches/{created['id']}/cancel")).status_code == 200
    # A callback that is a job reaches no address: the rule does not concern it.
    batch = await api.create({"jobs": ["A"], "on_complete": {"job": {"name": "Report", "args": {"to": "ops"}}}})
    (m,) = await api.claim_until(1)
    await api.complete(m)
    (cb,) = await api.claim_until(1)
    assert cb["kind"] == "callback" and cb["name"] == "Report" and cb["batch_id"] == batch["id"]
    assert cb["args"]["batch"]["status"] == "completed"


async def test_user_info_in_a_callback_url_is_refused_even_with_the_rule_lifted(api):
    for field, url in [("on_complete", "http://user:secret@93.184.215.14/"), ("on_event", "http://token@127.0.0.1:9/")]:
        r = await api.post("/v1/batches", body_with(field, url))
        assert r.status_code == 422, r.text
        error = r.json()["error"]
        assert error["field"] == f"{field}.url" and "user info" in error["message"]


async def test_with_the_rule_lifted_a_name_is_resolved_and_connected_to_with_its_host_header(api, receiver):
    """BATCHQ_ALLOW_PRIVATE_CALLBACKS=true (the suite's setting): local receivers are reached, by
    name too; the sender connects to the address it resolved, and the request keeps the name."""
    url = f"http://localhost:{receiver.port}/by-name"
    batch = await api.create({"jobs": ["A"], "on_complete": {"url": url}})
    (m,) = await api.claim_until(1)
    await api.complete(m)
    (delivery,) = await receiver.wait_for(1)
    assert delivery.path == "/by-name" and delivery.headers["host"] == f"localhost:{receiver.port}"
    await hooks_of(api, batch["id"], lambda h: h[0]["status"] == "delivered")


async def test_the_sender_checks_the_address_it_connects_to_at_delivery(api_factory, receiver):
    """A webhook made while the rule was lifted (another replica, an older version, a name that
    resolved elsewhere then) is refused when it is sent, recorded as failed attempts with the
    reason, and nothing reaches the receiver."""
    sender = await api_factory(allow_private_callbacks=False, webhook_max_attempts=2)
    lax = sender.settings.model_copy(update={"allow_private_callbacks": True, "background": False})
    targets = [(receiver.url, "127.0.0.1 is a loopback address")]
    machine = this_machine()
    if machine is not None:
        targets.append((f"http://{machine[0]}:{receiver.port}/hook", f"{machine[0]} resolves to"))
    other = create_app(lax)
    async with other.router.lifespan_context(other):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url="http://lax") as client:
            made = []
            for url, _ in targets:
                r = await client.post("/v1/batches", json={"jobs": ["A"], "on_event": {"url": url, "events": ["cancelled"]}})
                assert r.status_code == 201, r.text
                assert (await client.post(f"/v1/batches/{r.json()['id']}/cancel")).status_code == 200
                made.append(r.json()["id"])
    for batch_id, (_, reason) in zip(made, targets):
        (hook,) = await hooks_of(sender, batch_id, lambda h: h[0]["status"] == "failed")
        assert hook["attempts"] == 2 and len(hook["deliveries"]) == 2
        for attempt in hook["deliveries"]:
            assert attempt["error"].startswith("refused: ") and reason in attempt["error"], attempt
            assert attempt.get("status_code") is None
        assert hook["last_error"].startswith("refused: ")
    assert receiver.deliveries == []


async def test_redirects_are_not_followed(api, receiver):
    elsewhere = await Receiver().start()
    try:
        receiver.statuses = [302]
        receiver.location = elsewhere.url
        batch = await api.create({"jobs": ["A"], "on_complete": {"url": receiver.url}})
        (m,) = await api.claim_until(1)
        await api.complete(m)
        hooks = await hooks_of(api, batch["id"], lambda h: h[0]["status"] == "delivered")
        first, second = hooks[0]["deliveries"]
        assert first["status_code"] == 302 and first["error"] == "HTTP 302 (redirects are not followed)"
        assert second["status_code"] == 200  # the retry went to the callback URL again
        assert len(receiver.deliveries) == 2 and elsewhere.deliveries == []
    finally:
        await elsewhere.stop()


BAD_HEADERS = [
    ({"X-Note": "one\r\nInjected: yes"}, "X-Note", "CR, LF"),
    ({"X-Note": "line\nbreak"}, "X-Note", "CR, LF"),
    ({"X-Note": "naïve"}, "X-Note", "ASCII"),
    ({"X-Note": "tab\there"}, "X-Note", "ASCII"),
    ({"X-Bad\r\nName": "v"}, "X-Bad\r\nName", "header name"),
    ({"Bad Name": "v"}, "Bad Name", "header name"),
    ({"Héader": "v"}, "Héader", "header name"),
    ({"Host": "internal.example"}, "Host", "set by the webhook sender"),
    ({"content-length": "1"}, "content-length", "set by the webhook sender"),
    ({"Transfer-Encoding": "chunked"}, "Transfer-Encoding", "set by the webhook sender"),
    ({"Connection": "close"}, "Connection", "set by the webhook sender"),
    ({"Content-Type": "text/plain"}, "Content-Type", "set by the webhook sender"),
    ({"webhook-signature": "v1,forged"}, "webhook-signature", "set by the webhook sender"),
    ({"Webhook-Id": "msg_1"}, "Webhook-Id", "set by the webhook sender"),
    ({"webhook-timestamp": "1"}, "webhook-timestamp", "set by the webhook sender"),
    ({"X-Batchq-Event": "batch.completed"}, "X-Batchq-Event", "set by the webhook sender"),
    ({"x-batchq-signature": "v1=00"}, "x-batchq-signature", "set by the webhook sender"),
]


async def test_callback_headers_are_checked_at_creation_naming_the_header(api):
    for i, (headers, name, words) in enumerate(BAD_HEADERS):
        field = FIELDS[i % len(FIELDS)]
        r = await api.post("/v1/batches", body_with(field, "http://127.0.0.1:9/hook", headers=headers))
        assert r.status_code == 422, (headers, r.text)
        error = r.json()["error"]
        assert error["field"] == f"{field}.headers.{name}", (headers, error)
        assert words in error["message"], (headers, error)
    r = await api.post("/v1/batches", body_with("on_event", "http://127.0.0.1:9/", headers={"X-A": "1", "x-a": "2"}))
    assert r.status_code == 422 and r.json()["error"]["field"] == "on_event.headers"
    assert "x-a" in r.json()["error"]["message"] and "twice" in r.json()["error"]["message"]
    assert (await api.get("/v1/batches")).json()["batches"] == []
    ok = {"Authorization": "Bearer abc", "X-Tenant": "acme", "User-Agent": "mine/1", "X-Empty": ""}
    assert (await api.create(body_with("on_complete", "http://127.0.0.1:9/", headers=ok)))["on_complete"]["headers"] == ok


async def test_any_exception_while_sending_is_a_failed_attempt(api_factory, receiver):
    """A webhook no request could make today (a header value that is not ASCII, as an earlier
    version stored it) fails in the HTTP client, outside its error types: the attempt is
    recorded with the error, retried, and ends failed; it never stays pending unseen."""
    api = await api_factory(webhook_max_attempts=2)
    batch = await api.create({"jobs": ["A"]})
    now = api.services.clock()

    async def stored_long_ago(uow) -> None:  # noqa: ANN001
        uow.add_webhook(Webhook(id=new_id(), batch_id=batch["id"], event_type="batch.completed", url=receiver.url,
                                headers={"X-Name": "naïve"}, body={"id": "x"}, next_attempt_at=now, created_at=now))  # fmt: skip

    await api.services.store.run(batch["id"], stored_long_ago)
    (hook,) = await hooks_of(api, batch["id"], lambda h: h[0]["status"] == "failed")
    assert hook["attempts"] == 2
    for attempt in hook["deliveries"]:
        assert attempt["error"].startswith("UnicodeEncodeError") and attempt.get("status_code") is None, attempt
    assert receiver.deliveries == []
    # The sender is still at work for everything else.
    other = await api.create({"jobs": ["B"], "on_complete": {"url": receiver.url}})
    for m in await api.claim_until(2):  # the first batch's job too
        await api.complete(m)
    await receiver.wait_for(1)
    await hooks_of(api, other["id"], lambda h: h[0]["status"] == "delivered")
