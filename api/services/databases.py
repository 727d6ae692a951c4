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
from api.engine.kinds import Step, registered
from api.errors import Conflict, Invalid, NotFound
from api.security import generate_password
from api.services import clusters
from api.services import requests as requests_service
from api.store.models import Account, Credential, Database, Operation, utcnow
from plugins.module_utils.extensions import denied_reason

RUNNING_ONLY = (clusters.RUNNING,)
EXTENSION_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$")  # uuid-ossp has a dash


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


def plan_create_database(ctx: Context, spec: NewDatabase, default_owner: str = "") -> tuple[Step, dict, dict]:
    """The create_database step, its parameters (the records to write) and its secrets."""
    clusters.check_sql_name(spec.name, "name")
    owner = spec.owner or default_owner
    if not owner:
        raise Invalid("owner is required: this cluster has no initial user", field="owner")
    clusters.check_role_name(owner, "owner")
    step = Step("create_database.yml", {"pg_database": spec.name, "pg_database_owner": owner,
                                        "pg_database_if_exists": spec.if_exists},
                ("pg_database_owner_password",) if spec.owner_password else ())
    params = {"database": spec.name, "owner": owner, "plan_id": spec.plan_id, "environment": spec.environment,
              "project_id": spec.project_id,
              "owner_password_encrypted": ctx.cipher.encrypt(spec.owner_password.encode()).decode()
              if spec.owner_password else None}
    secrets = {"pg_database_owner_password": spec.owner_password} if spec.owner_password else {}
    return step, params, secrets


def check_database_absent(session: Session, cluster_id: str, name: str) -> None:
    """The agent seed's "The database already exists" (if_exists=fail)."""
    if session.scalar(select(Database.id).where(Database.cluster_id == cluster_id, Database.name == name)):
        raise Conflict("The database already exists", field="name")


def record_database(session: Session, operation: Operation) -> Database:
    """The Database record (and its owner's credential, when the owner was made with a password)."""
    params = operation.params
    database = session.scalar(select(Database).where(Database.cluster_id == operation.cluster_id,
                                                     Database.name == params["database"]))
    if database is None:
        database = Database(cluster_id=operation.cluster_id, name=params["database"], owner=params["owner"],
                            plan_id=params.get("plan_id"), environment=params.get("environment"),
                            project_id=params.get("project_id"), created_by=operation.actor_id)
        session.add(database)
        session.flush()
    if params.get("owner_password_encrypted"):
        _upsert_credential(session, operation.cluster_id, database.id, params["owner"],
                           params["owner_password_encrypted"], operation.actor_id)
    return database


@registered
class CreateDatabase(clusters.ClusterKind):
    name = "create_database"

    def finish(self, session, operation, cluster, outcome):
        if outcome.ok:
            record_database(session, operation)


def create_database(ctx: Context, actor: Account, cluster_id: str, spec: NewDatabase) -> Operation:
    clusters.check_sql_name(spec.name, "name")
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        step, params, secrets = plan_create_database(ctx, spec, cluster.settings.get("database_user_name") or "")
        if spec.if_exists == "fail":
            check_database_absent(session, cluster.id, spec.name)
        return clusters.submit(ctx, session, cluster, actor, "create_database", [step], params=params,
                               secrets=secrets, allowed_states=RUNNING_ONLY)


@registered
class DestroyDatabase(clusters.ClusterKind):
    name = "destroy_database"

    def finish(self, session, operation, cluster, outcome):
        if not outcome.ok:
            return
        params = operation.params
        session.execute(delete(Credential).where(Credential.cluster_id == operation.cluster_id,
                                                 Credential.user.in_(params["users"])))
        if params.get("database_id") is not None:
            session.execute(delete(Credential).where(Credential.database_id == params["database_id"]))
            session.execute(delete(Database).where(Database.id == params["database_id"]))


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
        step = Step("destroy_database.yml", {"pg_database": name, "pg_database_users": users,
                                             "pg_database_if_absent": if_absent})
        return clusters.submit(ctx, session, cluster, actor, "destroy_database", [step],
                               params={"users": users, "database_id": database.id if database else None},
                               allowed_states=RUNNING_ONLY)


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


@registered
class CreateUser(clusters.ClusterKind):
    name = "create_user"

    def finish(self, session, operation, cluster, outcome):
        if outcome.ok:
            params = operation.params
            _upsert_credential(session, operation.cluster_id, params.get("database_id"), params["user"],
                               params["password_encrypted"], operation.actor_id)


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
        step = Step("create_user.yml", {"pg_user": user, "pg_user_database": database}, ("pg_user_password",))
        operation = clusters.submit(
            ctx, session, cluster, actor, "create_user", [step],
            params={"user": user, "database_id": record_db.id if record_db else None,
                    "password_encrypted": ctx.cipher.encrypt(password.encode()).decode()},
            secrets={"pg_user_password": password}, allowed_states=RUNNING_ONLY)
    return operation, password


@registered
class ResetPassword(clusters.ClusterKind):
    """New passwords for existing roles; the records keep them encrypted."""

    name = "reset_password"

    def finish(self, session, operation, cluster, outcome):
        if not outcome.ok:
            return
        encrypted = operation.params["passwords_encrypted"]
        for credential in session.scalars(select(Credential).where(Credential.cluster_id == operation.cluster_id,
                                                                   Credential.user.in_(list(encrypted)))):
            credential.password_encrypted = encrypted[credential.user]


@registered
class QuarantineDatabase(ResetPassword):
    """DBaaS's first DELETE: every credential of the database reset to a password nobody knows."""

    name = "quarantine_database"

    def finish(self, session, operation, cluster, outcome):
        super().finish(session, operation, cluster, outcome)
        if outcome.ok:
            session.get(Database, operation.params["database_id"]).quarantine_dt = utcnow()


def reset_passwords(ctx: Context, actor: Account, cluster_id: str, passwords: dict[str, str], *,
                    kind: str = "reset_password", encrypted: dict[str, str] | None = None,
                    params: dict | None = None) -> Operation:
    """New passwords for existing roles (their open sessions are ended so old logins stop).

    `encrypted`: what the records keep for each user (default: its new password, encrypted)."""
    for user in passwords:
        clusters.check_role_name(user, "user")
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        kept = encrypted if encrypted is not None else {
            user: ctx.cipher.encrypt(pw.encode()).decode() for user, pw in passwords.items()}
        step = Step("reset_password.yml", {"pg_users": sorted(passwords), "pg_terminate_sessions": True},
                    ("pg_user_passwords",))
        return clusters.submit(ctx, session, cluster, actor, kind, [step],
                               params={"passwords_encrypted": kept, **(params or {})},
                               secrets={"pg_user_passwords": passwords}, allowed_states=RUNNING_ONLY)


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


@registered
class DropUser(clusters.ClusterKind):
    name = "drop_user"

    def finish(self, session, operation, cluster, outcome):
        if outcome.ok:
            session.execute(delete(Credential).where(Credential.cluster_id == operation.cluster_id,
                                                     Credential.user == operation.params["user"]))


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
        extravars = {"pg_user": user}
        if database is not None:
            extravars.update(pg_user_database=database.name, pg_user_reassign_to=database.owner)
        return clusters.submit(ctx, session, cluster, actor, "drop_user", [Step("drop_user.yml", extravars)],
                               params={"user": user}, allowed_states=RUNNING_ONLY)


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
@registered
class ListExtensions(clusters.ClusterKind):
    """Read-only: runs beside whatever holds the cluster, records nothing."""

    name = "list_extensions"
    lock = False

    def apply_step(self, session, operation, cluster, index, outcome):
        pass


def available_extensions(ctx: Context, actor: Account, cluster_id: str, database: str = "postgres") -> list[dict]:
    """Read on the host now (a read-only job beside any running operation)."""
    clusters.check_sql_name(database, "database")
    with ctx.sessions.begin() as session:
        cluster = clusters.get_live_cluster(ctx, actor, cluster_id, session)
        if cluster.service_state != clusters.RUNNING:
            raise Conflict(f"cluster {cluster_id} is {cluster.service_state}: extensions are read from a running "
                           "instance")
        operation = clusters.submit(ctx, session, cluster, actor, "list_extensions",
                                    [Step("list_extensions.yml", {"pg_database": database})])
    operation = requests_service.run_to_end(ctx, actor, operation.id)
    for host_result in operation.result.get("hosts", {}).values():
        return host_result.get("extensions_available", [])
    return []


@registered
class InstallExtension(clusters.ClusterKind):
    name = "install_extension"


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
        step = Step("install_extension.yml", {
            "pg_database": database,
            "pg_extensions": [{k: v for k, v in e.items() if k in ("name", "version") and v} for e in extensions],
            "pg_extensions_allow_untrusted": actor.role == "admin"})
        return clusters.submit(ctx, session, cluster, actor, "install_extension", [step],
                               allowed_states=RUNNING_ONLY)


def credential_password(ctx: Context, credential: Credential) -> str:
    return ctx.cipher.decrypt(credential.password_encrypted.encode()).decode()
