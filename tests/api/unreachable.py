"""An API server whose only host is unreachable: every ansible job fails within a second.

Its single host in `pgdbaas_hosts` is reached by ssh on a loopback port that the fixture holds
bound and never listens on, so connections are refused: no PostgreSQL instance is ever created,
whatever a request asks, and every API code path still runs (placement, locks, the executor,
failed operations, the synchronous dialects' waits). The agent facade is enabled: its boot
provision fails, so it serves an instance in ERROR.
"""
from __future__ import annotations

import socket

import pytest

from tests.api.harness import ApiServer, wait_request

PORT_RANGE = "56500-56599"  # nothing listens there: no instance is ever created
AGENT_NAME, AGENT_PORT = "tschema-agent", 56599


@pytest.fixture(scope="module")
def unreachable(tmp_path_factory):
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connections to it are refused
    data_dir = tmp_path_factory.mktemp("unreachable")
    inventory = data_dir / "inventory.yml"
    inventory.write_text(
        "all:\n  children:\n    pgdbaas_hosts:\n      hosts:\n        tschema-unreachable:\n"
        "          ansible_connection: ssh\n          ansible_host: 127.0.0.1\n"
        f"          ansible_port: {closed.getsockname()[1]}\n          ansible_user: nobody\n")
    api = ApiServer(data_dir, port_range=PORT_RANGE, extra_env={
        "PGDBAAS_INVENTORY": str(inventory), "PGDBAAS_AGENT_INSTANCE": AGENT_NAME,
        "PGDBAAS_AGENT_PORT": str(AGENT_PORT)})
    api.start()
    try:
        with api.client() as admin:
            for request in admin.get("/v1/requests").raise_for_status().json()["contents"]:
                wait_request(admin, request["request_id"])  # the agent's boot provision: it ends in ERROR
        yield api
    finally:
        api.stop()
        closed.close()
