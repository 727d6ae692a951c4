"""/v1/clusters/{id}/databases, /users and /extensions."""
from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Query, status

from api.context import Context
from api.deps import current_account, get_context
from api.routers.common import V1
from api.routers.v1.clusters import ON_CLUSTER, accepted
from api.routers.v1.models import (SQL_NAME, AsyncPasswordResponse, DatabaseCreate, DatabaseOut, ExtensionInstall,
                                   ExtensionOut, PasswordReset, UserCreate, UserOut)
from api.services import databases as service
from api.store.models import Account

router = APIRouter(prefix="/clusters/{cluster_id}", tags=["databases, users, extensions"])
WITH_PASSWORD = {"status_code": status.HTTP_202_ACCEPTED, "response_model": AsyncPasswordResponse,
                 "responses": V1.responses(404, 409)}
READ = {"responses": V1.responses(404)}
# A database or role name in the path (checked by the service, 400 naming `name`).
Name = Path(max_length=63, json_schema_extra=SQL_NAME)


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


@router.get("/databases", response_model=list[DatabaseOut], summary="List Databases (as last observed)", **READ)
def list_databases(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return [DatabaseOut(**{k: v for k, v in row.items() if k in DatabaseOut.model_fields})
            for row in service.list_databases(ctx, actor, cluster_id)]


@router.post("/databases", **ON_CLUSTER, summary="Create Database")
def create_database(cluster_id: str, body: DatabaseCreate, ctx: Context = Depends(get_context),
                    actor: Account = Depends(current_account)):
    spec = service.NewDatabase(name=body.name, owner=body.owner, owner_password=_secret(body.owner_password))
    return accepted(cluster_id, service.create_database(ctx, actor, cluster_id, spec))


@router.delete("/databases/{name}", **ON_CLUSTER, summary="Destroy Database (its credentials' roles too)")
def destroy_database(cluster_id: str, name: str = Name, ctx: Context = Depends(get_context),
                     actor: Account = Depends(current_account)):
    return accepted(cluster_id, service.destroy_database(ctx, actor, cluster_id, name, if_absent="fail"))


@router.get("/users", response_model=list[UserOut], summary="List Users (no passwords)", **READ)
def list_users(cluster_id: str, ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return [UserOut(**row) for row in service.list_users(ctx, actor, cluster_id)]


@router.post("/users", **WITH_PASSWORD, summary="Create User scoped to one database")
def create_user(cluster_id: str, body: UserCreate, ctx: Context = Depends(get_context),
                actor: Account = Depends(current_account)):
    operation, password = service.create_user(ctx, actor, cluster_id, body.name, body.database,
                                              _secret(body.password))
    return AsyncPasswordResponse(**accepted(cluster_id, operation).model_dump(),
                                 password=None if body.password else password)


@router.post("/users/{name}/reset-password", **WITH_PASSWORD, summary="Reset a User's password")
def reset_password(cluster_id: str, name: str = Name, body: PasswordReset | None = None,
                   ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    chosen = _secret(body.password) if body else None
    operation, password = service.reset_password(ctx, actor, cluster_id, name, chosen)
    return AsyncPasswordResponse(**accepted(cluster_id, operation).model_dump(),
                                 password=None if chosen else password)


@router.delete("/users/{name}", **ON_CLUSTER, summary="Drop User (what it owns goes to its database's owner)")
def drop_user(cluster_id: str, name: str = Name, ctx: Context = Depends(get_context),
              actor: Account = Depends(current_account)):
    return accepted(cluster_id, service.drop_user(ctx, actor, cluster_id, name))


@router.get("/extensions", response_model=list[ExtensionOut], summary="List available Extensions",
            responses=V1.responses(404, 409, 502, 504))
def list_extensions(cluster_id: str, database: str = Query("postgres", max_length=63, json_schema_extra=SQL_NAME),
                    ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return [ExtensionOut(**{k: v for k, v in row.items() if k in ExtensionOut.model_fields})
            for row in service.available_extensions(ctx, actor, cluster_id, database)]


@router.post("/extensions", **ON_CLUSTER, summary="Install Extensions in a database")
def install_extensions(cluster_id: str, body: ExtensionInstall, ctx: Context = Depends(get_context),
                       actor: Account = Depends(current_account)):
    extensions = [e.model_dump(exclude_none=True) for e in body.extensions]
    return accepted(cluster_id, service.install_extensions(ctx, actor, cluster_id, body.database, extensions))
