"""Operation kinds: each kind is one named, registered unit.

A kind *plans* (at request time, in the service that opens the operation: preconditions, its
steps, their playbooks and extra-vars, which secrets each step gets) and *applies* (at run time,
in whichever process runs the job: what each step's result changes in the store). The plan is
stored on the operation row (`steps`, `params`, encrypted secrets), so a job is just the
operation id: any worker rebuilds it from the store and finds its kind by `Operation.kind`.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import ClassVar

from sqlalchemy.orm import Session

from api.store.models import Cluster, Operation


@dataclass(frozen=True)
class Step:
    """One playbook run of an operation."""

    playbook: str
    extravars: dict = field(default_factory=dict)  # never a secret: stored on the operation
    secrets: tuple[str, ...] = ()  # names of the operation's secrets this step's vars file holds

    def to_json(self) -> dict:
        return {**asdict(self), "secrets": list(self.secrets)}

    @classmethod
    def from_json(cls, data: dict) -> Step:
        return cls(playbook=data["playbook"], extravars=data.get("extravars") or {},
                   secrets=tuple(data.get("secrets") or ()))


@dataclass
class Outcome:
    """What one playbook run gave back."""

    status: str  # ansible-runner status: successful | failed | canceled | timeout
    stats: dict = field(default_factory=dict)  # the playbook's set_stats data (key pgdbaas)
    error: str | None = None  # message of the last failed task, masked

    @property
    def ok(self) -> bool:
        return self.status == "successful"

    def host(self, alias: str) -> dict:
        """The report of one inventory host (a member) of this run."""
        return (self.stats.get("hosts") or {}).get(alias) or {}

    @property
    def observed(self) -> bool:
        """Whether any host reported its instance."""
        return any("instance" in report for report in (self.stats.get("hosts") or {}).values())

    def first(self, key: str):
        """`key` of the first host that reports it (single-member operations)."""
        for report in (self.stats.get("hosts") or {}).values():
            if key in report:
                return report[key]
        return None


class OperationKind:
    """Base of every kind. Subclasses set `name` and override what differs."""

    name: ClassVar[str] = ""
    # Whether the operation holds its cluster (the conditional UPDATE of active_operation_id).
    lock: ClassVar[bool] = True
    # What a failed step leaves: "recorded" (the earlier steps' results stay in the store, and
    # repeating the request resumes from there) or "undone". Documented per kind.
    on_failure: ClassVar[str] = "recorded"
    # A playbook the engine runs after a failed step whose result observed no instance (a play that
    # fails before its report): its observation is applied like a step's, the operation still fails
    # with the step's reason. None: the failure leaves what record_observation decides (ERROR).
    observe_after_failure: ClassVar[str | None] = None

    def apply_step(self, session: Session, operation: Operation, cluster: Cluster | None, index: int,
                   outcome: Outcome) -> None:
        """What the result of step `index` changes in the store (called for failed steps too)."""

    def apply_observation(self, session: Session, operation: Operation, cluster: Cluster | None,
                          outcome: Outcome) -> None:
        """What the `observe_after_failure` playbook saw (after a failed step that reported nothing)."""

    def finish(self, session: Session, operation: Operation, cluster: Cluster | None, outcome: Outcome) -> None:
        """After the last step ran (or the first failed one): the operation's own records."""


KINDS: dict[str, OperationKind] = {}


def register(kind: OperationKind) -> OperationKind:
    if not kind.name or kind.name in KINDS:
        raise ValueError(f"operation kind {kind.name!r} is unnamed or registered twice")
    KINDS[kind.name] = kind
    return kind


def registered(cls: type[OperationKind]) -> type[OperationKind]:
    """Class decorator: register one instance of the kind."""
    register(cls())
    return cls


def get(name: str) -> OperationKind:
    # The kinds live with their services: importing api.services registers them all.
    import api.services  # noqa: F401  (side effect: registration)

    try:
        return KINDS[name]
    except KeyError:
        raise LookupError(f"no operation kind {name!r}") from None
