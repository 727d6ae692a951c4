"""Members in every dialect: /v1 Show Cluster lists each one, ITCare counts them and lists them as
nodes (GET .../nodes); the ITCare PATCH body is a union on `operation`, refused with 400 in ITCare's
error shape when it names no supported operation or lacks its options."""
from __future__ import annotations

import re
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.api.harness import drop_instance, wait_request

NAME, PASSWORD = "tmemnodes01", "Tmem-Nodes-2024@"
ITCARE = "/itcare/databases/postgresql"
ITCARE_ERROR_KEYS = {"status", "error", "message", "field", "errors"}
CLOUD_ONLY = {"area", "availabilityZone", "backup", "backupPolicyDetails", "network", "loadbalancers",
              "patchParty", "snapshot", "storageInformation", "region", "replication"}
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def instance(server):
    body = {"name": NAME, "admPassword": PASSWORD, "nodeSizing": "2cpu4gb", "diskSize": 40, "postgreVersion": "15",
            "serviceId": 77}
    with server.client() as admin:
        response = admin.post(ITCARE, json=body)
        assert response.status_code == 202, response.text
        instance_id = response.json()["internalId"]
        try:
            assert wait_request(admin, response.json()["id"])["state"] == "SUCCESS"
            yield instance_id
        finally:
            response = admin.delete(f"{ITCARE}/{instance_id}")
            if response.status_code == 202:
                wait_request(admin, response.json()["id"])
            drop_instance(NAME)


def assert_itcare_error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ITCARE_ERROR_KEYS and body["status"] == status
    return body


def test_v1_show_cluster_lists_each_member_with_role_and_observed_facts(admin, instance):
    cluster = admin.get(f"/v1/clusters/{instance}").json()
    instances = [i for group in cluster["instance_groups"] for i in group["instances"]]
    assert cluster["instance_count"] == len(instances) == 1
    member = instances[0]
    assert member["name"].startswith(f"{NAME}-") and member["host"] and 55600 <= member["port"] <= 55689
    assert member["role"] == "primary" and member["role_type"] == "ACTIVE"
    assert member["service_state"] == "RUNNING" and member["service_ip_address"] == "127.0.0.1"
    assert member["server_version"].startswith("15.") and member["in_recovery"] is False
    assert member["data_directory"]
    listed = admin.get("/v1/clusters", params={"name": NAME}).json()["contents"]
    assert [c["instance_count"] for c in listed] == [1]


def test_itcare_nodes_list_the_members_and_the_instance_counts_them(admin, instance):
    nodes = admin.get(f"{ITCARE}/{instance}/nodes")
    assert nodes.status_code == 200, nodes.text
    nodes = nodes.json()
    body = admin.get(f"{ITCARE}/{instance}").json()
    assert body["nodeCount"] == body["instanceCount"] == len(nodes) == 1
    node = nodes[0]
    member = admin.get(f"/v1/clusters/{instance}").json()["instance_groups"][0]["instances"][0]
    assert (node["name"], node["host"], node["port"]) == (member["name"], member["host"], member["port"])
    assert node["ipAddress"] == "127.0.0.1" and node["role"] == "primary" and node["status"] == "ACTIVE"
    assert (node["cpu"], node["ram"], node["storage"]) == (2, 4, 40) and node["serviceId"] == 77
    assert node["productVersion"] == member["server_version"] and node["technology"] == "PostgreSQL"
    assert not CLOUD_ONLY & set(node)
    # The instance's address is its primary's: the node clients reach.
    assert body["ipAddress"] == node["ipAddress"] and body["url"] == f"postgresql://127.0.0.1:{node['port']}/postgres"
    with psycopg.connect(host=node["ipAddress"], port=node["port"], user="admin", password=PASSWORD,
                         dbname="postgres", connect_timeout=5) as conn:
        assert conn.execute("select pg_is_in_recovery()").fetchone() == (False,)


def test_itcare_nodes_of_an_unknown_instance_or_without_an_account(server, admin):
    body = assert_itcare_error(admin.get(f"{ITCARE}/tmem-nope/nodes"), 404)
    assert body["error"] == "Not Found"
    with server.client(auth=("tmem-nobody", "wrong-password-1")) as stranger:
        assert_itcare_error(stranger.get(f"{ITCARE}/tmem-nope/nodes"), 401)


@pytest.mark.parametrize("patch, field", [
    ({"operation": "explode"}, "operation"),                   # no such operation
    ({"operation": "resize", "options": {"sizing": "2cpu4gb"}}, "operation"),  # the seed's, not here
    ({"options": {}}, "operation"),                            # no operation at all
    ({"operation": "install_extension"}, "options"),           # its options are required
    ({"operation": "install_extension", "options": {"dbname": "postgres"}}, "options.extensions_list"),
    ({"operation": "install_extension", "options": {"extensions_list": [{"name": "hstore"}]}}, "options.dbname"),
    ({"operation": "install_extension", "options": {"dbname": "postgres", "extensions_list": []}},
     "options.extensions_list"),
    ({"operation": "install_extension", "options": {"dbname": "postgres", "extensions_list": [{}]}},
     "options.extensions_list.0.name"),
    ({"operation": "stop", "options": {"force": True}}, "options.force"),  # start and stop take none
])
def test_itcare_patch_bad_body_is_400_in_itcare_shape_naming_the_field(admin, instance, patch, field):
    before = admin.get(f"{ITCARE}/{instance}").json()["lastRequestId"]
    body = assert_itcare_error(admin.patch(f"{ITCARE}/{instance}", json=patch), 400)
    assert body["error"] == "Bad Request" and body["field"] == field, body
    assert [e["field"] for e in body["errors"]] == [field]
    assert field in body["message"]
    if field == "operation":
        assert re.search(r"install_extension, restore, start, stop", body["message"]) or "required" in body["message"]
        assert "explode" not in body["message"] and "resize" not in body["message"]  # never the input
    # Nothing was opened on the instance.
    after = admin.get(f"{ITCARE}/{instance}").json()
    assert after["lastRequestId"] == before and after["status"] == "ACTIVE"


def test_itcare_patch_unknown_operation_names_the_supported_ones(admin, instance):
    body = assert_itcare_error(admin.patch(f"{ITCARE}/{instance}", json={"operation": "explode"}), 400)
    assert body["message"] == ("operation: unknown operation; supported operations: enable_ha, install_extension, "
                               "restore, start, stop, upgrade")


def test_itcare_patch_openapi_is_a_union_on_operation(admin):
    schema = admin.get("/openapi.json").json()
    operation = schema["paths"][f"{ITCARE}/{{instance_id}}"]["patch"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body["discriminator"]["propertyName"] == "operation"
    mapping = body["discriminator"]["mapping"]
    assert set(mapping) == {"start", "stop", "install_extension", "restore", "upgrade", "enable_ha"}
    assert sorted(ref["$ref"] for ref in body["oneOf"]) == sorted(mapping.values())
    components = schema["components"]["schemas"]

    def resolve(ref: str) -> dict:
        return components[ref.rsplit("/", 1)[1]]

    install = resolve(mapping["install_extension"])
    assert install["properties"]["operation"]["const"] == "install_extension"
    assert set(install["required"]) == {"operation", "options"}
    options = resolve(install["properties"]["options"]["$ref"])
    assert set(options["required"]) == {"dbname", "extensions_list"}
    assert resolve(mapping["start"])["required"] == ["operation"]
    restore = resolve(resolve(mapping["restore"])["properties"]["options"]["$ref"])
    assert set(restore["required"]) == {"sourceId", "stop", "timestamp"}
    # The 400 of a bad body is declared with ITCare's error model.
    assert operation["responses"]["400"]["content"]["application/json"]["schema"]["$ref"].endswith("/ItcareError")


def test_itcare_nodes_route_declares_its_answers_with_itcare_errors(admin):
    schema = admin.get("/openapi.json").json()
    nodes = schema["paths"][f"{ITCARE}/{{instance_id}}/nodes"]["get"]
    assert {"200", "401", "404"} <= set(nodes["responses"])
    for code in ("401", "404"):
        assert nodes["responses"][code]["content"]["application/json"]["schema"]["$ref"].endswith("/ItcareError")
    assert nodes["responses"]["200"]["content"]["application/json"]["schema"]["items"]["$ref"].endswith("/Node")


def test_no_router_or_service_takes_the_first_member_for_the_primary():
    offenders = [f"{path.relative_to(REPO)}:{number}"
                 for folder in ("api/routers", "api/services") for path in sorted((REPO / folder).rglob("*.py"))
                 for number, line in enumerate(path.read_text().splitlines(), 1) if "members[0]" in line]
    assert offenders == []
