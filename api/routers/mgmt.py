"""/mgmt: Trove's datastore management API (admin accounts), over the catalog service.

The seed's routes, bodies and 200s: `POST /mgmt/datastores`, `PATCH /mgmt/datastores/{id}`,
`POST /mgmt/datastores/versions`, `PATCH /mgmt/datastores/versions/{id}` and
`PATCH /mgmt/datastores/{datastore_id}/{version_id}`; `GET /mgmt/datastores[/{id}]` show what
they made. A regular account gets 403 on every route, whatever its body.
"""
from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from api.context import Context
from api.deps import admin_account, get_context
from api.routers.common import INT64_MAX, MGMT, rule
from api.services import catalog
from api.store.models import Account

router = APIRouter(prefix=MGMT.prefix, tags=["datastore management (admin)"], responses=MGMT.responses(401, 403))

DATASTORE_NAME = rule(catalog.DATASTORE_NAME_RE)
VERSION_NAME = rule(catalog.VERSION_NAME_RE)
PACKAGES = rule(catalog.PACKAGES_RE)
BINARIES = rule(catalog.BINARIES_RE)
IMAGE = rule(catalog.IMAGE_RE)
REF = "an id, or a name"


def _image_id(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= INT64_MAX:
            raise ValueError("a number image_id must be within 0 to 2^63-1")
        return str(value)
    return value


# The seed's image_id is a number (000) or Trove's image uuid: kept as given, shown as a string.
ImageId = Annotated[str, BeforeValidator(_image_id), Field(max_length=255), WithJsonSchema({"anyOf": [
    {"type": "integer", "minimum": 0, "maximum": INT64_MAX},
    {"type": "string", "maxLength": 255, **IMAGE}]})]


class Body(BaseModel):
    """A /mgmt body: an unknown field is a 400 naming it (a typo must not pass for a change)."""

    model_config = ConfigDict(extra="forbid")


class DatastoreFields(Body):
    name: str = Field(min_length=1, max_length=64, json_schema_extra=DATASTORE_NAME)


class DatastoreCreate(Body):
    datastore: DatastoreFields


class DatastoreChanges(Body):
    name: str | None = Field(None, min_length=1, max_length=64, json_schema_extra=DATASTORE_NAME)
    datastore_version: str | None = Field(None, min_length=1, max_length=64,
                                          description="the default version: one of its versions, by name or id")


class DatastoreUpdate(Body):
    datastore: DatastoreChanges


class VersionFields(Body):
    name: str = Field(min_length=1, max_length=32, description="the PostgreSQL version, e.g. 16.14",
                      json_schema_extra=VERSION_NAME)
    manager: Literal["postgresql"]
    packages: str | None = Field(None, max_length=255, json_schema_extra=PACKAGES,
                                 description="apt packages; neither this nor binaries: postgresql-<major>")
    binaries: str | None = Field(None, max_length=255, json_schema_extra=BINARIES,
                                 description="path of a relocatable PostgreSQL tree on the database hosts")
    image_id: ImageId | None = None
    active: bool = True
    end_of_service: bool = False
    datastore: str | None = Field(None, min_length=1, max_length=64,
                                  description=f"its datastore, {REF}; absent: the seeded PostgreSQL datastore")


class VersionCreate(Body):
    version: VersionFields


class VersionChangesBody(Body):
    name: str | None = Field(None, min_length=1, max_length=32, json_schema_extra=VERSION_NAME)
    manager: Literal["postgresql"] | None = None
    packages: str | None = Field(None, max_length=255, json_schema_extra=PACKAGES)
    binaries: str | None = Field(None, max_length=255, json_schema_extra=BINARIES)
    image_id: ImageId | None = None
    active: bool | None = None
    end_of_service: bool | None = None


class VersionUpdate(Body):
    version: VersionChangesBody


class Link(BaseModel):
    href: str
    rel: str


class VersionItem(BaseModel):
    """A version in a datastore's list (the seed's `datastore_version` items)."""

    id: str
    name: str
    links: list[Link]
    image: str
    active: bool
    packages: str
    binaries: str
    major: str
    end_of_service: bool
    default: bool


class DatastoreOut(BaseModel):
    id: str
    name: str
    default_version: str | None = Field(description="the default version's id")
    versions: list[VersionItem]


class DatastoreBody(BaseModel):
    datastore: DatastoreOut


class DatastoreList(BaseModel):
    datastores: list[DatastoreOut]


class DatastoreUpdatedOut(BaseModel):
    """The seed's update answer: the versions under `datastore_version`."""

    id: str
    name: str
    default_version: str | None
    datastore_version: list[VersionItem]


class DatastoreUpdatedBody(BaseModel):
    datastore: DatastoreUpdatedOut


class VersionOut(BaseModel):
    id: str
    name: str
    manager: str
    packages: str
    binaries: str
    image_id: str
    active: bool
    end_of_service: bool
    major: str
    datastore: str = Field(description="its datastore's id")
    default: bool


class VersionBody(BaseModel):
    version: VersionOut


def _links(request: Request, version_id: str) -> list[Link]:
    path = f"/v1/engine-versions/{version_id}/properties"
    return [Link(href=str(request.base_url).rstrip("/") + path, rel="self"), Link(href=path, rel="bookmark")]


def _items(request: Request, datastore: catalog.DatastoreView) -> list[VersionItem]:
    return [VersionItem(id=v.id, name=v.name, links=_links(request, v.id), image=v.image_id, active=v.active,
                        packages=v.packages, binaries=v.binaries, major=v.major, end_of_service=v.end_of_service,
                        default=v.default) for v in datastore.versions]


def _datastore(request: Request, datastore: catalog.DatastoreView) -> DatastoreOut:
    return DatastoreOut(id=datastore.id, name=datastore.name, default_version=datastore.default_version_id,
                        versions=_items(request, datastore))


def _version(version: catalog.EngineVersion) -> VersionBody:
    return VersionBody(version=VersionOut(
        id=version.id, name=version.name, manager=version.manager, packages=version.packages,
        binaries=version.binaries, image_id=version.image_id, active=version.active,
        end_of_service=version.end_of_service, major=version.major, datastore=version.datastore_id,
        default=version.default))


def _changes(fields: BaseModel) -> catalog.VersionChanges:
    given = fields.model_dump(exclude_unset=True)
    known = catalog.VersionChanges.__dataclass_fields__
    return catalog.VersionChanges(**{k: v for k, v in given.items() if k in known})


DatastoreRef = Annotated[str, Path(min_length=1, max_length=64, description=f"the datastore, {REF}")]
VersionRef = Annotated[str, Path(min_length=1, max_length=64, description="the version's id")]


@router.get("/datastores", response_model=DatastoreList, summary="List datastores")
def list_datastores(request: Request, ctx: Context = Depends(get_context), actor: Account = Depends(admin_account)):
    return DatastoreList(datastores=[_datastore(request, d) for d in catalog.list_datastores(ctx, actor)])


@router.post("/datastores", response_model=DatastoreBody, summary="Create datastore", responses=MGMT.responses(409))
def create_datastore(body: DatastoreCreate, request: Request, ctx: Context = Depends(get_context),
                     actor: Account = Depends(admin_account)):
    return DatastoreBody(datastore=_datastore(request, catalog.create_datastore(ctx, actor, body.datastore.name)))


# Before /datastores/{datastore_id}/{version_id}, which would take "versions" for a datastore.
@router.post("/datastores/versions", response_model=VersionBody, summary="Create version",
             responses=MGMT.responses(404, 409))
def create_version(body: VersionCreate, ctx: Context = Depends(get_context), actor: Account = Depends(admin_account)):
    return _version(catalog.create_version(ctx, actor, _changes(body.version), datastore=body.version.datastore))


@router.patch("/datastores/versions/{version_id}", response_model=VersionBody, summary="Update version",
              responses=MGMT.responses(404, 409))
def update_version(version_id: VersionRef, body: VersionUpdate, ctx: Context = Depends(get_context),
                   actor: Account = Depends(admin_account)):
    return _version(catalog.update_version(ctx, actor, version_id, _changes(body.version)))


@router.get("/datastores/{datastore_id}", response_model=DatastoreBody, summary="Show datastore",
            responses=MGMT.responses(404))
def get_datastore(datastore_id: DatastoreRef, request: Request, ctx: Context = Depends(get_context),
                  actor: Account = Depends(admin_account)):
    return DatastoreBody(datastore=_datastore(request, catalog.get_datastore(ctx, actor, datastore_id)))


@router.patch("/datastores/{datastore_id}", response_model=DatastoreUpdatedBody, summary="Update datastore",
              responses=MGMT.responses(404, 409))
def update_datastore(datastore_id: DatastoreRef, body: DatastoreUpdate, request: Request,
                     ctx: Context = Depends(get_context), actor: Account = Depends(admin_account)):
    datastore = catalog.update_datastore(ctx, actor, datastore_id, name=body.datastore.name,
                                         default_version=body.datastore.datastore_version)
    return DatastoreUpdatedBody(datastore=DatastoreUpdatedOut(
        id=datastore.id, name=datastore.name, default_version=datastore.default_version_id,
        datastore_version=_items(request, datastore)))


@router.patch("/datastores/{datastore_id}/{version_id}", response_model=VersionBody,
              summary="Update version (of a datastore)", responses=MGMT.responses(404, 409))
def update_datastore_version(datastore_id: DatastoreRef, version_id: Annotated[str, Path(
        min_length=1, max_length=64, description="the version, by id or name (16.14)")], body: VersionUpdate,
        ctx: Context = Depends(get_context), actor: Account = Depends(admin_account)):
    return _version(catalog.update_version(ctx, actor, version_id, _changes(body.version), datastore=datastore_id))
