from __future__ import annotations

import pytest

from tests.api.harness import ApiServer, drop_instance

# Ports of instances the shared API server creates (the agent's included); other suites use other ranges.
SHARED_PORTS = "55600-55690"
AGENT_NAME, AGENT_PORT = "tapi-agent", 55690
# The modules that use the shared server (fixtures server, admin, created): tests/suite.py runs them in
# one pytest process, apart from each other module. A module not listed here gets an error at collection.
SHARED_SERVER_MODULES = ("test_agent", "test_auth", "test_clusters", "test_databases", "test_dbaas",
                         "test_isolation", "test_itcare", "test_members")


def pytest_collection_modifyitems(config, items):
    strays = sorted({item.module.__name__ for item in items
                     if "server" in item.fixturenames and not hasattr(item.module, "server")
                     and item.module.__name__.rsplit(".", 1)[-1] not in SHARED_SERVER_MODULES})
    if strays:
        raise pytest.UsageError(f"{', '.join(strays)} use the shared API server of tests/api/conftest.py: "
                                "list them in SHARED_SERVER_MODULES (tests/suite.py runs those together)")


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
