"""DBaaS dialect at /api/ (databases-and-credentials seed): HTTP Basic, absolute URLs, `_links`."""
from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field

from api.context import Context
from api.deps import current_account, get_context
from api.errors import Invalid
from api.routers.common import DBAAS, INT64_MAX, BodyId, RecordId, page_query, rule, size_query
from api.services import dbaas as service
from api.services.clusters import SQL_NAME_RE
from api.store.models import Account, Credential, Database

router = APIRouter(prefix=DBAAS.prefix, tags=["dbaas"], responses=DBAAS.responses(401))
# A resource URL (`/api/plan/1/`, absolute or not) or its id.
Ref = Annotated[str, Field(max_length=2048)] | BodyId
# A call that waits for its operations: they can be refused (409) or fail on the host (502).
SYNCHRONOUS = DBAAS.responses(404, 409, 502, 504)


class Links(BaseModel):
    self: str


class PageLinks(BaseModel):
    count: int
    self: str
    previous: str | None
    next: str | None


class DatabaseCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=60, examples=["test database2"])
    plan: Ref = Field(examples=["/api/plan/1/"])
    environment: Ref = Field(examples=["/api/environment/1/"])
    project: Ref | None = None


class DatabaseOut(BaseModel):
    links: Links = Field(serialization_alias="_links")
    id: int
    name: str
    endpoint: str
    plan: str | None
    environment: str | None
    project: str | None
    quarantine_dt: str | None
    total_size_in_bytes: int
    used_size_in_bytes: int
    credentials: list[str]


class DatabasePage(BaseModel):
    links: PageLinks = Field(serialization_alias="_links")
    database: list[DatabaseOut]


class CredentialItem(BaseModel):
    """A credential as listed: never with its password."""

    links: Links = Field(serialization_alias="_links")
    id: int
    user: str
    database: str


class CredentialOut(CredentialItem):
    password: str | None = Field(description="null while the database is in quarantine")


class CredentialPage(BaseModel):
    links: PageLinks = Field(serialization_alias="_links")
    credential: list[CredentialItem]


class PlanOut(BaseModel):
    links: Links = Field(serialization_alias="_links")
    id: int
    name: str
    sizing: str
    total_size_in_bytes: int
    description: str


class PlanPage(BaseModel):
    links: PageLinks = Field(serialization_alias="_links")
    plan: list[PlanOut]


class EnvironmentOut(BaseModel):
    links: Links = Field(serialization_alias="_links")
    id: int
    name: str
    hosts: list[str]


class EnvironmentPage(BaseModel):
    links: PageLinks = Field(serialization_alias="_links")
    environment: list[EnvironmentOut]


class ProjectOut(BaseModel):
    links: Links = Field(serialization_alias="_links")
    id: int
    name: str
    description: str


class ProjectPage(BaseModel):
    links: PageLinks = Field(serialization_alias="_links")
    project: list[ProjectOut]


class CredentialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=63, examples=["u_myusr1"], json_schema_extra=rule(SQL_NAME_RE))
    database: Ref = Field(examples=["/api/database/1/"])


class ProjectCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    description: str = ""


def _id_from(value: str | int | None, resource: str, field: str) -> int | None:
    """`/api/plan/1/`, `http://host/api/plan/1/` or `1` -> 1."""
    if value is None:
        return None
    if isinstance(value, int):
        return value
    match = re.search(rf"(?:^|/api/{resource}/)([0-9]{{1,19}})/?$", value.strip())
    if not match or not 1 <= int(match.group(1)) <= INT64_MAX:
        raise Invalid(f"{field} must be a URL like /api/{resource}/1/ (an id from 1 to 2^63-1)", field=field)
    return int(match.group(1))


def _url(request: Request, path: str) -> str:
    return str(request.base_url).rstrip("/") + path


def _page(request: Request, path: str, count: int, page: int, page_size: int) -> dict:
    def link(number: int) -> str:
        return _url(request, f"{path}?page={number}&page_size={page_size}")

    return {"count": count, "self": _url(request, path),
            "previous": link(page - 1) if page > 1 else None,
            "next": link(page + 1) if page * page_size < count else None}


def _database(request: Request, ctx: Context, database: Database) -> dict:
    details = service.database_details(ctx, database)
    environment_id = next((number for number, name in service.environments(ctx) if name == database.environment),
                          None)
    return {
        "links": {"self": _url(request, f"/api/database/{database.id}/")},
        "id": database.id, "name": database.name,
        "endpoint": f"postgresql://<user>:<password>@{details['host']}:{details['port']}/{database.name}",
        "plan": _url(request, f"/api/plan/{database.plan_id}/") if database.plan_id else None,
        "environment": _url(request, f"/api/environment/{environment_id}/") if environment_id else None,
        "project": _url(request, f"/api/project/{database.project_id}/") if database.project_id else None,
        "quarantine_dt": database.quarantine_dt.isoformat() if database.quarantine_dt else None,
        "total_size_in_bytes": details["total_size_in_bytes"], "used_size_in_bytes": details["used_size_in_bytes"],
        "credentials": [_url(request, f"/api/credential/{cid}/") for cid in details["credential_ids"]],
    }


def _credential(request: Request, ctx: Context, credential: Credential, with_password: bool) -> dict:
    body = {"links": {"self": _url(request, f"/api/credential/{credential.id}/")}, "id": credential.id,
            "user": credential.user, "database": _url(request, f"/api/database/{credential.database_id}/")}
    if with_password:
        body["password"] = service.password_of(ctx, credential)
    return body


PAGING = {"page": page_query(1, 1), "page_size": size_query(20)}


# -- databases ------------------------------------------------------------------------------
@router.post("/database/", status_code=status.HTTP_201_CREATED, response_model=DatabaseOut, summary="Create a database",
             responses=SYNCHRONOUS)
def create_database(body: DatabaseCreate, request: Request, ctx: Context = Depends(get_context),
                    actor: Account = Depends(current_account)):
    database = service.create_database(ctx, actor, body.name, _id_from(body.plan, "plan", "plan"),
                                       _id_from(body.environment, "environment", "environment"),
                                       _id_from(body.project, "project", "project"))
    return _database(request, ctx, database)


@router.get("/database/", response_model=DatabasePage, summary="List databases")
def list_databases(request: Request, page: int = PAGING["page"], page_size: int = PAGING["page_size"],
                   ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    rows, count = service.list_databases(ctx, actor, (page - 1) * page_size, page_size)
    return {"links": _page(request, "/api/database/", count, page, page_size),
            "database": [_database(request, ctx, d) for d in rows]}


@router.get("/database/{database_id}/", response_model=DatabaseOut, summary="Get a database",
            responses=DBAAS.responses(404))
def get_database(database_id: RecordId, request: Request, ctx: Context = Depends(get_context),
                 actor: Account = Depends(current_account)):
    return _database(request, ctx, service.get_database(ctx, actor, database_id))


@router.delete("/database/{database_id}/", status_code=status.HTTP_204_NO_CONTENT,
               summary="Quarantine a database (first delete) or destroy it (second delete)", responses=SYNCHRONOUS)
def delete_database(database_id: RecordId, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    service.delete_database(ctx, actor, database_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- credentials ----------------------------------------------------------------------------
@router.get("/credential/", response_model=CredentialPage, summary="List credentials (no passwords)")
def list_credentials(request: Request, page: int = PAGING["page"], page_size: int = PAGING["page_size"],
                     ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    rows, count = service.list_credentials(ctx, actor, (page - 1) * page_size, page_size)
    return {"links": _page(request, "/api/credential/", count, page, page_size),
            "credential": [_credential(request, ctx, c, with_password=False) for c in rows]}


@router.get("/credential/{credential_id}/", response_model=CredentialOut, summary="Get a credential with its password",
            responses=DBAAS.responses(404))
def get_credential(credential_id: RecordId, request: Request, ctx: Context = Depends(get_context),
                   actor: Account = Depends(current_account)):
    return _credential(request, ctx, service.get_credential(ctx, actor, credential_id), with_password=True)


@router.post("/credential/", status_code=status.HTTP_201_CREATED, response_model=CredentialOut, summary="Create a credential",
             responses=SYNCHRONOUS)
def create_credential(body: CredentialCreate, request: Request, ctx: Context = Depends(get_context),
                      actor: Account = Depends(current_account)):
    credential = service.create_credential(ctx, actor, body.user, _id_from(body.database, "database", "database"))
    return _credential(request, ctx, credential, with_password=True)


@router.post("/credential/{credential_id}/reset_password/", response_model=CredentialOut, summary="Generate a new password",
             responses=SYNCHRONOUS)
def reset_password(credential_id: RecordId, request: Request, ctx: Context = Depends(get_context),
                   actor: Account = Depends(current_account)):
    return _credential(request, ctx, service.reset_credential(ctx, actor, credential_id), with_password=True)


@router.delete("/credential/{credential_id}/", status_code=status.HTTP_204_NO_CONTENT, summary="Remove a credential",
               responses=SYNCHRONOUS)
def delete_credential(credential_id: RecordId, ctx: Context = Depends(get_context),
                      actor: Account = Depends(current_account)):
    service.delete_credential(ctx, actor, credential_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# -- plans, environments, projects --------------------------------------------------------------
def _plan(request: Request, plan) -> dict:
    return {"links": {"self": _url(request, f"/api/plan/{plan.id}/")}, "id": plan.id, "name": plan.name,
            "sizing": plan.sizing, "total_size_in_bytes": plan.size_limit_bytes, "description": plan.description}


def _environment(request: Request, ctx: Context, number: int, name: str) -> dict:
    hosts = sorted(h.name for h in ctx.hosts.hosts.values() if name in h.groups)
    return {"links": {"self": _url(request, f"/api/environment/{number}/")}, "id": number, "name": name,
            "hosts": hosts}


def _project(request: Request, project) -> dict:
    return {"links": {"self": _url(request, f"/api/project/{project.id}/")}, "id": project.id,
            "name": project.name, "description": project.description}


@router.get("/plan/", response_model=PlanPage, summary="List plans")
def list_plans(request: Request, ctx: Context = Depends(get_context), _actor=Depends(current_account)):
    rows = service.plans(ctx)
    return {"links": _page(request, "/api/plan/", len(rows), 1, max(len(rows), 1)),
            "plan": [_plan(request, p) for p in rows]}


@router.get("/plan/{plan_id}/", response_model=PlanOut, summary="Get a plan", responses=DBAAS.responses(404))
def get_plan(plan_id: RecordId, request: Request, ctx: Context = Depends(get_context), _actor=Depends(current_account)):
    return _plan(request, service.plan(ctx, plan_id))


@router.get("/environment/", response_model=EnvironmentPage, summary="List environments (host groups)")
def list_environments(request: Request, ctx: Context = Depends(get_context), _actor=Depends(current_account)):
    rows = service.environments(ctx)
    return {"links": _page(request, "/api/environment/", len(rows), 1, max(len(rows), 1)),
            "environment": [_environment(request, ctx, n, name) for n, name in rows]}


@router.get("/environment/{environment_id}/", response_model=EnvironmentOut, summary="Get an environment",
            responses=DBAAS.responses(404))
def get_environment(environment_id: RecordId, request: Request, ctx: Context = Depends(get_context),
                    _actor=Depends(current_account)):
    return _environment(request, ctx, environment_id, service.environment(ctx, environment_id))


@router.get("/project/", response_model=ProjectPage, summary="List projects")
def list_projects(request: Request, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    rows = service.projects(ctx, actor)
    return {"links": _page(request, "/api/project/", len(rows), 1, max(len(rows), 1)),
            "project": [_project(request, p) for p in rows]}


@router.post("/project/", status_code=status.HTTP_201_CREATED, response_model=ProjectOut, summary="Create a project",
             responses=DBAAS.responses(409))
def create_project(body: ProjectCreate, request: Request, ctx: Context = Depends(get_context),
                   actor: Account = Depends(current_account)):
    return _project(request, service.create_project(ctx, actor, body.name, body.description))


@router.get("/project/{project_id}/", response_model=ProjectOut, summary="Get a project",
            responses=DBAAS.responses(404))
def get_project(project_id: RecordId, request: Request, ctx: Context = Depends(get_context),
                actor: Account = Depends(current_account)):
    return _project(request, service.project(ctx, actor, project_id))


@router.delete("/project/{project_id}/", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a project",
               responses=DBAAS.responses(404, 409))
def delete_project(project_id: RecordId, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    service.delete_project(ctx, actor, project_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
