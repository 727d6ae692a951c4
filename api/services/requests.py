"""Async requests (operations): read, list, events, cancel, and crash recovery at start-up."""
from __future__ import annotations

import logging

from sqlalchemy import func, select, update

from api import operations as ops
from api.context import Context
from api.errors import Conflict, Invalid, NotFound, OperationFailed
from api.services import clusters
from api.store.models import Account, Cluster, Operation, OperationEvent, utcnow

log = logging.getLogger("pgdbaas.requests")
STATES = (ops.QUEUED, ops.IN_PROGRESS, ops.SUCCESS, ops.ERROR, ops.CANCELED)


def _visible(statement, actor: Account):
    return statement if actor.role == "admin" else statement.where(Operation.actor_id == actor.id)


def get_request(ctx: Context, actor: Account, request_id: str) -> Operation:
    with ctx.sessions() as session:
        operation = session.scalar(_visible(select(Operation).where(Operation.id == request_id), actor))
        if operation is None:
            raise NotFound(f"request {request_id} not found")
        return operation


def wait(ctx: Context, actor: Account, request_id: str, timeout: float | None = None) -> Operation:
    """Block until the request ends (synchronous dialects: agent, DBaaS) and return it."""
    ctx.executor.wait(request_id, timeout)
    return get_request(ctx, actor, request_id)


def run_to_end(ctx: Context, actor: Account, request_id: str) -> Operation:
    """`wait`, then raise OperationFailed unless the request succeeded."""
    operation = wait(ctx, actor, request_id)
    if operation.state != ops.SUCCESS:
        raise OperationFailed(operation.error or operation.state, request_id=operation.id)
    return operation


def list_requests(ctx: Context, actor: Account, *, cluster_id: str | None = None, state: str | None = None,
                  page: int = 0, size: int = 20) -> tuple[list[Operation], int]:
    if state and state not in STATES:
        raise Invalid(f"state must be one of {', '.join(STATES)}", field="state")
    statement = _visible(select(Operation), actor)
    if cluster_id:
        statement = statement.where(Operation.cluster_id == cluster_id)
    if state:
        statement = statement.where(Operation.state == state)
    with ctx.sessions() as session:
        count = session.scalar(select(func.count()).select_from(statement.subquery()))
        rows = session.scalars(statement.order_by(Operation.created_at.desc()).offset(page * size).limit(size))
        return list(rows), count


def events(ctx: Context, actor: Account, request_id: str, after: int = 0) -> list[OperationEvent]:
    get_request(ctx, actor, request_id)
    with ctx.sessions() as session:
        return list(session.scalars(select(OperationEvent).where(OperationEvent.operation_id == request_id,
                                                                 OperationEvent.id > after)
                                    .order_by(OperationEvent.id)))


def cancel(ctx: Context, actor: Account, request_id: str) -> Operation:
    operation = get_request(ctx, actor, request_id)
    if operation.state in ops.FINAL_STATES:
        raise Conflict(f"request {request_id} is already {operation.state}")
    with ctx.sessions.begin() as session:
        # A queued job never starts: the executor only starts QUEUED operations.
        queued = session.execute(update(Operation).where(Operation.id == request_id, Operation.state == ops.QUEUED)
                                 .values(state=ops.CANCELED, error="canceled", finished_at=utcnow())).rowcount
        operation = session.get(Operation, request_id, populate_existing=True)
        if queued:
            ops.release_cluster(session, operation)
            cluster = session.get(Cluster, operation.cluster_id) if operation.cluster_id else None
            if cluster is not None and cluster.service_state in clusters.TRANSITIONAL:
                cluster.service_state = clusters.ERROR
        else:
            operation.cancel_requested = True
    if not queued:
        ctx.executor.request_cancel(request_id)
    return operation


def recover(ctx: Context) -> list[str]:
    """After a crash: unfinished operations end as ERROR "interrupted"; clusters are observed again."""
    with ctx.sessions.begin() as session:
        stale = list(session.scalars(select(Operation).where(Operation.state.in_((ops.QUEUED, ops.IN_PROGRESS)))))
        for operation in stale:
            ops.finish(session, operation, ops.ERROR, error="interrupted")
        cluster_ids = sorted({o.cluster_id for o in stale if o.cluster_id})
        # Nothing may still hold a lock taken by a process that no longer exists.
        session.execute(update(Cluster).where(Cluster.active_operation_id.is_not(None))
                        .values(active_operation_id=None))
        actors = {o.cluster_id: o.actor_id for o in stale}
    for cluster_id in cluster_ids:
        with ctx.sessions() as session:
            cluster = session.get(Cluster, cluster_id)
            actor = session.get(Account, cluster.owner_id) if cluster else None
        if cluster is None or cluster.service_state == clusters.TERMINATED or actor is None:
            continue
        log.warning("request(s) of cluster %s were interrupted (actor %s); observing it again",
                    cluster_id, actors.get(cluster_id))
        clusters.observe(ctx, actor, cluster_id)
    return [o.id for o in stale]
