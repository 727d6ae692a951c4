"""The HTTP edge every dialect shares: error bodies (one renderer per dialect, picked by the
route's prefix), the error responses each route declares in the OpenAPI, and bounded integers.

Every error, whether the service layer raised it (`api.errors`), FastAPI's request validation
refused the call, or an `HTTPException` (401, unknown route) ended it, is rendered by the
dialect that owns the path. Validation errors are 400 in every dialect and never carry the
input (a rejected password must not come back in the answer).
"""
from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import BaseModel, Field

# The store's integer ids are signed 64-bit (SQLite INTEGER, PostgreSQL bigint): a larger number
# can name nothing, and must not reach the database driver (OverflowError).
INT64_MAX = 2**63 - 1
# Deepest page a listing serves: page * size stays far below INT64_MAX with size <= 1000.
MAX_PAGE = 1_000_000
MAX_PAGE_SIZE = 1000

RecordId = Annotated[int, Path(ge=1, le=INT64_MAX, description="record id (1 to 2^63-1)")]
BodyId = Annotated[int, Field(ge=1, le=INT64_MAX)]


def rule(regex: re.Pattern) -> dict:
    """A service rule, documented in the OpenAPI (`json_schema_extra`): the service enforces it, with
    its own message and field name, for every dialect."""
    return {"pattern": regex.pattern}


def page_query(default: int, low: int) -> Any:
    return Query(default, ge=low, le=MAX_PAGE, description=f"page number ({low}-{MAX_PAGE})")


def size_query(default: int) -> Any:
    return Query(default, ge=1, le=MAX_PAGE_SIZE, description=f"rows per page (1-{MAX_PAGE_SIZE})")


# -- error bodies -----------------------------------------------------------------------------------
class ErrorBody(BaseModel):
    """/v1 and DBaaS errors (the service layer's shape)."""

    detail: str = Field(description="what is wrong, for a person")
    field: str | None = Field(default=None, description="the parameter or body field at fault, dotted")
    request_id: str | None = Field(default=None, description="the request holding the cluster (409), or the "
                                                             "request that failed (502) or still runs (504)")


class AgentError(BaseModel):
    """The agent seed's error body."""

    error: str


class ItcareFieldError(BaseModel):
    field: str
    message: str


class ItcareError(BaseModel):
    """The ITCare seed's error body (its 400 "Bad Request" shape, for every status)."""

    status: int
    error: str = Field(description="the status' reason phrase, e.g. Bad Request")
    message: str
    field: str | None = None
    errors: list[ItcareFieldError] = []


@dataclass(frozen=True)
class Problem:
    """One field at fault: where (dotted) and why (never the value)."""

    field: str
    message: str


LOCATIONS = ("body", "query", "path", "header", "cookie")
MAX_PROBLEMS = 10


_NO_BODY = object()


def _without_union_tags(loc: list, body: Any) -> list:
    """The body location with the tags pydantic inserts for a discriminated union's member dropped
    (`install_extension.options.dbname` is the body's `options.dbname`). Walking the body: a part
    that is no key of the object it is in, with more parts after it, can only be such a tag (a
    missing field has nothing under it)."""
    kept, value = [], body
    for index, part in enumerate(loc):
        if isinstance(value, dict):
            if part in value:
                kept.append(part)
                value = value[part]
                continue
            if isinstance(part, str) and index < len(loc) - 1 and part in value.values():
                continue  # the member's tag: the value of its discriminator in this object
        elif isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value):
            kept.append(part)
            value = value[part]
            continue
        kept.append(part)
        value = None
    return kept


def _tags(ctx: dict) -> str:
    """A discriminated union's tags (pydantic's "'start', 'stop'"), sorted: start, stop."""
    return ", ".join(sorted(tag.strip().strip("'") for tag in str(ctx.get("expected_tags", "")).split(",")
                            if tag.strip()))


def validation_problems(errors: Iterable[dict], body: Any = _NO_BODY) -> list[Problem]:
    """Pydantic/FastAPI errors as (field, reason): the location dotted without its `body`/`query`
    prefix (and, given the request body, without a discriminated union's tags), the message without
    pydantic's "Value error, ". `input` and `ctx` are dropped; a union's unknown tag is named by its
    discriminator field and the supported tags, never by the value sent."""
    problems = []
    for error in list(errors)[:MAX_PROBLEMS]:
        loc = list(error.get("loc", ()))
        if loc and loc[0] == "body" and body is not _NO_BODY:
            loc = loc[:1] + _without_union_tags(loc[1:], body)
        ctx = error.get("ctx") or {}
        kind = error.get("type")
        if kind in ("union_tag_invalid", "union_tag_not_found"):
            discriminator = str(ctx.get("discriminator", "")).strip("'") or "type"
            loc = [*loc, discriminator]
        loc = [str(part) for part in loc]
        if loc and loc[0] in LOCATIONS:
            loc = loc[1:] if len(loc) > 1 else loc
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if kind == "union_tag_invalid":
            message = f"unknown {loc[-1]}; supported {loc[-1]}s: {_tags(ctx)}"
        elif kind == "union_tag_not_found":
            message = "Field required"
        if error.get("type") in ("too_short", "too_long"):
            # pydantic adds the rejected value's length ("..., not 5"): of a password, that is a hint.
            bound = ctx.get("min_length") if error["type"] == "too_short" else ctx.get("max_length")
            message = f"Value should have a length of {'at least' if error['type'] == 'too_short' else 'at most'} " \
                      f"{bound}"
        problems.append(Problem(field=".".join(loc) or "body", message=message))
    return problems


def _v1(status: int, message: str, field: str | None, _problems: list[Problem], request_id: str | None) -> dict:
    body: dict = {"detail": message}
    if field:
        body["field"] = field
    if request_id:
        body["request_id"] = request_id
    return body


def _agent(_status: int, message: str, _field: str | None, _problems: list[Problem],
           _request_id: str | None) -> dict:
    return {"error": message}


def _itcare(status: int, message: str, field: str | None, problems: list[Problem],
            _request_id: str | None) -> dict:
    if not problems and field:
        problems = [Problem(field, message)]
    return {"status": status, "error": _phrase(status), "message": message, "field": field,
            "errors": [{"field": p.field, "message": p.message} for p in problems]}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


DESCRIPTIONS = {
    400: "a parameter or body field breaks a rule (validation); nothing was done",
    401: "no valid account: HTTP Basic or a bearer token from POST /v1/tokens",
    403: "the account may not do this (admin only)",
    404: "the resource (or one the body names) does not exist, or belongs to another account",
    409: "the resource's state or a running request forbids it, or the name is taken",
    502: "the operation ran on the database host and failed (its request id tells why)",
    504: "the operation still runs after PGDBAAS_SYNC_TIMEOUT seconds: poll its request",
}


@dataclass(frozen=True)
class Dialect:
    name: str
    prefix: str  # the dialect's router prefix: every path under it is the dialect's
    model: type[BaseModel]
    _render: Callable[[int, str, str | None, list[Problem], str | None], dict]

    def render(self, status: int, message: str, *, field: str | None = None, problems: list[Problem] | None = None,
               request_id: str | None = None) -> dict:
        return self._render(status, message, field, problems or [], request_id)

    def validation_body(self, problems: list[Problem]) -> dict:
        message = "; ".join(f"{p.field}: {p.message}" for p in problems) or "invalid request"
        return self.render(400, message, field=problems[0].field if problems else None, problems=problems)

    def responses(self, *codes: int) -> dict[int | str, dict[str, Any]]:
        """OpenAPI `responses` for these error codes, with this dialect's error body."""
        return {code: {"model": self.model, "description": DESCRIPTIONS[code]} for code in codes}


V1 = Dialect("v1", "/v1", ErrorBody, _v1)
AGENT = Dialect("agent", "/service/postgresql", AgentError, _agent)
ITCARE = Dialect("itcare", "/itcare/databases/postgresql", ItcareError, _itcare)
DBAAS = Dialect("dbaas", "/api", ErrorBody, _v1)
# Trove's datastore management (admin accounts); the seed shows no error body: /v1's.
MGMT = Dialect("mgmt", "/mgmt", ErrorBody, _v1)
DIALECTS = (AGENT, ITCARE, DBAAS, MGMT, V1)


def dialect_of(path: str) -> Dialect:
    """The dialect owning a path (/v1's shape for paths outside every dialect, e.g. /health)."""
    for dialect in DIALECTS:
        if path == dialect.prefix or path.startswith(dialect.prefix + "/"):
            return dialect
    return V1


# -- the OpenAPI document ----------------------------------------------------------------------------
def declare_400_not_422(schema: dict) -> dict:
    """FastAPI documents a 422 (its own validation body) on every route with parameters; this API
    answers 400 with the dialect's error body instead."""
    for path, operations in schema.get("paths", {}).items():
        dialect = dialect_of(path)
        for operation in operations.values():
            responses = operation.get("responses", {})
            if responses.pop("422", None) is not None and "400" not in responses:
                responses["400"] = {
                    "description": DESCRIPTIONS[400],
                    "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/"
                                                                         f"{dialect.model.__name__}"}}},
                }
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    for dialect in DIALECTS:  # referenced by every 400 above, whether or not a route names it
        for name, definition in _model_schemas(dialect.model).items():
            components.setdefault(name, definition)
    return schema


def _model_schemas(model: type[BaseModel]) -> dict[str, dict]:
    definition = model.model_json_schema(ref_template="#/components/schemas/{model}", mode="serialization")
    nested = definition.pop("$defs", {})
    return {model.__name__: definition, **nested}
