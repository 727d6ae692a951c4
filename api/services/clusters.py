"""Cluster lifecycle: create, observe, start, stop, restart, terminate, create_admin.

Each function owns its operation's rules (preconditions, playbook, extra-vars, what the result
changes) and is shared by every dialect: /v1, the agent facade and ITCare call the same code.
"""
from __future__ import annotations

import ipaddress
import re
import threading
import zoneinfo
from dataclasses import dataclass, field

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import catalog
from api import operations as ops
from api.context import Context
from api.errors import Conflict, Invalid, NotFound
from api.executor import Job, Outcome
from api.store.models import Account, Cluster, Credential, Database, Member, Operation, ServiceFact, new_id

CREATING, RUNNING, STARTING, STOPPING, STOPPED = "CREATING", "RUNNING", "STARTING", "STOPPING", "STOPPED"
RESTARTING, TERMINATING, TERMINATED, ERROR = "RESTARTING", "TERMINATING", "TERMINATED", "ERROR"
TRANSITIONAL = (CREATING, STARTING, STOPPING, RESTARTING, TERMINATING)
SERVICE_STATES = (CREATING, RUNNING, STARTING, STOPPING, STOPPED, RESTARTING, TERMINATING, TERMINATED, ERROR)
# What the info module reports, mapped to service_state.
OBSERVED_STATES = {"started": RUNNING, "stopped": STOPPED, "error": ERROR}

CLUSTER_NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{2,62}$")
SQL_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
SIZING_RE = re.compile(r"^([1-9][0-9]?)cpu([1-9][0-9]{0,3})gb$")
LOCALE_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
ENCODINGS = ("UTF8", "LATIN1", "LATIN9", "SQL_ASCII", "WIN1252", "EUC_JP", "EUC_KR")
RESERVED_ROLES = ("postgres", "public", "none")
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
    dialect_fields: dict = field(default_factory=dict)


# -- validation and observed facts shared by every service -------------------------------------
def check_sql_name(value: str, field: str) -> str:
    """A database (or other SQL object) name: what reaches SQL is also quoted as an identifier."""
    if not SQL_NAME_RE.match(value or ""):
        raise Invalid(f"{field} must be 1-63 characters: letters, digits or _, not starting with a digit",
                      field=field)
    return value


def check_role_name(value: str, field: str) -> str:
    """A login role the tenant may own: not the server's nor the service's own roles (pgdbaas_*)."""
    check_sql_name(value, field)
    if value.lower() in RESERVED_ROLES or value.lower().startswith(("pg_", "pgdbaas_")):
        raise Invalid(f"{field} must not be postgres, public, none, pg_* or pgdbaas_*", field=field)
    return value


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
    version = catalog.find(ctx.settings, spec.engine_version or ctx.settings.default_version)
    if version is None:
        known = ", ".join(v.id for v in catalog.engine_versions(ctx.settings))
        raise Invalid(f"unknown engine version {spec.engine_version!r}; this installation offers {known}",
                      field="dbaas_engine_version_id")
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
    if spec.port is not None and spec.port not in ctx.settings.ports:
        raise Invalid(f"database_port must be within {ctx.settings.port_range}, the ports this installation "
                      "hands to instances (PGDBAAS_PORT_RANGE)", field="database_port")
    return version


def _hba_entries(spec: ClusterSpec) -> list[dict]:
    entries = [
        {"type": "local", "database": "all", "user": "all", "method": "scram-sha-256"},
        {"type": "host", "database": "all", "user": "all", "address": "127.0.0.1/32", "method": "scram-sha-256"},
        {"type": "host", "database": "all", "user": "all", "address": "::1/128", "method": "scram-sha-256"},
    ]
    for cidr in spec.allowed_cidrs:
        network = str(ipaddress.ip_network(cidr, strict=False))
        entries.append({"type": "host", "database": "all", "user": "all", "address": network,
                        "method": "scram-sha-256"})
    return entries


def create_cluster(ctx: Context, actor: Account, spec: ClusterSpec) -> tuple[Cluster, Operation]:
    version = _validate(ctx, spec)
    # Two creates may pick the same free port at once. In one process the lock orders them; across
    # processes the (host, port) unique constraint lets one win and the other places again.
    for attempt in range(PLACEMENT_ATTEMPTS):
        try:
            with _placement_lock:
                return _create_cluster(ctx, actor, spec, version)
        except IntegrityError as exc:
            if attempt == PLACEMENT_ATTEMPTS - 1:
                raise Conflict("could not allocate a port for the instance: try again") from exc
    raise AssertionError("unreachable")


def _create_cluster(ctx: Context, actor: Account, spec: ClusterSpec,
                    version: catalog.EngineVersion) -> tuple[Cluster, Operation]:
    with ctx.sessions.begin() as session:
        # Names are unique per account: what another account named its clusters is none of its business.
        if session.scalar(select(Cluster.id).where(Cluster.owner_id == actor.id, Cluster.name == spec.name,
                                                   Cluster.service_state != TERMINATED)):
            raise Conflict(f"you already have a cluster named {spec.name!r}", field="name")
        if spec.port is not None:
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
                                      role_type="ACTIVE", service_state=CREATING))
        session.add(cluster)
        session.flush()
        extravars = {
            "pg_install_method": version.source,
            "pg_sizing": spec.sizing, "pg_locale": spec.locale, "pg_encoding": spec.encoding,
            "pg_listen_addresses": "*" if spec.allowed_cidrs else "localhost",
            "pg_hba_entries": _hba_entries(spec),
        }
        if version.source == "binaries":
            extravars["pg_binaries_source"] = version.path
        if spec.timezone:
            extravars["pg_timezone"] = spec.timezone
        if spec.user_name:
            extravars["pg_admin_user"] = spec.user_name
        if spec.database_name:
            extravars["pg_database"] = spec.database_name
        secrets = {"pg_admin_password": spec.user_password} if spec.user_name else {}
        encrypted = ctx.cipher.encrypt(spec.user_password.encode()).decode() if spec.user_name else ""

        def record_initial_objects(s: Session, operation: Operation, outcome: Outcome) -> None:
            apply_outcome(s, operation, outcome)
            if not outcome.ok or not spec.user_name:
                return
            database = None
            if spec.database_name:
                database = Database(cluster_id=cluster.id, name=spec.database_name, owner=spec.user_name,
                                    created_by=actor.id)
                s.add(database)
                s.flush()
            s.add(Credential(cluster_id=cluster.id, database_id=database.id if database else None,
                             user=spec.user_name, password_encrypted=encrypted, created_by=actor.id))

        operation = submit(ctx, session, cluster, actor, "create", "provision.yml", extravars, secrets,
                           on_finish=record_initial_objects)
    return cluster, operation


# -- lifecycle ---------------------------------------------------------------------------------
LIFECYCLE = {
    # kind: (playbook, allowed states, transitional state)
    "start": ("start.yml", (STOPPED, ERROR), STARTING),
    "stop": ("stop.yml", (RUNNING,), STOPPING),
    "restart": ("restart.yml", (RUNNING,), RESTARTING),
    "terminate": ("terminate.yml", (RUNNING, STOPPED, ERROR, CREATING), TERMINATING),
    "observe": ("status.yml", None, None),
    # The agent seed's "on boot": bring the instance up whatever the record says.
    "boot": ("start.yml", None, STARTING),
}


def start(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    return _lifecycle(ctx, actor, cluster_id, "start")


def stop(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    return _lifecycle(ctx, actor, cluster_id, "stop")


def restart(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    return _lifecycle(ctx, actor, cluster_id, "restart")


def terminate(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    return _lifecycle(ctx, actor, cluster_id, "terminate")


def observe(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    """Run the read-only status playbook and record what it saw."""
    return _lifecycle(ctx, actor, cluster_id, "observe")


def boot(ctx: Context, actor: Account, cluster_id: str) -> Operation:
    return _lifecycle(ctx, actor, cluster_id, "boot")


def _lifecycle(ctx: Context, actor: Account, cluster_id: str, kind: str) -> Operation:
    playbook, allowed, transitional = LIFECYCLE[kind]
    with ctx.sessions.begin() as session:
        cluster = get_live_cluster(ctx, actor, cluster_id, session)
        extravars = {"pg_terminate_confirm": cluster.members[0].name} if kind == "terminate" else {}
        return submit(ctx, session, cluster, actor, kind, playbook, extravars, {},
                       allowed_states=allowed, transitional_state=transitional)


def create_admin(ctx: Context, actor: Account, cluster_id: str, user: str, password: str,
                 if_exists: str = "fail") -> Operation:
    check_role_name(user, "user")
    if not password:
        raise Invalid("password must not be empty", field="password")
    if if_exists not in ("fail", "update"):
        raise Invalid("if_exists must be fail or update", field="if_exists")
    with ctx.sessions.begin() as session:
        cluster = get_live_cluster(ctx, actor, cluster_id, session)
        return submit(ctx, session, cluster, actor, "create_admin", "create_admin.yml",
                       {"pg_admin_user": user, "pg_admin_if_exists": if_exists},
                       {"pg_admin_password": password}, allowed_states=(RUNNING,))


# -- running and finishing ---------------------------------------------------------------------
def check_not_terminated(cluster: Cluster) -> None:
    """A terminated cluster has no instance left to act on."""
    if cluster.service_state == TERMINATED or not cluster.members:
        raise Conflict(f"cluster {cluster.id} is {cluster.service_state}: it has no instance to act on")


def submit(ctx: Context, session: Session, cluster: Cluster, actor: Account, kind: str, playbook: str,
            extravars: dict, secrets: dict, *, allowed_states=None, transitional_state=None,
            lock: bool = True, on_finish=None) -> Operation:
    """Open the operation (taking the cluster's lock) and queue its job once the row is committed.

    `on_finish` runs in the transaction that ends the operation; the default records what the
    playbook observed of the instance."""
    check_not_terminated(cluster)
    member = cluster.members[0]
    # pg_instance_id: the install and terminate roles act only on an instance marked as this cluster's.
    extravars = {"pg_cluster": member.name, "pg_version": cluster.major_version, "pg_port": member.port,
                 "pg_instance_id": cluster.id, **extravars}
    operation = ops.open_operation(session, kind=kind, playbook=playbook, actor_id=actor.id, cluster=cluster,
                                   extravars=extravars, allowed_states=allowed_states,
                                   transitional_state=transitional_state, lock=lock)
    if transitional_state:
        for m in cluster.members:
            m.service_state = transitional_state
    job = Job(operation_id=operation.id, playbook=playbook,
              inventory=ctx.hosts.job_inventory([m.host for m in cluster.members], ctx.settings.host_group),
              extravars=extravars, secrets=secrets, on_finish=on_finish or apply_outcome)
    # Submit once the row is committed, so the worker finds it.
    session.info.setdefault("after_commit", []).append(lambda: ctx.executor.submit(job))
    return operation


def apply_outcome(session: Session, operation: Operation, outcome: Outcome) -> None:
    """Record what the playbook observed; the stable state comes from there, never assumed."""
    cluster = session.get(Cluster, operation.cluster_id)
    if cluster is None:
        return
    observed_any = False
    for member in cluster.members:
        instance = (outcome.stats.get("hosts", {}).get(member.host) or {}).get("instance")
        if not instance:
            continue
        observed_any = True
        state = OBSERVED_STATES.get(instance.get("state"), ERROR)
        if instance.get("exists") is False:
            state = TERMINATED if operation.kind == "terminate" else ERROR
        member.service_state = state
        member.data_directory = instance.get("data_directory") or member.data_directory
        cluster.observed = {k: instance.get(k) for k in ("databases", "roles", "size_bytes", "server_version",
                                                          "in_recovery", "state") if k in instance}
        if instance.get("server_version"):
            cluster.software_version = instance["server_version"]
    if operation.kind == "terminate" and outcome.ok:
        cluster.service_state = TERMINATED
        cluster.members.clear()  # frees host and port for new clusters
        # Its databases and credentials are gone with the instance.
        session.execute(delete(Credential).where(Credential.cluster_id == cluster.id))
        session.execute(delete(Database).where(Database.cluster_id == cluster.id))
        return
    if observed_any:
        states = {m.service_state for m in cluster.members}
        cluster.service_state = states.pop() if len(states) == 1 else ERROR
    elif not outcome.ok and (cluster.service_state in TRANSITIONAL or operation.kind == "observe"):
        # Failed, canceled or unobserved: ERROR until the next observation says otherwise.
        cluster.service_state = ERROR
        for member in cluster.members:
            member.service_state = ERROR
