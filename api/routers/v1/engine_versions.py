"""/v1/engine-versions: what this installation can install."""
from __future__ import annotations

import platform

from fastapi import APIRouter, Depends

from api import catalog
from api.context import Context
from api.deps import current_account, get_context
from api.routers.v1.models import EngineVersionList, EngineVersionOut

router = APIRouter(prefix="/engine-versions", tags=["engine versions"])


def _os_version() -> str:
    try:
        return platform.freedesktop_os_release().get("PRETTY_NAME", platform.platform())
    except OSError:
        return platform.platform()


@router.get("", response_model=EngineVersionList, summary="List Engine Versions")
def list_engine_versions(ctx: Context = Depends(get_context), _actor=Depends(current_account)):
    return EngineVersionList(contents=[
        EngineVersionOut(end_of_service=v.end_of_service, id=v.id, major_version=v.major, name=v.name,
                         os_version=_os_version(), software_version=v.software_version, install_source=v.source)
        for v in catalog.engine_versions(ctx.settings)
    ])
