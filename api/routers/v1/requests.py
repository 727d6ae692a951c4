"""/v1/requests: the async request of every mutating call, its events (SSE while it runs), cancel."""
from __future__ import annotations

import asyncio
import json

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from api import operations as ops
from api.context import Context
from api.deps import current_account, get_context
from api.routers.common import V1, page_query, size_query
from api.routers.v1.models import Progress, RequestEvent, RequestPage, RequestState
from api.services import requests as service
from api.store.models import Account, Operation

router = APIRouter(prefix="/requests", tags=["requests"])
STORE_POLL = 0.5  # seconds between two reads of the store by an event stream in queue mode


def render(operation: Operation) -> RequestState:
    return RequestState(
        request_id=operation.id, state=operation.state, operation=operation.kind, cluster_id=operation.cluster_id,
        created_at=operation.created_at, started_at=operation.started_at, finished_at=operation.finished_at,
        progress=Progress(tasks_done=operation.tasks_done,
                          tasks_total=max(operation.tasks_total, operation.tasks_done)
                          if operation.tasks_total is not None else None,
                          step=operation.step + 1, steps=len(operation.steps) or 1),
        message=operation.error, created_by=operation.actor_id,
    )


def render_event(event) -> RequestEvent:
    return RequestEvent(id=event.id, counter=event.counter, event=event.event, host=event.host, task=event.task,
                        status=event.status, message=event.message, created_at=event.created_at)


@router.get("", response_model=RequestPage, summary="List Requests")
def list_requests(cluster_id: str | None = None, state: str | None = None, page: int = page_query(0, 0),
                  size: int = size_query(20), ctx: Context = Depends(get_context),
                  actor: Account = Depends(current_account)):
    rows, count = service.list_requests(ctx, actor, cluster_id=cluster_id, state=state, page=page, size=size)
    return RequestPage(contents=[render(o) for o in rows], count=count, page=page, size=size)


@router.get("/{request_id}", response_model=RequestState, summary="Show Request", responses=V1.responses(404))
def show_request(request_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return render(service.get_request(ctx, actor, request_id))


@router.post("/{request_id}/cancel", response_model=RequestState, status_code=202, summary="Cancel Request",
             responses=V1.responses(404, 409))
def cancel_request(request_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return render(service.cancel(ctx, actor, request_id))


@router.get("/{request_id}/events", summary="Request events (JSON list, or an SSE stream while it runs)",
            response_model=list[RequestEvent],
            responses={**V1.responses(404), 200: {
                "description": "the events so far (JSON), or with `Accept: text/event-stream` a stream of "
                               "`task` events ending with an `end` event",
                "content": {"text/event-stream": {"schema": {"type": "string"}}}}})
async def request_events(request: Request, request_id: str, ctx: Context = Depends(get_context),
                         actor: Account = Depends(current_account)):
    existing = await run_in_threadpool(service.events, ctx, actor, request_id)
    if "text/event-stream" not in request.headers.get("accept", ""):
        return [render_event(e) for e in existing]

    async def stream():
        last = 0
        batch = existing
        while True:
            for event in batch:
                last = event.id
                yield f"id: {event.id}\nevent: task\ndata: {render_event(event).model_dump_json()}\n\n"
            operation = await run_in_threadpool(service.get_request, ctx, actor, request_id)
            if operation.state in ops.FINAL_STATES:
                for event in await run_in_threadpool(service.events, ctx, actor, request_id, last):
                    yield f"id: {event.id}\nevent: task\ndata: {render_event(event).model_dump_json()}\n\n"
                yield f"event: end\ndata: {json.dumps({'state': operation.state})}\n\n"
                return
            if await request.is_disconnected():
                return
            if getattr(ctx.executor, "local_events", True):
                # Wake on the executor's signal (a new event or a finished job), at most every second.
                await run_in_threadpool(_wait_signal, ctx, 1.0)
            else:
                # Queue mode: the job runs in a worker process; its events reach us through the store.
                await asyncio.sleep(STORE_POLL)
            batch = await run_in_threadpool(service.events, ctx, actor, request_id, last)

    return StreamingResponse(stream(), media_type="text/event-stream")


def _wait_signal(ctx: Context, timeout: float) -> None:
    with ctx.executor.event_signal:
        ctx.executor.event_signal.wait(timeout)
