"""The native dialect, modelled on the SCP PostgreSQL cluster API."""
from fastapi import APIRouter

from api.routers.v1 import accounts, clusters, databases, engine_versions, requests

router = APIRouter(prefix="/v1")
for module in (clusters, databases, requests, engine_versions, accounts):
    router.include_router(module.router)
