"""Running one operation from the store: its steps in order, each applied by its kind.

`run_operation` is all a worker needs: the operation id. The plan (steps, parameters, encrypted
secrets) is on the row; the kind is found by name. It starts only a QUEUED operation (a cancel
may have ended it while it waited), counts progress over every step (the total is known before
the first task: each playbook's tasks are listed once per process), stops at the first failed
step, and ends the operation, its secrets and its cluster's lock in one transaction.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable

from sqlalchemy import update

from api import operations as ops
from api.engine import kinds
from api.engine.kinds import Outcome, Step
from api.store.models import Cluster, Operation, utcnow

log = logging.getLogger("pgdbaas.engine")


def open_secrets(ctx, operation: Operation) -> dict:
    if not operation.secrets_encrypted:
        return {}
    return json.loads(ctx.cipher.decrypt(operation.secrets_encrypted.encode()))


def run_operation(ctx, operation_id: str, should_cancel: Callable[[], bool]) -> None:
    executor = ctx.executor
    with ctx.sessions() as session:
        operation = session.get(Operation, operation_id)
        if operation is None or operation.state != ops.QUEUED:
            return
        kind = kinds.get(operation.kind)
        plan = [Step.from_json(s) for s in operation.steps]
        secrets = open_secrets(ctx, operation)
        cluster = session.get(Cluster, operation.cluster_id) if operation.cluster_id else None
        # The cluster's hosts, and those of other clusters the operation makes (a replica's: params.hosts).
        hosts = {m.host for m in cluster.members} if cluster else set()
        inventory = ctx.hosts.job_inventory(sorted(hosts | set(operation.params.get("hosts") or [])),
                                            ctx.settings.host_group)
    try:
        total = sum(executor.count_tasks(step.playbook, inventory) for step in plan)
    except Exception:  # a progress total is nice to have, never a reason to fail the operation
        log.exception("could not count the tasks of %s", [s.playbook for s in plan])
        total = None
    with ctx.sessions.begin() as session:
        # Only a QUEUED operation starts (a cancel may have ended it meanwhile); it starts with its total.
        started = session.execute(
            update(Operation).where(Operation.id == operation_id, Operation.state == ops.QUEUED)
            .values(state=ops.IN_PROGRESS, started_at=utcnow(), tasks_total=total, **executor.worker.columns())
        ).rowcount
    if not started:
        return

    outcome = Outcome(status="successful")
    done = 0
    for index, step in enumerate(plan):
        with ctx.sessions.begin() as session:
            session.execute(update(Operation).where(Operation.id == operation_id)
                            .values(step=index, playbook=step.playbook, extravars=step.extravars))
        outcome, done = executor.run_playbook(
            operation_id, ident=f"step{index}", playbook=step.playbook, inventory=inventory,
            extravars=step.extravars, secrets={name: secrets[name] for name in step.secrets if name in secrets},
            should_cancel=should_cancel, tasks_before=done)
        with ctx.sessions.begin() as session:
            operation = session.get(Operation, operation_id, with_for_update=True)
            if operation.state in ops.FINAL_STATES:
                # Ended meanwhile (a reaper took this worker for dead): what it saw is stale.
                log.warning("operation %s ended while its step %d ran: result dropped", operation_id, index)
                return
            cluster = session.get(Cluster, operation.cluster_id) if operation.cluster_id else None
            kind.apply_step(session, operation, cluster, index, outcome)
        if not outcome.ok:
            if len(plan) > 1 and outcome.error:
                outcome.error = f"step {index + 1} of {len(plan)} ({step.playbook}): {outcome.error}"
            if kind.observe_after_failure and outcome.status == "failed" and not outcome.observed:
                if not observe(ctx, operation_id, kind, step, inventory, should_cancel, done):
                    return
            break
    finish(ctx, operation_id, kind, outcome, done)


CONTRACT_VARS = ("pg_cluster", "pg_version", "pg_port", "pg_instance_id")


def observe(ctx, operation_id: str, kind: kinds.OperationKind, failed: Step, inventory: dict, should_cancel,
            done: int) -> bool:
    """The kind's observation playbook after a failed step that reported no instance, with that step's
    contract variables; the kind applies what it observed (the operation still fails with the step's
    reason). False when the operation ended meanwhile."""
    extravars = {k: v for k, v in failed.extravars.items() if k in CONTRACT_VARS}
    observed, _ = ctx.executor.run_playbook(operation_id, ident="observe", playbook=kind.observe_after_failure,
                                            inventory=inventory, extravars=extravars, secrets={},
                                            should_cancel=should_cancel, tasks_before=done)
    with ctx.sessions.begin() as session:
        operation = session.get(Operation, operation_id, with_for_update=True)
        if operation.state in ops.FINAL_STATES:
            return False
        cluster = session.get(Cluster, operation.cluster_id) if operation.cluster_id else None
        kind.apply_observation(session, operation, cluster, observed)
    return True


def finish(ctx, operation_id: str, kind: kinds.OperationKind, outcome: Outcome, tasks_done: int | None = None) -> None:
    """End the operation: the kind's records, its state, no secret kept, the cluster freed."""
    with ctx.sessions.begin() as session:
        operation = session.get(Operation, operation_id)
        if operation is None or operation.state in ops.FINAL_STATES:
            return
        if tasks_done is not None:
            operation.tasks_done = tasks_done
        cluster = session.get(Cluster, operation.cluster_id) if operation.cluster_id else None
        kind.finish(session, operation, cluster, outcome)
        state = ops.SUCCESS if outcome.ok else ops.CANCELED if outcome.status == "canceled" else ops.ERROR
        ops.finish(session, operation, state, error=None if outcome.ok else outcome.error, result=outcome.stats)
