"""Server-sent events of a batch's life: history first, then live until the batch ends."""
from __future__ import annotations

import asyncio
import json
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
        yield "retry: 1000\n\n"
        until = asyncio.get_running_loop().time() + svc.settings.sse_max_s
        async for events in svc.events.follow(batch_id, after, until):
            if not events:  # nothing new for a while: keep the connection, notice a gone client
                if await request.is_disconnected():
                    return
                yield ": keep-alive\n\n"
            for event in events:
                yield sse_frame(event_view(event))
        # The batch ended (everything up to its end was sent) or the stream's time ran out:
        # a client resumes with Last-Event-ID.

    return StreamingResponse(
        frames(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
