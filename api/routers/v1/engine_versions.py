"""/v1/engine-versions: the engine catalog as users see it (List Engine Versions, its Properties)."""
from __future__ import annotations

import platform
from functools import lru_cache

from fastapi import APIRouter, Depends, Path, Query

from api.context import Context
from api.deps import current_account, get_context
from api.routers.common import V1
from api.routers.v1.models import EngineProperty, EnginePropertyList, EngineVersionList, EngineVersionOut
from api.services import catalog

router = APIRouter(prefix="/engine-versions", tags=["engine versions"])


@lru_cache(maxsize=1)
def _os_version() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", platform.platform())
    except OSError:
        return platform.platform()


def render(version: catalog.EngineVersion) -> EngineVersionOut:
    return EngineVersionOut(end_of_service=version.end_of_service, id=version.id, major_version=version.major,
                            name=f"PostgreSQL {version.name}", os_version=_os_version(),
                            software_version=version.name, install_source=version.source, active=version.active,
                            default=version.default)


@router.get("", response_model=EngineVersionList, summary="List Engine Versions")
def list_engine_versions(
        id: str | None = Query(None, max_length=64, description="one version, by its id"),  # noqa: A002 (the seed's)
        eos_included: bool = Query(False, description="add the versions at their end of service"),
        ctx: Context = Depends(get_context), _actor=Depends(current_account)):
    return EngineVersionList(contents=[render(v) for v in catalog.list_versions(ctx, eos_included=eos_included,
                                                                                  version_id=id)])


@router.get("/{dbaas_engine_version_id}/properties", response_model=EnginePropertyList,
            summary="List Engine Version Properties", responses=V1.responses(404))
def list_engine_version_properties(dbaas_engine_version_id: str = Path(max_length=64),
                                   ctx: Context = Depends(get_context), _actor=Depends(current_account)):
    version = catalog.get_version(ctx, dbaas_engine_version_id)
    return EnginePropertyList(contents=[EngineProperty(name=name, value=value)
                                        for name, value in catalog.properties(version)])
