"""Server-sent events of a batch's life: history first, then live until the batch ends."""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse

from app.api import replies
from app.api.deps import Reader, Svc
from app.api.views import event_view
from app.domain.errors import Invalid

router = APIRouter(prefix="/v1", tags=["events"])


def sse_frame(event: dict[str, Any]) -> str:
    return f"id: {event['id']}\nevent: {event['type']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


MAX_ID = 2**63 - 1
# One server-sent event: its id, its type, and an Event as JSON text.
SSE_EVENT = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "event": {"type": "string"}, "data": {"type": "string"}},
}


@router.get(
    "/batches/{batch_id}/events",
    summary="Events of a batch: server-sent events (default) or a JSON page (`stream=false`)",
    response_model=replies.EventPage,
    responses={
        200: {"content": {"text/event-stream": {"schema": SSE_EVENT}, "application/json": {}},
              "description": "SSE frames (id, event, data: an Event as JSON), or an EventPage with stream=false"},
        **replies.READ_ERRORS,
    },
)  # fmt: skip
async def batch_events(
    batch_id: str,
    request: Request,
    svc: Svc,
    caller: Reader,
    stream: Annotated[bool, Query(description="false: one JSON page instead of a stream")] = True,
    after: Annotated[int, Query(ge=0, le=MAX_ID, description="only events with a larger id")] = 0,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=19, pattern=r"^[0-9]+$", description="resume after this event id")
    ] = None,
):  # noqa: ANN201
    await svc.orchestrator.batch(caller.sees, batch_id)
    if last_event_id is not None:
        if int(last_event_id) > MAX_ID:
            raise Invalid(f"Last-Event-ID must be at most {MAX_ID}", field="Last-Event-ID")
        after = max(after, int(last_event_id))
    if not stream:
        events = await svc.store.events_after(batch_id, after, 1000)
        return {"events": [event_view(e) for e in events]}

    async def frames() -> AsyncIterator[str]:
        cursor = after
        idle = 0
        ends = time.monotonic() + svc.settings.sse_max_s
        yield "retry: 1000\n\n"
        while time.monotonic() < ends:
            # Read the batch before its events: if it had ended by then, the events of its
            # end are already stored and this read gets them all.
            batch = await svc.store.get_batch(batch_id)
            events = await svc.store.events_after(batch_id, cursor, 500)
            for event in events:
                cursor = event.id or cursor
                yield sse_frame(event_view(event))
            if events:
                idle = 0
                continue
            if batch is None or batch.finished:
                # Everything up to the end was sent; a retry later starts a new stream.
                return
            if await request.is_disconnected():
                return
            idle += 1
            if idle % 30 == 0:
                yield ": keep-alive\n\n"
            await asyncio.sleep(svc.settings.poll_interval_s)

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
