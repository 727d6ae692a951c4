"""DBaaS dialect rules (databases-and-credentials seed): plans, environments, projects, a
database per instance, default credential `u_<name>`, quarantine on the first delete.

Each DBaaS database gets its own cluster, sized by its plan and placed in its environment (a
host group of the inventory); its credentials are per-database login roles. The calls are
synchronous like the seed: they wait for the operations they start.
"""
from __future__ import annotations

import re
import unicodedata

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from api.context import Context
from api.engine.kinds import registered
from api.errors import Conflict, Invalid, NotFound
from api.security import generate_password
from api.services import catalog, clusters, databases
from api.services import requests as requests_service
from api.store.models import Account, Cluster, Credential, Database, Operation, Plan, Project

UNKNOWN_PASSWORD = ""  # a quarantined credential's password is known to nobody, the API included


def normalise_name(name: str) -> str:
    """`test database2` -> `test_database2` (the seed's example), lower case, SQL-safe."""
    value = re.sub(r"[^a-z0-9_]+", "_", name.strip().lower()).strip("_")
    if not value or not re.match(r"^[a-z]", value) or len(value) > 50:
        raise Invalid("name must start with a letter and have at most 50 letters, digits, spaces or _",
                      field="name")
    return value


# -- plans, environments, projects ----------------------------------------------------------
def plans(ctx: Context) -> list[Plan]:
    with ctx.sessions() as session:
        return list(session.scalars(select(Plan).order_by(Plan.id)))


def plan(ctx: Context, plan_id: int) -> Plan:
    with ctx.sessions() as session:
        found = session.get(Plan, plan_id)
    if found is None:
        raise NotFound(f"plan {plan_id} not found", field="plan")
    return found


def environments(ctx: Context) -> list[tuple[int, str]]:
    """Host groups of the inventory, numbered in name order."""
    return list(enumerate(ctx.hosts.groups(), start=1))


def environment(ctx: Context, environment_id: int) -> str:
    for number, name in environments(ctx):
        if number == environment_id:
            return name
    raise NotFound(f"environment {environment_id} not found", field="environment")


def _visible_projects(actor: Account):
    """A project belongs to the account that made it; admins see every one."""
    statement = select(Project)
    return statement if actor.role == "admin" else statement.where(Project.owner_id == actor.id)


def projects(ctx: Context, actor: Account) -> list[Project]:
    with ctx.sessions() as session:
        return list(session.scalars(_visible_projects(actor).order_by(Project.id)))


def project(ctx: Context, actor: Account, project_id: int) -> Project:
    with ctx.sessions() as session:
        found = session.scalar(_visible_projects(actor).where(Project.id == project_id))
    if found is None:
        raise NotFound(f"project {project_id} not found", field="project")
    return found


def _check_text(value: str, field: str) -> str:
    if any(unicodedata.category(c).startswith("C") for c in value):
        raise Invalid(f"{field} must not contain control or unassigned characters", field=field)
    return value


def create_project(ctx: Context, actor: Account, name: str, description: str = "") -> Project:
    name = _check_text(name.strip(), "name")
    if not name:
        raise Invalid("name must not be empty", field="name")
    _check_text(description.replace("\n", " ").replace("\t", " "), "description")
    try:
        with ctx.sessions.begin() as session:
            created = Project(name=name, description=description, owner_id=actor.id)
            session.add(created)
    except IntegrityError as exc:
        raise Conflict(f"you already have a project named {name!r}", field="name") from exc
    return created


def delete_project(ctx: Context, actor: Account, project_id: int) -> None:
    with ctx.sessions.begin() as session:
        found = session.scalar(_visible_projects(actor).where(Project.id == project_id))
        if found is None:
            raise NotFound(f"project {project_id} not found")
        if session.scalar(select(Database.id).where(Database.project_id == project_id).limit(1)):
            raise Conflict("the project still has databases")
        session.delete(found)


# -- databases ----------------------------------------------------------------------------------
def _visible_databases(actor: Account):
    statement = select(Database).join(Cluster, Cluster.id == Database.cluster_id)
    return statement if actor.role == "admin" else statement.where(Cluster.owner_id == actor.id)


def list_databases(ctx: Context, actor: Account, offset: int, limit: int) -> tuple[list[Database], int]:
    statement = _visible_databases(actor)
    with ctx.sessions() as session:
        count = session.scalar(select(func.count()).select_from(statement.subquery()))
        return list(session.scalars(statement.order_by(Database.id).offset(offset).limit(limit))), count


def get_database(ctx: Context, actor: Account, database_id: int) -> Database:
    with ctx.sessions() as session:
        found = session.scalar(_visible_databases(actor).where(Database.id == database_id))
    if found is None:
        raise NotFound(f"database {database_id} not found")
    return found


def database_details(ctx: Context, database: Database) -> dict:
    """Endpoint parts, credentials and sizes of one database record."""
    with ctx.sessions() as session:
        cluster = session.get(Cluster, database.cluster_id)
        credential_ids = list(session.scalars(select(Credential.id).where(Credential.database_id == database.id)
                                              .order_by(Credential.id)))
        limit = session.scalar(select(Plan.size_limit_bytes).where(Plan.id == database.plan_id)) \
            if database.plan_id else None
    member = next((m for m in cluster.members if m.role == clusters.PRIMARY), None)
    host = ctx.hosts.address_of(member.host) if member else ""
    used = next((d.get("size_bytes") for d in clusters.observed_databases(cluster)
                 if d.get("name") == database.name), None)
    return {"host": host, "port": member.port if member else None, "credential_ids": credential_ids,
            "total_size_in_bytes": limit or 0, "used_size_in_bytes": used or 0}


@registered
class DbaasCreate(clusters.ClusterKind):
    """A DBaaS database: its cluster's provision, then the database and its owner credential, in
    one operation. A failed step is recorded: repeating the same POST resumes on the same cluster
    (the provision is rerun only if the cluster is not RUNNING; both playbooks are idempotent)."""

    name = "dbaas_create"

    def finish(self, session, operation, cluster, outcome):
        if outcome.ok:
            databases.record_database(session, operation)


def create_database(ctx: Context, actor: Account, name: str, plan_id: int, environment_id: int,
                    project_id: int | None) -> Database:
    name = normalise_name(name)
    chosen_plan = plan(ctx, plan_id)
    group = environment(ctx, environment_id)
    if project_id is not None:
        project(ctx, actor, project_id)
    new = databases.NewDatabase(name=name, owner=f"u_{name}", owner_password=generate_password(12),
                                if_exists="fail", plan_id=plan_id, environment=group, project_id=project_id)
    operation = _resume_create(ctx, actor, name, new)
    if operation is None:
        spec = clusters.ClusterSpec(name=name, sizing=chosen_plan.sizing, host_group=group,
                                    dialect_fields={"dbaas": {"database": name}})
        step, params, secrets = databases.plan_create_database(ctx, new)
        _cluster, operation = clusters.create_cluster(
            ctx, actor, spec, clusters.FollowUp("dbaas_create", [step], params, secrets))
    operation = requests_service.run_to_end(ctx, actor, operation.id)
    with ctx.sessions() as session:
        return session.scalar(select(Database).where(Database.cluster_id == operation.cluster_id,
                                                     Database.name == name))


def _resume_create(ctx: Context, actor: Account, name: str, new: databases.NewDatabase) -> Operation | None:
    """The operation that finishes an earlier, failed create of this database, or None (none failed)."""
    with ctx.sessions.begin() as session:
        cluster = next((c for c in session.scalars(
            select(Cluster).where(Cluster.owner_id == actor.id, Cluster.name == name,
                                  Cluster.service_state != clusters.TERMINATED))
            if c.dialect_fields.get("dbaas", {}).get("database") == name), None)
        if cluster is None:
            return None
        databases.check_database_absent(session, cluster.id, name)
        step, params, secrets = databases.plan_create_database(ctx, new)
        steps = [step]
        if cluster.service_state != clusters.RUNNING:
            version = catalog.version_of(session, cluster)
            steps.insert(0, clusters.provision_step(cluster, version))
        return clusters.submit(ctx, session, cluster, actor, "dbaas_create", steps, params=params, secrets=secrets,
                               allowed_states=(clusters.RUNNING, clusters.ERROR))


def delete_database(ctx: Context, actor: Account, database_id: int) -> Database | None:
    """First delete: quarantine (every credential reset to a password nobody knows). Second: gone."""
    database = get_database(ctx, actor, database_id)
    if database.quarantine_dt is None:
        with ctx.sessions() as session:
            users = list(session.scalars(select(Credential.user).where(Credential.database_id == database.id)))
        operation = databases.reset_passwords(ctx, actor, database.cluster_id,
                                              {user: generate_password(32) for user in users},
                                              kind="quarantine_database",
                                              encrypted={user: UNKNOWN_PASSWORD for user in users},
                                              params={"database_id": database.id})
        requests_service.run_to_end(ctx, actor, operation.id)
        return get_database(ctx, actor, database_id)
    with ctx.sessions() as session:
        cluster = session.get(Cluster, database.cluster_id)
    if cluster.dialect_fields.get("dbaas", {}).get("database") == database.name:
        requests_service.run_to_end(ctx, actor, clusters.terminate(ctx, actor, cluster.id).id)
    else:
        operation = databases.destroy_database(ctx, actor, database.cluster_id, database.name)
        requests_service.run_to_end(ctx, actor, operation.id)
    return None


# -- credentials --------------------------------------------------------------------------------
def _visible_credentials(actor: Account):
    statement = select(Credential).join(Cluster, Cluster.id == Credential.cluster_id)
    return statement if actor.role == "admin" else statement.where(Cluster.owner_id == actor.id)


def list_credentials(ctx: Context, actor: Account, offset: int, limit: int) -> tuple[list[Credential], int]:
    statement = _visible_credentials(actor).where(Credential.database_id.is_not(None))
    with ctx.sessions() as session:
        count = session.scalar(select(func.count()).select_from(statement.subquery()))
        return list(session.scalars(statement.order_by(Credential.id).offset(offset).limit(limit))), count


def get_credential(ctx: Context, actor: Account, credential_id: int) -> Credential:
    with ctx.sessions() as session:
        found = session.scalar(_visible_credentials(actor).where(Credential.id == credential_id))
    if found is None:
        raise NotFound(f"credential {credential_id} not found")
    return found


def password_of(ctx: Context, credential: Credential) -> str | None:
    if credential.password_encrypted == UNKNOWN_PASSWORD:
        return None
    return databases.credential_password(ctx, credential)


def create_credential(ctx: Context, actor: Account, user: str, database_id: int) -> Credential:
    database = get_database(ctx, actor, database_id)
    if database.quarantine_dt is not None:
        raise Conflict("the database is in quarantine", field="database")
    operation, _password = databases.create_user(ctx, actor, database.cluster_id, user, database.name,
                                                 generate_password(12))
    requests_service.run_to_end(ctx, actor, operation.id)
    with ctx.sessions() as session:
        return session.scalar(select(Credential).where(Credential.cluster_id == database.cluster_id,
                                                       Credential.user == user))


def reset_credential(ctx: Context, actor: Account, credential_id: int) -> Credential:
    credential = get_credential(ctx, actor, credential_id)
    database = get_database(ctx, actor, credential.database_id)
    if database.quarantine_dt is not None:
        raise Conflict("the database is in quarantine: its credentials stay unknown", field="database")
    operation, _password = databases.reset_password(ctx, actor, credential.cluster_id, credential.user,
                                                    generate_password(12))
    requests_service.run_to_end(ctx, actor, operation.id)
    return get_credential(ctx, actor, credential_id)


def delete_credential(ctx: Context, actor: Account, credential_id: int) -> None:
    credential = get_credential(ctx, actor, credential_id)
    operation = databases.drop_user(ctx, actor, credential.cluster_id, credential.user)
    requests_service.run_to_end(ctx, actor, operation.id)
