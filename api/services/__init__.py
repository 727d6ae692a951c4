"""The service layer: one function per operation, called by every dialect's router.

Importing it registers every operation kind (api.engine.kinds), defined beside the service that
plans it, so that any worker finds a kind by name."""
from api.services import accounts, backups, clusters, databases, dbaas, ha, replicas, requests, upgrades  # noqa: F401
