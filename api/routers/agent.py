"""Agent facade (agent seed): one configured default instance at /service/postgresql.

Start, stop, restart and configure are synchronous here: the call waits for the operation's
job and answers the status. Preconditions are the service layer's (start from stopped or error,
stop and restart from started), rendered as 409 {"error": "..."}.
"""
from __future__ import annotations

from functools import partial

from fastapi import APIRouter, Depends, Response, status
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from api.context import Context
from api.deps import current_account, get_context
from api.errors import Conflict, Invalid, NotFound, OperationFailed
from api.routers.common import AGENT, rule
from api.services import clusters as service
from api.services import databases
from api.services import requests as requests_service
from api.store.models import Account, Cluster

# Errors (validation included) render as the seed's {"error": "..."} (api/routers/common.py).
router = APIRouter(prefix=AGENT.prefix, tags=["agent facade"], responses=AGENT.responses(401))
# The seed's configure errors, as the playbooks report them.
SEED_ERRORS = ("The user already exists", "The database already exists", "The database does not exist")

AGENT_STATES = {
    service.RUNNING: "started", service.STOPPED: "stopped", service.ERROR: "error",
    # In-between states answer what the service still is until the operation ends.
    service.RESTARTING: "started", service.STOPPING: "started", service.STARTING: "stopped",
    service.CREATING: "stopped", service.TERMINATING: "stopped", service.TERMINATED: "stopped",
}


class AgentStatus(BaseModel):
    state: str
    databases: list[str]


SQL_NAME = rule(service.SQL_NAME_RE)


class CreateAdmin(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user: str = Field(min_length=1, max_length=63, json_schema_extra=SQL_NAME)
    password: SecretStr = Field(min_length=1, max_length=1024)


class CreateDatabase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63, json_schema_extra=SQL_NAME)
    user: str = Field(min_length=1, max_length=63, json_schema_extra=SQL_NAME)
    password: SecretStr = Field(min_length=1, max_length=1024)


class DestroyDatabase(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=63, json_schema_extra=SQL_NAME)
    user: str = Field(min_length=1, max_length=63, json_schema_extra=SQL_NAME)


class ConfigureRequest(BaseModel):
    """Exactly one command per call."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1, "maxProperties": 1})
    create_admin: CreateAdmin | None = None
    create_database: CreateDatabase | None = None
    destroy_database: DestroyDatabase | None = None


def _cluster(ctx: Context, actor: Account) -> Cluster:
    """The default instance, by the id recorded at boot (never by name), if this account may see it."""
    cluster_id = service.agent_cluster_id(ctx) if ctx.settings.agent_instance else None
    try:
        if cluster_id is None:
            raise NotFound("")
        return service.get_cluster(ctx, actor, cluster_id)
    except NotFound:
        # The same answer whether there is none or it is another account's: no id, no name.
        raise NotFound("no default instance is available to this account") from None


def _status(cluster: Cluster) -> AgentStatus:
    databases = [d["name"] for d in service.observed_databases(cluster)]
    return AgentStatus(state=AGENT_STATES.get(cluster.service_state, "error"), databases=databases)


def _run(ctx: Context, actor: Account, start) -> Cluster:
    """Run one operation on the default instance to its end: OperationFailed (502) if it did not
    succeed, or a 409 when the job failed with one of the seed's errors."""
    cluster = _cluster(ctx, actor)
    try:
        requests_service.run_to_end(ctx, actor, start(ctx, actor, cluster.id).id)
    except OperationFailed as exc:
        if exc.message in SEED_ERRORS:
            raise Conflict(exc.message, request_id=exc.request_id) from exc
        raise
    return service.get_cluster(ctx, actor, cluster.id)


@router.get("/status", response_model=AgentStatus, responses=AGENT.responses(404))
def agent_status(ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return _status(_cluster(ctx, actor))


def _action(ctx: Context, actor: Account, start):
    return _status(_run(ctx, actor, start))


RESPONSES = AGENT.responses(404, 409, 502, 504)


@router.post("/start", response_model=AgentStatus, responses=RESPONSES)
def agent_start(ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return _action(ctx, actor, service.start)


@router.post("/stop", response_model=AgentStatus, responses=RESPONSES)
def agent_stop(ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return _action(ctx, actor, service.stop)


@router.post("/restart", response_model=AgentStatus, responses=RESPONSES)
def agent_restart(ctx: Context = Depends(get_context), actor: Account = Depends(current_account)):
    return _action(ctx, actor, service.restart)


@router.post("/configure", status_code=status.HTTP_204_NO_CONTENT,
             responses={**RESPONSES, **AGENT.responses(400), 204: {"description": "done; the body is empty"}})
def agent_configure(body: ConfigureRequest, ctx: Context = Depends(get_context),
                    actor: Account = Depends(current_account)):
    commands = [name for name in ConfigureRequest.model_fields if getattr(body, name) is not None]
    if len(commands) != 1:
        raise Invalid("send exactly one command: create_admin, create_database or destroy_database")
    if body.create_admin is not None:
        admin = body.create_admin
        start = partial(service.create_admin, user=admin.user, password=admin.password.get_secret_value())
    elif body.create_database is not None:
        new = body.create_database
        start = partial(databases.create_database, spec=databases.NewDatabase(
            name=new.name, owner=new.user, owner_password=new.password.get_secret_value(), if_exists="fail"))
    else:
        gone = body.destroy_database
        start = partial(databases.destroy_database, name=gone.name, users=[gone.user], if_absent="fail")
    _run(ctx, actor, start)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
