"""With BATCHQ_API_TOKEN set, the API wants a bearer token; health checks stay open."""
from __future__ import annotations


async def test_bearer_token_is_required_when_configured(api_factory):
    api = await api_factory(api_token="s3cret-token")
    r = await api.post("/v1/batches", {"jobs": ["A"]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    r = await api.post("/v1/batches", {"jobs": ["A"]}, headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 401
    assert (await api.get("/v1/queues")).status_code == 401
    assert (await api.get("/v1/batches")).json()["error"]["code"] == "unauthorized"
    auth = {"Authorization": "Bearer s3cret-token"}
    r = await api.post("/v1/batches", {"jobs": ["A"]}, headers=auth)
    assert r.status_code == 201
    assert (await api.post("/v1/queues/default/claim", {"max": 1, "wait_s": 1}, headers=auth)).status_code == 200
    assert (await api.get("/healthz")).status_code == 200
    assert (await api.get("/readyz")).status_code == 200
