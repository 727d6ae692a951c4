"""Validation at the HTTP edge: bounded integers (no 500 past 2^63-1), one status (400) and one
body per dialect for every validation failure, no input echoed (passwords!), and an OpenAPI
document that declares the errors each route answers."""
from __future__ import annotations

import json

import pytest

from tests.api.harness import cluster_body
from tests.api.unreachable import unreachable  # noqa: F401 (the module's server)

HUGE = 99999999999999999999  # > 2^63-1: SQLite's OverflowError before the fix
INT64_MAX = 2**63 - 1
DBAAS_BODY = {"name": "tschema huge", "plan": "/api/plan/1/", "environment": "/api/environment/1/"}


@pytest.fixture
def admin(unreachable):
    with unreachable.client() as client:
        yield client


HUGE_FORMS = [
    ("GET", f"/api/database/{HUGE}/", None),
    ("DELETE", f"/api/database/{HUGE}/", None),
    ("GET", f"/api/credential/{HUGE}/", None),
    ("DELETE", f"/api/credential/{HUGE}/", None),
    ("POST", f"/api/credential/{HUGE}/reset_password/", None),
    ("GET", f"/api/plan/{HUGE}/", None),
    ("GET", f"/api/environment/{HUGE}/", None),
    ("GET", f"/api/project/{HUGE}/", None),
    ("DELETE", f"/api/project/{HUGE}/", None),
    ("GET", f"/api/database/?page={HUGE}", None),
    ("GET", f"/api/database/?page={INT64_MAX}", None),  # fits, but the offset would not
    ("GET", f"/api/credential/?page={HUGE}", None),
    ("GET", f"/v1/requests?page={HUGE}", None),
    ("GET", f"/v1/requests?page={INT64_MAX // 10}&size=1000", None),
    ("GET", f"/v1/clusters?page={HUGE}", None),
    ("GET", f"/v1/clusters?page={INT64_MAX // 10}&size=1000", None),
    ("POST", "/api/database/", {**DBAAS_BODY, "plan": f"/api/plan/{HUGE}/"}),
    ("POST", "/api/database/", {**DBAAS_BODY, "plan": HUGE}),
    ("POST", "/api/database/", {**DBAAS_BODY, "plan": "/api/plan/" + "9" * 5000 + "/"}),
    ("POST", "/api/database/", {**DBAAS_BODY, "environment": f"/api/environment/{HUGE}/"}),
    ("POST", "/api/database/", {**DBAAS_BODY, "environment": HUGE}),
    ("POST", "/api/database/", {**DBAAS_BODY, "project": f"/api/project/{HUGE}/"}),
    ("POST", "/api/database/", {**DBAAS_BODY, "project": HUGE}),
    ("POST", "/api/credential/", {"user": "u_huge", "database": f"/api/database/{HUGE}/"}),
    ("POST", "/api/credential/", {"user": "u_huge", "database": HUGE}),
    ("POST", "/itcare/databases/postgresql", {"name": "tschemahuge", "admPassword": "Itc-Passw0rd-12!",
                                              "nodeSizing": "1cpu1gb", "diskSize": 40, "postgreVersion": "15",
                                              "serviceId": HUGE}),
]


@pytest.mark.parametrize("method, path, body", HUGE_FORMS, ids=[f"{m} {p[:60]} {json.dumps(b)[:60]}"
                                                                for m, p, b in HUGE_FORMS])
def test_integers_past_int64_answer_400_or_404(admin, method, path, body):
    response = admin.request(method, path, json=body)
    assert response.status_code in (400, 404), response.text
    if response.status_code == 400:
        assert response.json().get("field") or response.json().get("error"), response.text


def test_a_json_number_too_long_to_parse_is_a_400(admin):
    body = '{"name": "tschema", "plan": ' + "9" * 5000 + ', "environment": 1}'
    response = admin.post("/api/database/", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert "detail" in response.json()


SECRET = "short"  # rejected: too short


@pytest.mark.parametrize("path, body", [
    ("/v1/accounts", {"name": "tschema-eve", "password": SECRET, "role": "user"}),
    ("/v1/clusters", {**cluster_body("tschema-echo"),
                      "init_config_option": {**cluster_body("x")["init_config_option"],
                                             "database_user_password": SECRET}}),
])
def test_a_rejected_password_is_not_echoed(admin, path, body):
    response = admin.post(path, json=body)
    assert response.status_code == 400, response.text
    error = response.json()
    assert SECRET not in response.text and "input" not in response.text
    assert set(error) <= {"detail", "field", "request_id"} and error["field"].endswith("password")
    assert "at least 8" in error["detail"] and ", not 5" not in error["detail"]  # nor its length


def test_v1_validation_errors_are_400_with_field_and_detail(admin):
    body = cluster_body("tschema-bad")
    body["init_config_option"]["database_port"] = "abc"
    response = admin.post("/v1/clusters", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == "init_config_option.database_port"
    assert "integer" in response.json()["detail"] and "abc" not in response.text

    response = admin.get("/v1/clusters", params={"size": 0})
    assert response.status_code == 400 and response.json()["field"] == "size", response.text
    response = admin.post("/v1/clusters", content=b"{not json", headers={"content-type": "application/json"})
    assert response.status_code == 400 and response.json()["field"], response.text
    response = admin.post("/v1/clusters", json=["a list"])
    assert response.status_code == 400 and response.json()["field"] == "body", response.text


def test_each_dialect_renders_its_own_validation_error(admin):
    itcare = admin.post("/itcare/databases/postgresql", json={"name": "ab", "diskSize": 40})
    assert itcare.status_code == 400, itcare.text
    body = itcare.json()
    assert body["status"] == 400 and body["error"] == "Bad Request" and body["field"] == "name"
    assert {"field": "admPassword", "message": "Field required"} in body["errors"] and "name:" in body["message"]

    agent = admin.post("/service/postgresql/configure", json={"drop_everything": {}})
    assert agent.status_code == 400 and set(agent.json()) == {"error"}, agent.text

    dbaas = admin.post("/api/database/", json={"name": "x"})
    assert dbaas.status_code == 400 and set(dbaas.json()) == {"detail", "field"}, dbaas.text

    # Authentication failures too: the dialect's body, the challenge header kept.
    anonymous = admin.get("/itcare/databases/postgresql/x", auth=("nobody", "wrong-password"))
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "Unauthorized"
    assert "www-authenticate" in anonymous.headers
    assert set(admin.get("/service/postgresql/status", auth=("nobody", "x")).json()) == {"error"}


def test_a_failed_synchronous_job_is_a_502_naming_its_request(admin):
    # The only host is unreachable: the agent instance's start runs and fails there.
    response = admin.post("/service/postgresql/start")
    assert response.status_code == 502 and "error" in response.json(), response.text
    response = admin.post("/api/database/", json=DBAAS_BODY)
    assert response.status_code == 502, response.text
    assert admin.get(f"/v1/requests/{response.json()['request_id']}").json()["state"] == "ERROR"


def test_openapi_declares_the_errors_each_route_answers(admin):
    document = admin.get("/openapi.json").json()
    schemas = document["components"]["schemas"]
    assert "HTTPValidationError" not in schemas and "ValidationError" not in schemas
    models = {"/v1": "ErrorBody", "/api/": "ErrorBody", "/itcare/": "ItcareError", "/service/": "AgentError",
              "/mgmt/": "ErrorBody"}
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            responses = operation["responses"]
            where = f"{method.upper()} {path}"
            assert "422" not in responses, where
            if path == "/health":
                continue
            assert "401" in responses, where
            model = next(name for prefix, name in models.items() if path.startswith(prefix))
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    ref = response["content"]["application/json"]["schema"]["$ref"]
                    assert ref == f"#/components/schemas/{model}", (where, code)
            if operation.get("parameters") or operation.get("requestBody"):
                assert "400" in responses, where
            if "{" in path:
                assert "404" in responses, where
            if method in ("post", "patch", "delete") and not path.startswith("/v1/tokens"):
                assert "409" in responses, where
            if path.startswith(("/v1/accounts", "/mgmt/")):
                assert "403" in responses, where
    # The error bodies are documented models.
    assert set(schemas["ErrorBody"]["properties"]) == {"detail", "field", "request_id"}
    assert {"status", "error", "message", "field", "errors"} <= set(schemas["ItcareError"]["properties"])
