"""Operation records: the async request behind every mutating call, and the per-cluster lock.

The lock is the cluster row's `active_operation_id`, taken with one conditional UPDATE so two
API calls racing for one cluster cannot both win, in SQLite or PostgreSQL alike.
"""
from __future__ import annotations

import uuid
from collections.abc import Iterable

from sqlalchemy import update
from sqlalchemy.orm import Session

from api.errors import Conflict
from api.store.models import Cluster, Operation, utcnow

QUEUED, IN_PROGRESS, SUCCESS, ERROR, CANCELED = "QUEUED", "IN_PROGRESS", "SUCCESS", "ERROR", "CANCELED"
FINAL_STATES = (SUCCESS, ERROR, CANCELED)


def new_request_id() -> str:
    return f"req-{uuid.uuid4()}"


def open_operation(
    session: Session,
    *,
    kind: str,
    actor_id: str,
    cluster: Cluster | None,
    steps: list[dict],
    params: dict | None = None,
    secrets_encrypted: str | None = None,
    transitional_state: str | None = None,
    allowed_states: Iterable[str] | None = None,
    lock: bool = True,
) -> Operation:
    """Insert a QUEUED operation and take the cluster's lock, or raise Conflict; caller commits.

    `allowed_states` is checked in the same UPDATE that takes the lock, so a state change
    between the caller's read and this write cannot slip through. Read-only operations
    (`lock=False`) run beside whatever holds the cluster.
    """
    first = steps[0] if steps else {"playbook": "", "extravars": {}}
    operation = Operation(
        id=new_request_id(), kind=kind, actor_id=actor_id, state=QUEUED,
        cluster_id=cluster.id if cluster else None, params=params or {}, steps=steps,
        playbook=first["playbook"], extravars=first.get("extravars") or {}, secrets_encrypted=secrets_encrypted,
    )
    if cluster is not None and lock:
        values: dict = {"active_operation_id": operation.id, "modified_by": actor_id, "modified_at": utcnow()}
        if transitional_state:
            values["service_state"] = transitional_state
        statement = update(Cluster).where(Cluster.id == cluster.id, Cluster.active_operation_id.is_(None))
        if allowed_states is not None:
            statement = statement.where(Cluster.service_state.in_(list(allowed_states)))
        if session.execute(statement.values(**values)).rowcount != 1:
            # Nothing was written; the caller's transaction context rolls back on the raise.
            current = session.get(Cluster, cluster.id, populate_existing=True)
            if current is not None and current.active_operation_id:
                raise Conflict(
                    f"Cluster {cluster.id} is busy with request {current.active_operation_id}",
                    request_id=current.active_operation_id,
                )
            state = current.service_state if current else "unknown"
            raise Conflict(f"Cluster {cluster.id} is {state}: {kind} is not allowed in that state")
        session.refresh(cluster)
    session.add(operation)
    session.flush()
    return operation


def release_cluster(session: Session, operation: Operation) -> None:
    if operation.cluster_id:
        session.execute(
            update(Cluster)
            .where(Cluster.id == operation.cluster_id, Cluster.active_operation_id == operation.id)
            .values(active_operation_id=None)
        )


def finish(session: Session, operation: Operation, state: str, *, error: str | None = None,
           result: dict | None = None) -> None:
    operation.state = state
    operation.error = error
    operation.secrets_encrypted = None  # kept only as long as a worker may need them
    if result is not None:
        operation.result = result
    operation.finished_at = utcnow()
    release_cluster(session, operation)
