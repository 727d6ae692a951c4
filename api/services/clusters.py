"""Cluster lifecycle: create, observe, start, stop, restart, terminate, create_admin.

Each function checks its operation's preconditions and plans it (the kind, its steps and their
extra-vars); each kind, registered here, applies what its steps' results change. Every dialect
calls the same functions: /v1, the agent facade, ITCare and DBaaS.
"""
from __future__ import annotations

import ipaddress
import threading
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.context import Context
from api.engine import submit as engine_submit
from api.engine.kinds import OperationKind, Outcome, Step, register, registered
from api.errors import Conflict, Invalid, NotFound
from api.services import catalog
from api.services.members import (CREATING, ERROR, OBSERVED_STATES, PRIMARY, RESTARTING, RUNNING,  # noqa: F401
                                   SERVICE_STATES, STARTING, STOPPED, STOPPING, TERMINATED, TERMINATING,
                                   TRANSITIONAL, forget_instances, primary, record_observation)
from api.services.validation import (CLUSTER_NAME_RE, ENCODINGS, LOCALE_RE, SIZING_RE, SQL_NAME_RE,  # noqa: F401
                                     check_role_name, check_sql_name)
from api.store.models import (Account, Backup, BackupPolicy, Cluster, Credential, Database, Member, Operation,
                              ServiceFact, new_id)

DEFAULT_SIZING = "2cpu4gb"
PLACEMENT_ATTEMPTS = 5
_placement_lock = threading.Lock()


@dataclass
class ClusterSpec:
    """A new cluster, as every dialect describes it (validated by `create_cluster`)."""

    name: str
    engine_version: str = ""
    port: int | None = None
    database_name: str = ""
    user_name: str = ""
    user_password: str = ""
    encoding: str = "UTF8"
    locale: str = "C.UTF-8"
    sizing: str = DEFAULT_SIZING
    allowed_cidrs: list[str] = field(default_factory=list)
    tags: list = field(default_factory=list)
    timezone: str = ""
    host_group: str | None = None
    # Place the instance on this host (a restore goes where its source's repository is).
    host_name: str | None = None
    dialect_fields: dict = field(default_factory=dict)
    # The body field naming the engine version, in this dialect's words (its 400 names it).
    version_field: str = "dbaas_engine_version_id"
    # A restore makes its source's version, whether or not the catalog still offers it to new clusters.
    allow_inactive_version: bool = False
    # HA from the start: a Patroni cluster of the instance and a streaming standby (api.services.ha).
    ha_enabled: bool = False
    replication_lag_mb: int = 16
    # The body fields naming them, in this dialect's words.
    ha_field: str = "ha_enabled"
    lag_field: str = "replication_lag_mb"


# -- observed facts shared by every service ------------------------------------------------
def observed_databases(cluster: Cluster) -> list[dict]:
    """Databases the last playbook saw (info module), each with name, owner, size_bytes, extensions."""
    return [d for d in cluster.observed.get("databases", []) if isinstance(d, dict)]


def observed_roles(cluster: Cluster) -> list[dict]:
    return [r for r in cluster.observed.get("roles", []) if isinstance(r, dict)]


# -- reading ---------------------------------------------------------------------------------
def _visible(statement, actor: Account):
    return statement if actor.role == "admin" else statement.where(Cluster.owner_id == actor.id)


def get_cluster(ctx: Context, actor: Account, cluster_id: str, session: Session | None = None) -> Cluster:
    def load(s: Session) -> Cluster:
        cluster = s.scalar(_visible(select(Cluster).where(Cluster.id == cluster_id), actor))
        if cluster is None:
            raise NotFound(f"cluster {cluster_id} not found")
        return cluster

    if session is not None:
        return load(session)
    with ctx.sessions() as s:
        return load(s)


def instance_name(cluster_name: str, cluster_id: str) -> str:
    """The instance's name on its host: unique per cluster, so a new cluster never meets an instance
    that exists already (made by hand, by another control plane, or left over) under its name."""
    return f"{cluster_name[:50]}-{cluster_id[:8]}"


AGENT_CLUSTER_FACT = "agent_cluster_id"


def agent_cluster_id(ctx: Context) -> str | None:
    """The cluster the agent facade serves, kept by id: a later cluster of the same name is another one."""
    with ctx.sessions() as session:
        fact = session.get(ServiceFact, AGENT_CLUSTER_FACT)
        return fact.value if fact else None


def remember_agent_cluster(session: Session, cluster_id: str) -> None:
    fact = session.get(ServiceFact, AGENT_CLUSTER_FACT)
    if fact is None:
        session.add(ServiceFact(key=AGENT_CLUSTER_FACT, value=cluster_id))
    else:
        fact.value = cluster_id


def get_live_cluster(ctx: Context, actor: Account, cluster_id: str, session: Session | None = None) -> Cluster:
    """A cluster an operation may act on: visible to the actor and not TERMINATED (409)."""
    cluster = get_cluster(ctx, actor, cluster_id, session)
    check_not_terminated(cluster)
    return cluster


SORTABLE = {"name": Cluster.name, "created_at": Cluster.created_at, "modified_at": Cluster.modified_at,
            "service_state": Cluster.service_state}


def list_clusters(ctx: Context, actor: Account, *, page: int = 0, size: int = 20, sort: str = "name:asc",
                  name: str | None = None, service_state: str | None = None,
                  database_name: str | None = None) -> tuple[list[Cluster], int]:
    column_name, _, direction = sort.partition(":")
    if column_name not in SORTABLE or direction not in ("", "asc", "desc"):
        raise Invalid(f"sort must be one of {', '.join(SORTABLE)} with :asc or :desc", field="sort")
    if service_state and service_state not in SERVICE_STATES:
        raise Invalid(f"service_state must be one of {', '.join(SERVICE_STATES)}", field="service_state")
    statement = _visible(select(Cluster), actor)
    if name:
        statement = statement.where(Cluster.name.contains(name))
    if service_state:
        statement = statement.where(Cluster.service_state == service_state)
    if database_name:
        statement = statement.where(Cluster.database_name == database_name)
    column = SORTABLE[column_name]
    with ctx.sessions() as session:
        count = session.scalar(select(func.count()).select_from(statement.subquery()))
        rows = session.scalars(statement.order_by(column.desc() if direction == "desc" else column.asc())
                               .offset(page * size).limit(size))
        return list(rows), count


# -- creating --------------------------------------------------------------------------------
def _validate(ctx: Context, spec: ClusterSpec) -> catalog.EngineVersion:
    if not CLUSTER_NAME_RE.match(spec.name):
        raise Invalid("name must be 3-63 characters: lowercase letters, digits, _ or -, starting with a letter",
                      field="name")
    version = catalog.for_new_cluster(ctx, spec.engine_version, field_name=spec.version_field,
                                      allow_inactive=spec.allow_inactive_version)
    if spec.database_name:
        check_sql_name(spec.database_name, "database_name")
    if spec.user_name or spec.user_password or spec.database_name:
        check_role_name(spec.user_name, "database_user_name")
        if len(spec.user_password) < 8:
            raise Invalid("database_user_password must be at least 8 characters", field="database_user_password")
    encoding = spec.encoding.upper().replace("-", "")
    if encoding not in ENCODINGS:
        raise Invalid(f"database_encoding must be one of {', '.join(ENCODINGS)}", field="database_encoding")
    spec.encoding = encoding
    if not LOCALE_RE.match(spec.locale):
        raise Invalid("database_locale must look like C, C.UTF-8 or en_US.UTF-8", field="database_locale")
    if not SIZING_RE.match(spec.sizing):
        raise Invalid("server_type_name must look like 2cpu4gb", field="server_type_name")
    for cidr in spec.allowed_cidrs:
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError as exc:
            raise Invalid(f"{cidr!r} is not an IP address or CIDR", field="allowable_ip_addresses") from exc
    if spec.timezone:
        try:
            zoneinfo.ZoneInfo(spec.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
            raise Invalid(f"unknown timezone {spec.timezone!r}", field="timezone") from exc
    if spec.ha_enabled:
        from api.services import ha  # it plans on top of this module's functions

        ha.check_version(version.major, spec.ha_field)
        ha.check_lag(spec.replication_lag_mb, spec.lag_field, high=ha.CREATE_LAG_MAX)
    if spec.port is not None and spec.port not in ctx.settings.ports:
        raise Invalid(f"database_port must be within {ctx.settings.port_range}, the ports this installation "
                      "hands to instances (PGDBAAS_PORT_RANGE)", field="database_port")
    return version


def _hba_entries(allowed_cidrs: list[str]) -> list[dict]:
    entries = [
        {"type": "local", "database": "all", "user": "all", "method": "scram-sha-256"},
        {"type": "host", "database": "all", "user": "all", "address": "127.0.0.1/32", "method": "scram-sha-256"},
        {"type": "host", "database": "all", "user": "all", "address": "::1/128", "method": "scram-sha-256"},
    ]
    for cidr in allowed_cidrs:
        network = str(ipaddress.ip_network(cidr, strict=False))
        entries.append({"type": "host", "database": "all", "user": "all", "address": network,
                        "method": "scram-sha-256"})
    return entries


@dataclass(frozen=True)
class FollowUp:
    """Steps that run after the provision in the same operation (DBaaS: its database), under the
    operation kind that applies them all. `plan`, when given, makes the whole plan instead from the
    new cluster and its provision step (a restore: one restore.yml with the provision's settings)."""

    kind: str
    steps: list[Step] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    secrets: dict = field(default_factory=dict)
    plan: Callable[[Cluster, Step], list[Step]] | None = None


def create_cluster(ctx: Context, actor: Account, spec: ClusterSpec,
                   follow_up: FollowUp | None = None) -> tuple[Cluster, Operation]:
    version = _validate(ctx, spec)
    # Two creates may pick the same free port at once. In one process the lock orders them; across
    # processes the (host, port) unique constraint lets one win and the other places again.
    for attempt in range(PLACEMENT_ATTEMPTS):
        try:
            with _placement_lock:
                return _create_cluster(ctx, actor, spec, version, follow_up)
        except IntegrityError as exc:
            if attempt == PLACEMENT_ATTEMPTS - 1:
                raise Conflict("could not allocate a port for the instance: try again") from exc
    raise AssertionError("unreachable")


def provision_step(cluster: Cluster, version: catalog.EngineVersion) -> Step:
    """The provision playbook of a cluster, as its record describes it (rerunnable: same instance id)."""
    settings = cluster.settings
    cidrs = settings.get("allowable_ip_addresses", [])
    extravars = {
        **version.install_vars(),
        "pg_sizing": settings["sizing"], "pg_locale": settings["locale"], "pg_encoding": settings["encoding"],
        "pg_listen_addresses": "*" if cidrs else "localhost",
        "pg_hba_entries": _hba_entries(cidrs),
    }
    if settings.get("timezone"):
        extravars["pg_timezone"] = settings["timezone"]
    user = settings.get("database_user_name")
    if user:
        extravars["pg_admin_user"] = user
    if cluster.database_name:
        extravars["pg_database"] = cluster.database_name
    return Step("provision.yml", extravars, ("pg_admin_password",) if user else ())


def _create_cluster(ctx: Context, actor: Account, spec: ClusterSpec, version: catalog.EngineVersion,
                    follow_up: FollowUp | None) -> tuple[Cluster, Operation]:
    with ctx.sessions.begin() as session:
        # Names are unique per account: what another account named its clusters is none of its business.
        if session.scalar(select(Cluster.id).where(Cluster.owner_id == actor.id, Cluster.name == spec.name,
                                                   Cluster.service_state != TERMINATED)):
            raise Conflict(f"you already have a cluster named {spec.name!r}", field="name")
        if spec.host_name is not None:
            host = ctx.hosts.hosts[spec.host_name]
            port = spec.port or ctx.hosts.free_port(session, host, ctx.settings.ports)
            if port is None:
                raise Conflict(f"no free port left in the configured port range on {host.name}")
            if ctx.hosts.port_in_use(session, host, port):
                raise Conflict(f"port {port} is already in use on {host.name}", field="database_port")
        elif spec.port is not None:
            host = min(ctx.hosts.hosts.values(), key=lambda h: h.name) if spec.host_group is None else \
                ctx.hosts.place(session, ctx.settings.ports, spec.host_group)[0]
            if ctx.hosts.port_in_use(session, host, spec.port):
                raise Conflict(f"port {spec.port} is already in use on {host.name}", field="database_port")
            port = spec.port
        else:
            host, port = ctx.hosts.place(session, ctx.settings.ports, spec.host_group)
        settings = {
            "sizing": spec.sizing, "encoding": spec.encoding, "locale": spec.locale,
            "allowable_ip_addresses": spec.allowed_cidrs, "timezone": spec.timezone,
            "database_user_name": spec.user_name, "port": port,
        }
        cluster = Cluster(
            id=new_id(), name=spec.name, owner_id=actor.id, engine_version_id=version.id, major_version=version.major,
            software_version=version.software_version, service_state=CREATING, database_name=spec.database_name,
            settings=settings, tags=spec.tags, dialect_fields=spec.dialect_fields,
            created_by=actor.id, modified_by=actor.id,
        )
        cluster.members.append(Member(name=instance_name(spec.name, cluster.id), host=host.name, port=port,
                                      role_type="ACTIVE", role=PRIMARY, service_state=CREATING))
        session.add(cluster)
        session.flush()
        steps = [provision_step(cluster, version)]
        params: dict = {}
        secrets: dict = {}
        if spec.ha_enabled:
            from api.services import ha

            steps[0], passwords = ha.plan_create(ctx, session, cluster, steps[0], spec.replication_lag_mb)
            cluster.topology = HA
            secrets.update(passwords)
        if spec.user_name:
            secrets["pg_admin_password"] = spec.user_password
            params["password_encrypted"] = ctx.cipher.encrypt(spec.user_password.encode()).decode()
        kind = "create"
        if follow_up is not None:
            kind = follow_up.kind
            steps = follow_up.plan(cluster, steps[0]) if follow_up.plan else steps + follow_up.steps
            params.update(follow_up.params)
            secrets.update(follow_up.secrets)
        operation = submit(ctx, session, cluster, actor, kind, steps, params=params, secrets=secrets)
    return cluster, operation


class ClusterKind(OperationKind):
    """A kind acting on a cluster's instances: every step's result records what it observed."""

    def apply_step(self, session: Session, operation: Operation, cluster: Cluster | None, index: int,
                   outcome: Outcome) -> None:
        record_observation(session, operation, cluster, outcome)


def record_initial_objects(session: Session, operation: Operation, cluster: Cluster) -> None:
    """The initial user (and its database) of a provisioned cluster, as records."""
    user = cluster.settings.get("database_user_name")
    if not user:
        return
    database = None
    if cluster.database_name:
        database = session.scalar(select(Database).where(Database.cluster_id == cluster.id,
                                                         Database.name == cluster.database_name))
        if database is None:
            database = Database(cluster_id=cluster.id, name=cluster.database_name, owner=user,
                                created_by=operation.actor_id)
            session.add(database)
            session.flush()
    if not session.scalar(select(Credential.id).where(Credential.cluster_id == cluster.id, Credential.user == user)):
        session.add(Credential(cluster_id=cluster.id, database_id=database.id if database else None, user=user,
                               password_encrypted=operation.params["password_encrypted"],
                               created_by=operation.actor_id))


@registered
class CreateCluster(ClusterKind):
    """provision.yml. A failed create leaves the cluster ERROR (recorded): terminate it, or observe
    it; the provision is rerunnable on the same instance."""

    name = "create"

    def finish(self, session, operation, cluster, outcome):
        if outcome.ok and cluster is not None:
            record_initial_objects(session, operation, cluster)


# -- lifecycle ---------------------------------------------------------------------------------
class Lifecycle(ClusterKind):
    """One playbook on a cluster's instances, allowed from some states, showing a transitional one."""

    def __init__(self, name: str, playbook: str, allowed: tuple[str, ...] | None, transitional: str | None,
                 ha_playbook: str | None = None):
        self.name, self.playbook, self.allowed, self.transitional = name, playbook, allowed, transitional
        # The playbook for an HA cluster, when it is another one (observe: the Patroni cluster's view).
        self.ha_playbook = ha_playbook or playbook

    def open(self, ctx: Context, actor: Account, cluster_id: str) -> Operation:
        with ctx.sessions.begin() as session:
            cluster = get_live_cluster(ctx, actor, cluster_id, session)
            playbook = self.ha_playbook if cluster.topology == HA else self.playbook
            return submit(ctx, session, cluster, actor, self.name,
                          [Step(playbook, self.step_vars(session, cluster, playbook))],
                          allowed_states=self.allowed_for(cluster), transitional_state=self.transitional)

    def step_vars(self, session: Session, cluster: Cluster, playbook: str) -> dict:
        """The step's own extra-vars (besides the contract's)."""
        return {}

    def allowed_for(self, cluster: Cluster) -> tuple[str, ...] | None:
        """The states this cluster may be in for the operation."""
        return self.allowed


class Start(Lifecycle):
    def allowed_for(self, cluster):
        if cluster.topology == HA and any(m.service_state != RUNNING for m in cluster.members):
            return (*self.allowed, RUNNING)  # an HA cluster runs on while a member is down: start brings it back
        return self.allowed


class Terminate(Lifecycle):
    def step_vars(self, session, cluster, playbook):
        from api.services import replicas  # it plans on top of this module's functions

        replicas.origin_terminate_check(session, cluster)
        return {"pg_terminate_confirm": contract_vars(cluster, playbook)["pg_cluster"],
                **replicas.terminate_vars(session, cluster)}

    def finish(self, session, operation, cluster, outcome):
        if outcome.ok and cluster is not None:
            forget_instances(session, cluster)
            # The terminate role deleted its pgBackRest stanza: no backup of it is left.
            session.execute(delete(Backup).where(Backup.cluster_id == cluster.id))
            session.execute(delete(BackupPolicy).where(BackupPolicy.cluster_id == cluster.id))


START = register(Start("start", "start.yml", (STOPPED, ERROR), STARTING))
STOP = register(Lifecycle("stop", "stop.yml", (RUNNING,), STOPPING))
RESTART = register(Lifecycle("restart", "restart.yml", (RUNNING,), RESTARTING))
TERMINATE = register(Terminate("terminate", "terminate.yml", (RUNNING, STOPPED, ERROR, CREATING), TERMINATING))
OBSERVE = register(Lifecycle("observe", "status.yml", None, None, ha_playbook="ha_status.yml"))
# The agent seed's "on boot": bring the instance up whatever the record says.
BOOT = register(Lifecycle("boot", "start.yml", None, STARTING))


def start(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    return START.open(ctx, actor, cluster_id)


def stop(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    return STOP.open(ctx, actor, cluster_id)


def restart(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    return RESTART.open(ctx, actor, cluster_id)


def terminate(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    return TERMINATE.open(ctx, actor, cluster_id)


def observe(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    """Run the read-only status playbook and record what it saw."""
    return OBSERVE.open(ctx, actor, cluster_id)


def boot(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    return BOOT.open(ctx, actor, cluster_id)


@registered
class CreateAdmin(ClusterKind):
    name = "create_admin"


def create_admin(ctx: Context, actor: Account, cluster_id: str, user: str, password: str,
                 if_exists: str = "fail") -> Operation:
    check_role_name(user, "user")
    if not password:
        raise Invalid("password must not be empty", field="password")
    if if_exists not in ("fail", "update"):
        raise Invalid("if_exists must be fail or update", field="if_exists")
    with ctx.sessions.begin() as session:
        cluster = get_live_cluster(ctx, actor, cluster_id, session)
        step = Step("create_admin.yml", {"pg_admin_user": user, "pg_admin_if_exists": if_exists},
                    ("pg_admin_password",))
        return submit(ctx, session, cluster, actor, "create_admin", [step],
                      secrets={"pg_admin_password": password}, allowed_states=(RUNNING,))


# -- opening operations ------------------------------------------------------------------------
def check_not_terminated(cluster: Cluster) -> None:
    """A terminated cluster has no instance left to act on."""
    if cluster.service_state == TERMINATED or not cluster.members:
        raise Conflict(f"cluster {cluster.id} is {cluster.service_state}: it has no instance to act on")


# Playbooks that act on a whole Patroni cluster (pg_cluster names it; the backup playbooks act on its
# one stanza from the member leading at run time, playbooks/tasks/leader.yml; restore.yml restores
# every member); every other one acts on one member, an HA cluster's leader.
HA_CLUSTER_PLAYBOOKS = frozenset({"provision.yml", "enable_ha.yml", "ha_status.yml", "start.yml", "stop.yml",
                                  "restart.yml", "reload.yml", "switchover.yml", "failover.yml", "reinit_member.yml",
                                  "terminate.yml", "set_backup.yml", "unset_backup.yml", "backup.yml",
                                  "backup_info.yml", "verify_backup.yml", "remove_backups.yml", "delete_archive.yml",
                                  "restore.yml"})


def contract_vars(cluster: Cluster, playbook: str = "") -> dict:
    """What every playbook is told about the instance it acts on: its primary member. For an HA
    cluster, through the Patroni controller: the Patroni cluster (named after its first member,
    whichever member leads now) for the playbooks of HA_CLUSTER_PLAYBOOKS, else the leader of the
    last observation (a stale one makes a write fail on a standby: sync-state, then again).

    pg_instance_id: the install and terminate roles act only on an instance marked as this cluster's."""
    if cluster.topology == HA:
        member = ha_scope_member(cluster) if playbook in HA_CLUSTER_PLAYBOOKS else primary(cluster)
        return {"pg_cluster": member.name, "pg_version": cluster.major_version, "pg_port": member.port,
                "pg_instance_id": cluster.id, "pg_controller": "patroni"}
    member = primary(cluster)
    return {"pg_cluster": member.name, "pg_version": cluster.major_version, "pg_port": member.port,
            "pg_instance_id": cluster.id}


HA, STANDALONE = "HA", "STANDALONE"


def refuse_ha(cluster: Cluster, what: str) -> None:
    """409 for what an HA cluster cannot do yet (a clear refusal rather than a run behind Patroni's back)."""
    if cluster.topology == HA:
        raise Conflict(f"cluster {cluster.id} is HA: {what} is not supported on an HA cluster yet")


def ha_scope_member(cluster: Cluster) -> Member:
    """The member an HA cluster's Patroni scope is named after (its first, the standalone instance
    it was made from)."""
    scope = (cluster.settings.get("ha") or {}).get("scope")
    for member in cluster.members:
        if member.name == scope:
            return member
    raise Conflict(f"cluster {cluster.id} has no member {scope!r} (its Patroni cluster)")


def submit(ctx: Context, session: Session, cluster: Cluster, actor: Account, kind: str, steps: list[Step], *,
           params: dict | None = None, secrets: dict | None = None, allowed_states=None,
           transitional_state=None) -> Operation:
    """Open an operation of `kind` on the cluster (taking its lock unless the kind is read-only);
    each step gets the playbook contract's variables."""
    check_not_terminated(cluster)
    steps = [Step(step.playbook, {**contract_vars(cluster, step.playbook), **step.extravars}, step.secrets)
             for step in steps]
    operation = engine_submit.submit(ctx, session, actor, cluster, kind, steps, params=params, secrets=secrets,
                                     allowed_states=allowed_states, transitional_state=transitional_state)
    if transitional_state:
        for member in cluster.members:
            member.service_state = transitional_state
    return operation
