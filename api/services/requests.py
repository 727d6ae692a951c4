"""Async requests (operations): read, list, events, cancel, and crash recovery at start-up."""
from __future__ import annotations

import logging

from sqlalchemy import func, select, update

from api import operations as ops
from api.context import Context
from api.errors import Conflict, Invalid, NotFound, OperationFailed, OperationTimeout, ServiceError
from api.services import clusters
from api.store.models import Account, Cluster, Operation, OperationEvent, utcnow

log = logging.getLogger("pgdbaas.requests")
STATES = (ops.QUEUED, ops.IN_PROGRESS, ops.SUCCESS, ops.ERROR, ops.CANCELED)


def _visible(statement, actor: Account):
    """A user sees the requests it made and those on its own clusters (e.g. the scheduler's backups)."""
    if actor.role == "admin":
        return statement
    own_clusters = select(Cluster.id).where(Cluster.owner_id == actor.id)
    return statement.where((Operation.actor_id == actor.id) | Operation.cluster_id.in_(own_clusters))


def get_request(ctx: Context, actor: Account, request_id: str) -> Operation:
    with ctx.sessions() as session:
        operation = session.scalar(_visible(select(Operation).where(Operation.id == request_id), actor))
        if operation is None:
            raise NotFound(f"request {request_id} not found")
        return operation


def wait(ctx: Context, actor: Account, request_id: str, timeout: float | None = None) -> Operation:
    """Block until the request ends (synchronous dialects: agent, DBaaS) and return it: the
    in-process pool signals its end, the queue executor reads the store (any worker's job)."""
    ctx.executor.wait(request_id, timeout)
    return get_request(ctx, actor, request_id)


def run_to_end(ctx: Context, actor: Account, request_id: str) -> Operation:
    """`wait` at most PGDBAAS_SYNC_TIMEOUT seconds, then raise OperationTimeout if the request still
    runs, or OperationFailed (with its error text) unless it succeeded."""
    operation = wait(ctx, actor, request_id, ctx.settings.sync_timeout)
    if operation.state not in ops.FINAL_STATES:
        raise OperationTimeout(f"request {request_id} is still {operation.state} after {ctx.settings.sync_timeout} s; "
                               f"poll /v1/requests/{request_id}", request_id=operation.id)
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
                                 .values(state=ops.CANCELED, error="canceled", finished_at=utcnow(),
                                         secrets_encrypted=None)).rowcount
        operation = session.get(Operation, request_id, populate_existing=True)
        if queued:
            ops.release_cluster(session, operation)
            cluster = session.get(Cluster, operation.cluster_id) if operation.cluster_id else None
            if cluster is not None and cluster.service_state in clusters.TRANSITIONAL:
                cluster.service_state = clusters.ERROR
        else:
            operation.cancel_requested = True
    # Whichever process runs the job (this one, or a queue worker) learns it from the executor or
    # the store's flag; a queue drops a canceled job that has not started.
    if queued:
        ctx.executor.withdraw(request_id)
    else:
        ctx.executor.request_cancel(request_id)
    return operation


def recover(ctx: Context) -> list[str]:
    """At start-up, what a dead API process left: its unfinished operations end as ERROR
    "interrupted" and their clusters are observed again, but only once their jobs' processes are
    provably gone; leftover secrets files go and job directories are scrubbed. (Queue mode:
    `recover_queue`, by heartbeats.)

    An operation whose owner (another API process on this host) is alive is left to it. One on
    another host ends as "interrupted" too (in-process mode: one API per store), but its
    processes cannot be checked from here: its cluster is set to ERROR, not observed, until a
    sync-state says more.
    """
    if ctx.settings.executor == "queue":
        return recover_queue(ctx)
    executor = ctx.executor
    with ctx.sessions() as session:
        unfinished = list(session.scalars(select(Operation).where(Operation.state.in_((ops.QUEUED, ops.IN_PROGRESS)))))
    live = {o.id for o in unfinished if executor.owner_alive(o)}
    stale = [o for o in unfinished if o.id not in live]
    for operation in unfinished:
        if operation.id in live:
            log.info("request %s belongs to the live API process %s: left to it", operation.id, operation.worker_pid)
    # Nothing runs or observes a cluster while an old job may still touch it: end those first.
    ended = executor.end_orphaned_jobs(stale)
    executor.clean_leftovers(keep=live)

    unsure: set[str] = set()
    with ctx.sessions.begin() as session:
        for stale_operation in stale:
            operation = session.get(Operation, stale_operation.id, populate_existing=True)
            if operation is None or operation.state in ops.FINAL_STATES:
                continue
            ops.finish(session, operation, ops.ERROR, error="interrupted")
            if operation.cluster_id and operation.id not in ended:
                unsure.add(operation.cluster_id)
        # No lock may outlive the process that took it: only live API processes keep theirs.
        held = update(Cluster).where(Cluster.active_operation_id.is_not(None))
        if live:
            held = held.where(Cluster.active_operation_id.not_in(live))
        session.execute(held.values(active_operation_id=None))
        for cluster_id in unsure:
            cluster = session.get(Cluster, cluster_id)
            if cluster is not None and cluster.service_state != clusters.TERMINATED:
                cluster.service_state = clusters.ERROR
                for member in cluster.members:
                    member.service_state = clusters.ERROR
    observe_again(ctx, [o for o in stale if o.cluster_id not in unsure])
    for cluster_id in sorted(unsure):
        log.warning("cluster %s not observed: a job of another host may still run on it", cluster_id)
    return [o.id for o in stale]


def observe_again(ctx: Context, interrupted: list[Operation]) -> None:
    """An `observe` request for each cluster of these interrupted operations, so its state is read,
    not guessed (as the cluster's owner; skipped for a cluster that a live job holds)."""
    actors = {o.cluster_id: o.actor_id for o in interrupted}
    for cluster_id in sorted({o.cluster_id for o in interrupted if o.cluster_id}):
        with ctx.sessions() as session:
            cluster = session.get(Cluster, cluster_id)
            actor = session.get(Account, cluster.owner_id) if cluster else None
        if cluster is None or cluster.service_state == clusters.TERMINATED or actor is None:
            continue
        log.warning("request(s) of cluster %s were interrupted (actor %s); observing it again",
                    cluster_id, actors.get(cluster_id))
        try:
            clusters.observe(ctx, actor, cluster_id)
        except ServiceError as exc:  # e.g. a live API process holds it
            log.warning("cluster %s not observed: %s", cluster_id, exc.message)


def reap_stale(ctx: Context) -> list[Operation]:
    """Queue mode: every running operation whose worker has not renewed its heartbeat for
    PGDBAAS_HEARTBEAT_TIMEOUT ends as ERROR "interrupted" and frees its cluster (never by age: a
    long job that beats is alive). The jobs' processes die with their worker (the job guard); any
    left on this host are ended first, and a cluster where one survives is set to ERROR and not
    observed. Nothing on another host is signalled. Returns the interrupted operations whose
    clusters are to be observed (`observe_again`). Several reapers at once are harmless: each
    operation is ended under its row lock, by one of them."""
    from api.engine import queue

    executor = ctx.executor
    timeout = ctx.settings.heartbeat_timeout
    with ctx.sessions() as session:
        candidates = list(session.scalars(select(Operation).where(queue.stale(timeout))))
    local = [o for o in candidates if executor.worker.same_boot(o)]
    ended = executor.end_orphaned_jobs(local) if local else set()
    local_ids = {o.id for o in local}
    reaped: list[Operation] = []
    with ctx.sessions.begin() as session:
        for candidate in candidates:
            operation = session.scalar(select(Operation).where(Operation.id == candidate.id, queue.stale(timeout))
                                       .with_for_update())
            if operation is None:
                continue  # it beat again, or ended, meanwhile
            log.warning("request %s was interrupted: its worker %s (pid %s) sent no heartbeat for %s s",
                        operation.id, operation.worker_host, operation.worker_pid, timeout)
            ops.finish(session, operation, ops.ERROR, error="interrupted")
            if candidate.id in local_ids and candidate.id not in ended:
                cluster = session.get(Cluster, operation.cluster_id) if operation.cluster_id else None
                if cluster is not None and cluster.service_state != clusters.TERMINATED:
                    log.warning("cluster %s not observed: a process of request %s survived", cluster.id, operation.id)
                    cluster.service_state = clusters.ERROR
                    for member in cluster.members:
                        member.service_state = clusters.ERROR
                continue
            reaped.append(operation)
        # No lock outlives its operation (a crash between two writes of an older version).
        session.execute(update(Cluster).where(Cluster.active_operation_id.in_(
            select(Operation.id).where(Operation.state.in_(ops.FINAL_STATES)))).values(active_operation_id=None))
    return reaped


def recover_queue(ctx: Context) -> list[str]:
    """Queue mode, at an API's start: operations of live workers (their heartbeats are fresh) and
    QUEUED ones (their jobs wait in the queue) are left alone; stale ones are reaped and their
    clusters observed; this data directory's leftover secrets go."""
    reaped = reap_stale(ctx)
    observe_again(ctx, reaped)
    ctx.executor.clean_stray_secrets(everything=True)
    return [o.id for o in reaped]
