from __future__ import annotations

import pytest

from tests.api.harness import ApiServer, drop_instance

# Ports of instances the shared API server creates (the agent's included); other suites use other ranges.
SHARED_PORTS = "55600-55690"
AGENT_NAME, AGENT_PORT = "tapi-agent", 55690


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    api = ApiServer(tmp_path_factory.mktemp("api"), port_range=SHARED_PORTS,
                    extra_env={"PGDBAAS_AGENT_INSTANCE": AGENT_NAME, "PGDBAAS_AGENT_PORT": str(AGENT_PORT)})
    api.start()
    yield api
    api.stop()
    drop_instance(AGENT_NAME)


@pytest.fixture
def admin(server):
    with server.client() as client:
        yield client


@pytest.fixture
def created(admin):
    """Clusters a test creates through the API, terminated (or dropped) afterwards."""
    names: list[tuple[str, str]] = []
    yield names
    for cluster_id, name in names:
        response = admin.delete(f"/v1/clusters/{cluster_id}")
        if response.status_code == 202:
            from tests.api.harness import wait_request
            wait_request(admin, response.json()["request_id"])
        drop_instance(name)
