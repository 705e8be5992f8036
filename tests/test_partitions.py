"""A hot queue spread over several streams (partitions): producers spread its messages by job
id, the claim endpoint reads every partition and starts at another one each time."""
from __future__ import annotations

import asyncio
import time
from collections import Counter

import pytest

from app.broker.redis_streams import partition_of, stream_key
from app.config import QueueConfig
from conftest import STREAM_BACKENDS


async def depth(api, queue: str, want: int, timeout: float = 10.0) -> int:  # noqa: ANN001
    """The queue's depth once it reaches `want` (the relay publishes within moments)."""
    deadline = time.monotonic() + timeout
    while True:
        found = {q["name"]: q["depth"] for q in (await api.get("/v1/queues")).json()["queues"]}.get(queue, 0)
        if found >= want or time.monotonic() > deadline:
            return found
        await asyncio.sleep(0.02)


@pytest.mark.parametrize("backend", STREAM_BACKENDS, indirect=True)
async def test_the_api_names_every_partition_of_a_queue(api_factory):
    api = await api_factory(queue_partitions=3, queues={"images": QueueConfig(partitions=2), "slow": QueueConfig(partitions=1)})
    prefix = api.settings.redis_prefix
    key, images = stream_key(prefix, "default", "default"), stream_key(prefix, "default", "images")
    assert (await api.get("/v1/queues/default/streams")).json()["streams"] == [key, f"{key}#1", f"{key}#2"]
    assert (await api.get("/v1/queues/images/streams")).json()["streams"] == [images, f"{images}#1"]
    assert (await api.get("/v1/queues/slow/streams")).json()["streams"] == [stream_key(prefix, "default", "slow")]


@pytest.mark.parametrize("backend", STREAM_BACKENDS, indirect=True)
async def test_claims_read_every_partition_in_turn(api_factory):
    api = await api_factory(queue_partitions=3)
    batch = await api.create({"jobs": ["J"] * 60})
    spread = Counter(partition_of(j["id"], 3) for j in await api.jobs(batch["id"]))
    assert set(spread) == {0, 1, 2}, spread  # 60 job ids fall in every partition
    assert await depth(api, "default", 60) == 60  # the depth sums the partitions

    # One message per claim: consecutive claims start at consecutive partitions.
    first = [(await api.claim(max=1))[0] for _ in range(6)]
    assert {partition_of(m["job_id"], 3) for m in first} == {0, 1, 2}, first
    rest = await api.claim_until(54)  # a claim takes from every partition until it has enough
    assert len({m["job_id"] for m in first + rest}) == 60
    for m in first + rest:
        await api.complete(m)
    assert (await api.wait_status(batch["id"], "completed"))["completed"] == 60
    assert await depth(api, "default", 0) == 0
