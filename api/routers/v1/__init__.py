"""The native dialect, modelled on the SCP PostgreSQL cluster API."""
from fastapi import APIRouter

from api.routers.common import V1
from api.routers.v1 import (accounts, backups, clusters, databases, engine_versions, replicas, requests,
                            upgrades)

# Every /v1 route needs an account; the 400 of each route with parameters comes with the OpenAPI.
router = APIRouter(prefix=V1.prefix, responses=V1.responses(401))
for module in (clusters, backups, upgrades, replicas, databases, requests, engine_versions, accounts):
    router.include_router(module.router)
