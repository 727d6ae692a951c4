"""Opening an operation: the row (kind, parameters, plan, encrypted secrets), the cluster's lock,
and the job queued once the row is committed (so whichever worker takes it finds it)."""
from __future__ import annotations

import json
from collections.abc import Iterable

from sqlalchemy.orm import Session

from api import operations as ops
from api.engine import kinds
from api.engine.kinds import Step
from api.store.models import Account, Cluster, Operation


def submit(ctx, session: Session, actor: Account, cluster: Cluster | None, kind: str, steps: list[Step], *,
           params: dict | None = None, secrets: dict | None = None, allowed_states: Iterable[str] | None = None,
           transitional_state: str | None = None) -> Operation:
    registered = kinds.get(kind)
    encrypted = ctx.cipher.encrypt(json.dumps(secrets).encode()).decode() if secrets else None
    operation = ops.open_operation(session, kind=kind, actor_id=actor.id, cluster=cluster,
                                   steps=[step.to_json() for step in steps], params=params,
                                   secrets_encrypted=encrypted, allowed_states=allowed_states,
                                   transitional_state=transitional_state, lock=registered.lock)
    session.info.setdefault("after_commit", []).append(lambda: ctx.executor.submit(operation.id))
    return operation
