"""Authentication and authorization: 401 without credentials, 403 for users on admin endpoints,
users see only their own clusters."""
from __future__ import annotations

import re

import httpx
import pytest


def test_every_route_but_health_needs_credentials(server):
    with httpx.Client(base_url=server.url) as anonymous:
        assert anonymous.get("/openapi.json").status_code == 401
        assert anonymous.get("/docs").status_code == 401
        spec = anonymous.get("/openapi.json", auth=server.admin).json()
        assert "Swagger" in anonymous.get("/docs", auth=server.admin).text
        assert anonymous.get("/health").status_code == 200
        checked = 0
        for path, item in spec["paths"].items():
            if path == "/health":
                continue
            concrete = re.sub(r"\{[^}]+\}", "x", path)
            for method in item:
                for headers in ({}, {"Authorization": "Basic YWRtaW46d3Jvbmc="},  # admin:wrong
                                {"Authorization": "Bearer pgd_nope"}):
                    response = anonymous.request(method.upper(), concrete, headers=headers)
                    assert response.status_code == 401, (method, path, headers)
                checked += 1
    assert checked >= 20


@pytest.fixture(scope="module")
def user(server):
    with server.client() as admin:
        response = admin.post("/v1/accounts", json={"name": "alice", "password": "alice-pass-1", "role": "user"})
        assert response.status_code == 201, response.text
        account = response.json()
        yield ("alice", "alice-pass-1")
        admin.delete(f"/v1/accounts/{account['id']}")


def test_admin_endpoints_answer_403_to_a_user(server, user):
    with server.client(auth=user) as client:
        assert client.get("/v1/accounts").status_code == 403
        assert client.post("/v1/accounts", json={"name": "mallory", "password": "x" * 10}).status_code == 403
        assert client.delete("/v1/accounts/whatever").status_code == 403


def test_token_minted_by_an_account_authenticates_it(server, user):
    with server.client(auth=user) as client:
        token = client.post("/v1/tokens").json()["token"]
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as bearer:
        assert bearer.get("/v1/clusters").status_code == 200
        assert bearer.get("/v1/accounts").status_code == 403


def test_a_user_sees_and_acts_only_on_its_own_clusters(server, user, admin):
    admins = admin.get("/v1/clusters", params={"size": 1000}).json()["contents"]
    assert admins, "the shared server's agent cluster belongs to the admin"
    foreign = admins[0]["id"]
    with server.client(auth=user) as client:
        assert all(c["id"] != foreign for c in client.get("/v1/clusters", params={"size": 1000}).json()["contents"])
        assert client.get(f"/v1/clusters/{foreign}").status_code == 404
        assert client.post(f"/v1/clusters/{foreign}/stop").status_code == 404
        assert client.delete(f"/v1/clusters/{foreign}").status_code == 404
        foreign_requests = admin.get("/v1/requests", params={"cluster_id": foreign}).json()["contents"]
        assert client.get(f"/v1/requests/{foreign_requests[0]['request_id']}").status_code == 404


def test_account_management(admin):
    response = admin.post("/v1/accounts", json={"name": "bob", "password": "bob-pass-12", "role": "admin"})
    assert response.status_code == 201
    assert admin.post("/v1/accounts", json={"name": "bob", "password": "bob-pass-12"}).status_code == 409
    assert admin.post("/v1/accounts", json={"name": "eve", "password": "x", "role": "user"}).status_code == 400
    assert admin.post("/v1/accounts", json={"name": "eve", "password": "x" * 9, "role": "root"}).status_code == 400
    names = [a["name"] for a in admin.get("/v1/accounts").json()["contents"]]
    assert "bob" in names and all("password" not in a for a in admin.get("/v1/accounts").json()["contents"])
    assert admin.delete(f"/v1/accounts/{response.json()['id']}").status_code == 204
    assert admin.delete(f"/v1/accounts/{response.json()['id']}").status_code == 404
