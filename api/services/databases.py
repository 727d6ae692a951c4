"""Databases, users (credentials) and extensions of a cluster, for every dialect.

A database's owner and every credential are login roles scoped to that one database: CONNECT is
revoked from PUBLIC and granted to them, so a credential is refused by the other databases of
the same cluster. Records (Database, Credential) are written when the playbook succeeded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.context import Context
from api.errors import Conflict, Invalid, NotFound
from api.executor import Outcome
from api.security import generate_password
from api.services import clusters
from api.services import requests as requests_service
from api.store.models import Account, Credential, Database, Operation
from plugins.module_utils.extensions import denied_reason

RUNNING_ONLY = (clusters.RUNNING,)
EXTENSION_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")  # uuid-ossp has a dash


def _hook(extra):
    """An on_finish hook: record the instance, then (on success only) the caller's records."""
    def on_finish(session: Session, operation: Operation, outcome: Outcome) -> None:
        clusters.apply_outcome(session, operation, outcome)
        if outcome.ok:
            extra(session, operation, outcome)
    return on_finish


def _host_result(outcome: Outcome, key: str):
    for host_result in outcome.stats.get("hosts", {}).values():
        if key in host_result:
            return host_result[key]
    return None


# -- databases ------------------------------------------------------------------------------------
@dataclass
class NewDatabase:
    name: str
    owner: str = ""
    owner_password: str | None = None  # when given, the owner role is created with it
    if_exists: str = "ignore"  # fail: the agent seed's "The database already exists"
    plan_id: int | None = None
    environment: str | None = None
    project_id: int | None = None


def create_database(ctx: Context, actor: Account, cluster_id: str, spec: NewDatabase) -> Operation:
    clusters.check_sql_name(spec.name, "name")
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        owner = spec.owner or cluster.settings.get("database_user_name") or ""
        if not owner:
            raise Invalid("owner is required: this cluster has no initial user", field="owner")
        clusters.check_role_name(owner, "owner")
        if spec.if_exists == "fail" and session.scalar(
                select(Database.id).where(Database.cluster_id == cluster.id, Database.name == spec.name)):
            raise Conflict("The database already exists", field="name")
        extravars = {"pg_database": spec.name, "pg_database_owner": owner,
                     "pg_database_if_exists": spec.if_exists}
        secrets = {"pg_database_owner_password": spec.owner_password} if spec.owner_password else {}
        encrypted = ctx.cipher.encrypt(spec.owner_password.encode()).decode() if spec.owner_password else None

        def record(s: Session, operation: Operation, _outcome: Outcome) -> None:
            database = s.scalar(select(Database).where(Database.cluster_id == cluster.id,
                                                       Database.name == spec.name))
            if database is None:
                database = Database(cluster_id=cluster.id, name=spec.name, owner=owner, plan_id=spec.plan_id,
                                    environment=spec.environment, project_id=spec.project_id,
                                    created_by=operation.actor_id)
                s.add(database)
                s.flush()
            if encrypted:
                _upsert_credential(s, cluster.id, database.id, owner, encrypted, operation.actor_id)

        return clusters.submit(ctx, session, cluster, actor, "create_database", "create_database.yml", extravars,
                               secrets, allowed_states=RUNNING_ONLY, on_finish=_hook(record))


def destroy_database(ctx: Context, actor: Account, cluster_id: str, name: str, *, users: list[str] | None = None,
                     if_absent: str = "ignore") -> Operation:
    """Drop a database (its sessions terminated first) and the roles given, or its credentials'."""
    clusters.check_sql_name(name, "name")
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        database = session.scalar(select(Database).where(Database.cluster_id == cluster.id, Database.name == name))
        observed = {d.get("name") for d in clusters.observed_databases(cluster)}
        if if_absent == "fail" and database is None and name not in observed:
            raise NotFound("The database does not exist", field="name")
        if users is None:
            users = list(session.scalars(select(Credential.user).where(Credential.database_id == database.id))) \
                if database else []
        for user in users:
            clusters.check_role_name(user, "user")
        database_id = database.id if database else None

        def forget(s: Session, _operation: Operation, _outcome: Outcome) -> None:
            s.execute(delete(Credential).where(Credential.cluster_id == cluster.id, Credential.user.in_(users)))
            if database_id is not None:
                s.execute(delete(Credential).where(Credential.database_id == database_id))
                s.execute(delete(Database).where(Database.id == database_id))

        return clusters.submit(ctx, session, cluster, actor, "destroy_database", "destroy_database.yml",
                               {"pg_database": name, "pg_database_users": users, "pg_database_if_absent": if_absent},
                               {}, allowed_states=RUNNING_ONLY, on_finish=_hook(forget))


def list_databases(ctx: Context, actor: Account, cluster_id: str) -> list[dict]:
    """What the last observation saw (name, owner, size, extensions), with record ids."""
    with ctx.sessions() as session:
        cluster = clusters.get_cluster(ctx, actor, cluster_id, session)
        ids = dict(session.execute(select(Database.name, Database.id).where(Database.cluster_id == cluster.id)).all())
    return [{**observed, "id": ids.get(observed.get("name"))} for observed in clusters.observed_databases(cluster)]


# -- users (credentials) ----------------------------------------------------------------------------
def _upsert_credential(session: Session, cluster_id: str, database_id: int | None, user: str, encrypted: str,
                       actor_id: str) -> Credential:
    credential = session.scalar(select(Credential).where(Credential.cluster_id == cluster_id,
                                                         Credential.user == user))
    if credential is None:
        credential = Credential(cluster_id=cluster_id, database_id=database_id, user=user,
                                password_encrypted=encrypted, created_by=actor_id)
        session.add(credential)
    else:
        credential.password_encrypted = encrypted
        credential.database_id = database_id if database_id is not None else credential.database_id
    session.flush()
    return credential


def create_user(ctx: Context, actor: Account, cluster_id: str, user: str, database: str,
                password: str | None = None) -> tuple[Operation, str]:
    """A login role with CONNECT and privileges on one database; the password given or generated."""
    clusters.check_role_name(user, "name")
    clusters.check_sql_name(database, "database")
    password = password or generate_password()
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        if session.scalar(select(Credential.id).where(Credential.cluster_id == cluster.id, Credential.user == user)):
            raise Conflict("The user already exists", field="name")
        record_db = session.scalar(select(Database).where(Database.cluster_id == cluster.id, Database.name == database))
        observed = {d.get("name") for d in clusters.observed_databases(cluster)}
        if record_db is None and database not in observed:
            raise NotFound(f"database {database!r} does not exist in cluster {cluster_id}", field="database")
        encrypted = ctx.cipher.encrypt(password.encode()).decode()
        database_id = record_db.id if record_db else None

        def record(s: Session, operation: Operation, _outcome: Outcome) -> None:
            _upsert_credential(s, cluster.id, database_id, user, encrypted, operation.actor_id)

        operation = clusters.submit(ctx, session, cluster, actor, "create_user", "create_user.yml",
                                    {"pg_user": user, "pg_user_database": database},
                                    {"pg_user_password": password}, allowed_states=RUNNING_ONLY,
                                    on_finish=_hook(record))
    return operation, password


def reset_passwords(ctx: Context, actor: Account, cluster_id: str, passwords: dict[str, str], *,
                    kind: str = "reset_password", on_success=None) -> Operation:
    """New passwords for existing roles (their open sessions are ended so old logins stop)."""
    for user in passwords:
        clusters.check_role_name(user, "user")
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        encrypted = {user: ctx.cipher.encrypt(pw.encode()).decode() for user, pw in passwords.items()}

        def record(s: Session, operation: Operation, outcome: Outcome) -> None:
            for credential in s.scalars(select(Credential).where(Credential.cluster_id == cluster.id,
                                                                 Credential.user.in_(list(encrypted)))):
                credential.password_encrypted = encrypted[credential.user]
            if on_success:
                on_success(s, operation, outcome)

        return clusters.submit(ctx, session, cluster, actor, kind, "reset_password.yml",
                               {"pg_users": sorted(passwords), "pg_terminate_sessions": True},
                               {"pg_user_passwords": passwords}, allowed_states=RUNNING_ONLY,
                               on_finish=_hook(record))


def reset_password(ctx: Context, actor: Account, cluster_id: str, user: str,
                   password: str | None = None) -> tuple[Operation, str]:
    password = password or generate_password()
    with ctx.sessions() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        known = session.scalar(select(Credential.id).where(Credential.cluster_id == cluster.id,
                                                           Credential.user == user))
        roles = {r.get("name") for r in clusters.observed_roles(cluster)}
    if not known and user not in roles:
        raise NotFound(f"user {user!r} does not exist in cluster {cluster_id}", field="name")
    return reset_passwords(ctx, actor, cluster_id, {user: password}), password


def drop_user(ctx: Context, actor: Account, cluster_id: str, user: str) -> Operation:
    """Drop a role: what it owns in its database goes to that database's owner, then DROP OWNED."""
    clusters.check_role_name(user, "name")
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        credential = session.scalar(select(Credential).where(Credential.cluster_id == cluster.id,
                                                             Credential.user == user))
        roles = {r.get("name") for r in clusters.observed_roles(cluster)}
        if credential is None and user not in roles:
            raise NotFound(f"user {user!r} does not exist in cluster {cluster_id}", field="name")
        database = session.get(Database, credential.database_id) if credential and credential.database_id else None
        if database is not None and database.owner == user:
            raise Conflict(f"{user!r} owns database {database.name!r}: destroy the database instead")

        def forget(s: Session, _operation: Operation, _outcome: Outcome) -> None:
            s.execute(delete(Credential).where(Credential.cluster_id == cluster.id, Credential.user == user))

        extravars = {"pg_user": user}
        if database is not None:
            extravars.update(pg_user_database=database.name, pg_user_reassign_to=database.owner)
        return clusters.submit(ctx, session, cluster, actor, "drop_user", "drop_user.yml", extravars, {},
                               allowed_states=RUNNING_ONLY, on_finish=_hook(forget))


def list_users(ctx: Context, actor: Account, cluster_id: str) -> list[dict]:
    with ctx.sessions() as session:
        cluster = clusters.get_cluster(ctx, actor, cluster_id, session)
        credentials = {c.user: c for c in session.scalars(select(Credential).where(Credential.cluster_id == cluster.id))}
        databases = dict(session.execute(select(Database.id, Database.name)
                                         .where(Database.cluster_id == cluster.id)).all())
    users = []
    for role in clusters.observed_roles(cluster):
        if not role.get("login") or role.get("name") == "postgres":
            continue
        credential = credentials.get(role["name"])
        users.append({"name": role["name"], "database": databases.get(credential.database_id) if credential else None,
                      "createdb": role.get("createdb", False), "createrole": role.get("createrole", False),
                      "managed": credential is not None})
    return users


# -- extensions ----------------------------------------------------------------------------------
def available_extensions(ctx: Context, actor: Account, cluster_id: str, database: str = "postgres") -> list[dict]:
    """Read on the host now (a read-only job beside any running operation)."""
    clusters.check_sql_name(database, "database")
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        if cluster.service_state != clusters.RUNNING:
            raise Conflict(f"cluster {cluster_id} is {cluster.service_state}: extensions are read from a running "
                           "instance")
        operation = clusters.submit(ctx, session, cluster, actor, "list_extensions", "list_extensions.yml",
                                    {"pg_database": database}, {}, lock=False, on_finish=lambda *_: None)
    operation = requests_service.run_to_end(ctx, actor, operation.id)
    for host_result in operation.result.get("hosts", {}).values():
        return host_result.get("extensions_available", [])
    return []


def install_extensions(ctx: Context, actor: Account, cluster_id: str, database: str,
                       extensions: list[dict]) -> Operation:
    """Install each extension (OS package, preload and restart only when needed, CREATE EXTENSION)."""
    clusters.check_sql_name(database, "database")
    if not extensions:
        raise Invalid("extensions must name at least one extension", field="extensions")
    for item in extensions:
        name = str(item.get("name", ""))
        if not EXTENSION_NAME_RE.match(name):
            raise Invalid("extension names are 1-63 letters, digits, _ or -, starting with a letter or _",
                          field="extensions")
        # Untrusted languages and file, program or network access stay out of tenants' reach; the
        # playbook refuses them too (and whatever would pull one in), unless an admin asks.
        reason = denied_reason(name)
        if reason and actor.role != "admin":
            raise Invalid(f"extension {name!r} is not available to tenants: {reason}", field="extensions")
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        return clusters.submit(ctx, session, cluster, actor, "install_extension", "install_extension.yml",
                               {"pg_database": database,
                                "pg_extensions": [{k: v for k, v in e.items() if k in ("name", "version") and v}
                                                  for e in extensions],
                                "pg_extensions_allow_untrusted": actor.role == "admin"},
                               {}, allowed_states=RUNNING_ONLY)


def credential_password(ctx: Context, credential: Credential) -> str:
    return ctx.cipher.decrypt(credential.password_encrypted.encode()).decode()
