"""Read replicas: each a cluster of its own (its own id, `topology = REPLICA`) whose one instance
streams from an origin cluster's (the collection's create_replica.yml, replica_status.yml,
promote_replica.yml, reset_replica.yml; docs/playbooks.md "Read replicas").

Creating replicas and reading their state are operations on the **origin** (its lock: its role,
slots and pg_hba.conf change), one step per replica; the steps' extra-vars name the replica (the
playbooks' shared variables) and the replica's host joins the job's inventory (`params.hosts`).
Promote and reset are operations on the replica. The replication role's password is the
origin's (`settings.replication_password_encrypted`, Fernet): every replica of an origin streams
with it, so a new replica or a reset never breaks the others.
"""
from __future__ import annotations

import secrets as secrets_module

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.context import Context
from api.engine.kinds import OperationKind, Step, registered
from api.errors import Conflict, Invalid
from api.services import catalog
from api.services.clusters import (CREATING, ERROR, HA, RUNNING, STANDALONE, STOPPED, TERMINATED, ClusterKind,
                                   get_cluster, get_live_cluster, instance_name, primary, provision_step,
                                   record_observation, submit)
from api.services.members import REPLICA
from api.services.validation import CLUSTER_NAME_RE
from api.store.models import Account, Cluster, Member, Operation, new_id

REPLICA_TOPOLOGY = "REPLICA"
MAX_REPLICAS = 5
PASSWORD_SECRET = "pg_replication_password"


def replica_record(cluster: Cluster) -> dict:
    """What the cluster keeps of being a replica: origin_id, region and the last observed state."""
    record = cluster.settings.get("replica")
    return record if isinstance(record, dict) else {}


def _replication_password(ctx: Context, origin: Cluster) -> str:
    """The origin's replication role password, made once and kept encrypted on the origin."""
    encrypted = origin.settings.get("replication_password_encrypted")
    if encrypted:
        return ctx.cipher.decrypt(encrypted.encode()).decode()
    password = secrets_module.token_urlsafe(24)
    origin.settings = {**origin.settings,
                       "replication_password_encrypted": ctx.cipher.encrypt(password.encode()).decode()}
    return password


def _origin_vars(ctx: Context, origin: Cluster, replica_host: str) -> dict:
    lead = primary(origin)
    return {"pg_origin_cluster": lead.name, "pg_origin_host": lead.host,
            "pg_origin_address": ctx.hosts.address_of(lead.host), "pg_origin_port": lead.port,
            "pg_replica_hba_address": f"{ctx.hosts.address_of(replica_host)}/32"}


def _replica_vars(replica: Cluster) -> dict:
    """The shared variables of the replica playbooks, naming the replica (its member is its instance)."""
    member = primary(replica)
    return {"pg_cluster": member.name, "pg_port": member.port, "pg_version": replica.major_version,
            "pg_instance_id": replica.id, "pg_hosts": member.host, "pg_controller": "debian"}


def _check_origin(origin: Cluster) -> None:
    if origin.topology == REPLICA_TOPOLOGY:
        raise Conflict(f"cluster {origin.id} is a read replica: replicas of a replica are not supported")
    if origin.topology == HA:
        raise Conflict(f"cluster {origin.id} is HA: read replicas of an HA cluster are not supported yet")
    if origin.service_state != RUNNING:
        raise Conflict(f"cluster {origin.id} is {origin.service_state}: its replicas need it RUNNING")


def create_replicas(ctx: Context, actor: Account, origin_id: str, names: list[str], count: int | None = None, *,
                    region: str | None = None, allowed_cidrs: list[str] | None = None,
                    tags: list | None = None) -> tuple[list[Cluster], Operation]:
    """`count` replicas of the origin (names from `names`, the rest `<origin>-replica-<k>`), each a new
    cluster; with `region` (an inventory group), placed on a host of that group."""
    count = len(names) if count is None else count
    if not 1 <= count <= MAX_REPLICAS:
        raise Invalid(f"must be between 1 and {MAX_REPLICAS}", field="replica_count")
    if len(names) > count:
        raise Invalid("names more replicas than replica_count", field="replicas")
    if region is not None and region not in ctx.hosts.groups():
        raise Invalid(f"no inventory group {region!r} (the regions are: {', '.join(ctx.hosts.groups())})",
                      field="region")
    with ctx.sessions.begin() as session:
        origin = get_live_cluster(ctx, actor, origin_id, session)
        _check_origin(origin)
        names = names + [f"{origin.name[:50]}-replica-{k}" for k in range(len(names) + 1, count + 1)]
        for index, name in enumerate(names):
            if not CLUSTER_NAME_RE.match(name):
                raise Invalid("3-63 characters: lowercase letters, digits, _ or -, starting with a letter",
                              field=f"replicas.{index}.name")
            if len(set(names)) != len(names) or session.scalar(
                    select(Cluster.id).where(Cluster.owner_id == actor.id, Cluster.name == name,
                                             Cluster.service_state != TERMINATED)):
                raise Conflict(f"you already have a cluster named {name!r}", field=f"replicas.{index}.name")
        version = catalog.for_new_cluster(ctx, origin.engine_version_id, field_name="cluster_id", allow_inactive=True)
        password = _replication_password(ctx, origin)
        replicas, steps, hosts = [], [], set()
        for name in names:
            replica = _new_replica(ctx, session, actor, origin, name, region, allowed_cidrs or [], tags or [])
            member = primary(replica)
            provision = provision_step(replica, version)
            settings_vars = {k: v for k, v in provision.extravars.items() if k not in ("pg_admin_user", "pg_database")}
            steps.append(Step("create_replica.yml", {**settings_vars, **_replica_vars(replica),
                                                      **_origin_vars(ctx, origin, member.host)}, (PASSWORD_SECRET,)))
            replicas.append(replica)
            hosts.add(member.host)
        operation = submit(ctx, session, origin, actor, "create_replicas", steps,
                           params={"replicas": [r.id for r in replicas], "hosts": sorted(hosts)},
                           secrets={PASSWORD_SECRET: password}, allowed_states=(RUNNING,))
    return replicas, operation


def _new_replica(ctx: Context, session: Session, actor: Account, origin: Cluster, name: str, region: str | None,
                 allowed_cidrs: list[str], tags: list) -> Cluster:
    host, port = ctx.hosts.place(session, ctx.settings.ports, region)
    settings = {key: origin.settings.get(key) for key in ("sizing", "encoding", "locale", "timezone",
                                                          "database_user_name") if key in origin.settings}
    settings.update(port=port, allowable_ip_addresses=allowed_cidrs,
                    replica={"origin_id": origin.id, "origin_name": origin.name, "region": region or ""})
    replica = Cluster(id=new_id(), name=name, owner_id=actor.id, engine_version_id=origin.engine_version_id,
                      major_version=origin.major_version, software_version=origin.software_version,
                      topology=REPLICA_TOPOLOGY, service_state=CREATING, database_name=origin.database_name,
                      settings=settings, tags=tags, dialect_fields={}, created_by=actor.id, modified_by=actor.id)
    replica.members.append(Member(name=instance_name(name, replica.id), host=host.name, port=port,
                                  role_type="ACTIVE", role=REPLICA, service_state=CREATING))
    session.add(replica)
    session.flush()
    return replica


def record_replica(replica: Cluster, report: dict | None) -> None:
    """The replica playbooks' `.replica` report on the replica's record (its role stays replica)."""
    if isinstance(report, dict) and report:
        kept = {k: report.get(k) for k in ("replica_state", "replica_state_detail", "synced_at", "lag_seconds",
                                           "lag_bytes", "promoted_at", "timeline")}
        replica.settings = {**replica.settings, "replica": {**replica_record(replica), **kept}}
    for member in replica.members:
        member.role = REPLICA if replica.topology == REPLICA_TOPOLOGY else member.role


class OnReplicas(OperationKind):
    """An operation of the origin whose steps act on its replicas: step i on params.replicas[i]."""

    def apply_step(self, session, operation, cluster, index, outcome):
        replica = session.get(Cluster, operation.params["replicas"][index])
        if replica is None:
            return
        record_observation(session, operation, replica, outcome)
        record_replica(replica, outcome.first("replica"))


@registered
class CreateReplicas(OnReplicas):
    """create_replica.yml per replica. A failed step leaves that replica ERROR and the ones after it,
    never started, ERROR too: terminate them, or reset them (reset-replica) once the cause is fixed."""

    name = "create_replicas"

    def finish(self, session, operation, cluster, outcome):
        for replica_id in operation.params["replicas"]:
            replica = session.get(Cluster, replica_id)
            if replica is not None and replica.service_state == CREATING:
                replica.service_state = ERROR
                for member in replica.members:
                    member.service_state = ERROR


@registered
class SyncReplicaState(OnReplicas):
    """replica_status.yml per replica (read-only): their state, lag and synced_at, read again."""

    name = "sync_replica_state"
    lock = False


def replicas_of(ctx: Context, actor: Account, origin_id: str, session: Session | None = None) -> list[Cluster]:
    """The origin's live read replicas (promoted ones are clusters of their own)."""
    def load(s: Session) -> list[Cluster]:
        get_cluster(ctx, actor, origin_id, s)
        found = s.scalars(select(Cluster).where(Cluster.topology == REPLICA_TOPOLOGY,
                                                Cluster.service_state != TERMINATED).order_by(Cluster.name))
        return [c for c in found if replica_record(c).get("origin_id") == origin_id
                and (actor.role == "admin" or c.owner_id == actor.id)]

    if session is not None:
        return load(session)
    with ctx.sessions() as s:
        return load(s)


def sync_replica_state(ctx: Context, actor: Account, origin_id: str) -> Operation:
    with ctx.sessions.begin() as session:
        origin = get_live_cluster(ctx, actor, origin_id, session)
        replicas = [r for r in replicas_of(ctx, actor, origin_id, session) if r.members]
        if not replicas:
            raise Conflict(f"cluster {origin.id} has no read replica")
        steps = [Step("replica_status.yml", {**_replica_vars(r), "pg_origin_cluster": primary(origin).name,
                                             "pg_origin_host": primary(origin).host}) for r in replicas]
        params = {"replicas": [r.id for r in replicas], "hosts": sorted({primary(r).host for r in replicas})}
        return submit(ctx, session, origin, actor, "sync_replica_state", steps, params=params)


def _origin_of(ctx: Context, actor: Account, replica: Cluster, session: Session) -> Cluster | None:
    """The replica's origin cluster while it has an instance (it may be another account's: an admin's copy)."""
    origin_id = replica_record(replica).get("origin_id")
    if not origin_id:
        return None
    origin = session.get(Cluster, origin_id)
    return origin if origin is not None and origin.service_state != TERMINATED and origin.members else None


@registered
class PromoteReplica(ClusterKind):
    """promote_replica.yml: the replica becomes an independent primary (STANDALONE); its slot on the
    origin is dropped."""

    name = "promote_replica"

    def apply_step(self, session, operation, cluster, index, outcome):
        super().apply_step(session, operation, cluster, index, outcome)
        if cluster is not None:
            record_replica(cluster, outcome.first("replica"))

    def finish(self, session, operation, cluster, outcome):
        if outcome.ok and cluster is not None:
            cluster.topology = STANDALONE
            for member in cluster.members:
                member.role = "primary"


@registered
class ResetReplica(ClusterKind):
    """reset_replica.yml: a fresh copy of the origin replaces the replica's data (a promoted one's
    writes are lost) and it follows again (REPLICA)."""

    name = "reset_replica"

    def apply_step(self, session, operation, cluster, index, outcome):
        if outcome.ok and cluster is not None:
            cluster.topology = REPLICA_TOPOLOGY
        super().apply_step(session, operation, cluster, index, outcome)
        if cluster is not None:
            record_replica(cluster, outcome.first("replica"))


def promote(ctx: Context, actor: Account, replica_id: str) -> Operation:
    with ctx.sessions.begin() as session:
        replica = get_live_cluster(ctx, actor, replica_id, session)
        if replica.topology != REPLICA_TOPOLOGY:
            raise Conflict(f"cluster {replica.id} is not a read replica")
        extravars, params = {"pg_hosts": primary(replica).host}, {}
        origin = _origin_of(ctx, actor, replica, session)
        if origin is not None:  # its slot there is dropped
            extravars.update(pg_origin_cluster=primary(origin).name, pg_origin_host=primary(origin).host)
            params["hosts"] = [primary(origin).host]
        return submit(ctx, session, replica, actor, "promote_replica", [Step("promote_replica.yml", extravars)],
                      params=params, allowed_states=(RUNNING, ERROR))


def reset_replica(ctx: Context, actor: Account, replica_id: str) -> Operation:
    with ctx.sessions.begin() as session:
        replica = get_live_cluster(ctx, actor, replica_id, session)
        if not replica_record(replica).get("origin_id"):
            raise Conflict(f"cluster {replica.id} is not (and never was) a read replica")
        origin = _origin_of(ctx, actor, replica, session)
        if origin is None:
            raise Conflict(f"the origin of cluster {replica.id} is gone: nothing to re-sync from")
        _check_origin(origin)
        member = primary(replica)
        extravars = {**_origin_vars(ctx, origin, member.host), "pg_hosts": member.host}
        return submit(ctx, session, replica, actor, "reset_replica", [Step("reset_replica.yml", extravars,
                                                                           (PASSWORD_SECRET,))],
                      secrets={PASSWORD_SECRET: _replication_password(ctx, origin)},
                      params={"hosts": [primary(origin).host]}, allowed_states=(RUNNING, STOPPED, ERROR))


def origin_terminate_check(session: Session, cluster: Cluster) -> None:
    """An origin with live read replicas is not terminated (they would stream from nothing)."""
    found = session.scalars(select(Cluster).where(Cluster.topology == REPLICA_TOPOLOGY,
                                                  Cluster.service_state != TERMINATED))
    names = [c.name for c in found if replica_record(c).get("origin_id") == cluster.id]
    if names:
        raise Conflict(f"cluster {cluster.id} has read replicas ({', '.join(names)}): terminate or promote them first")


def terminate_vars(session: Session, cluster: Cluster) -> dict:
    """A replica's terminate drops its slot on the origin (when the origin still runs somewhere)."""
    origin_id = replica_record(cluster).get("origin_id")
    if cluster.topology != REPLICA_TOPOLOGY or not origin_id:
        return {}
    origin = session.get(Cluster, origin_id)
    if origin is None or origin.service_state == TERMINATED or not origin.members:
        return {}
    return {"pg_origin_cluster": primary(origin).name, "pg_origin_host": primary(origin).host}

