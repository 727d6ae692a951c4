"""A known password must not appear in artifacts, logs, the events API, request records or the store."""
from __future__ import annotations

import subprocess

from tests.api.harness import cluster_body, wait_request

KNOWN = "Kn0wn-Secret-Zq7x"


def test_known_password_appears_nowhere_after_a_run(server, admin, created):
    body = cluster_body("tapi-secret", password=KNOWN)
    response = admin.post("/v1/clusters", json=body)
    assert response.status_code == 202
    cluster_id = response.json()["resource"]["id"]
    created.append((cluster_id, "tapi-secret"))
    request = wait_request(admin, response.json()["request_id"])
    assert request["state"] == "SUCCESS", request
    # Rotate through the agent-style admin path too, and fail once on purpose (existing user).
    admin_request = admin.post("/v1/clusters", json=body)  # same name: refused before any job
    assert admin_request.status_code == 409 and KNOWN not in admin_request.text

    for rid in [r["request_id"] for r in admin.get("/v1/requests", params={"cluster_id": cluster_id}).json()["contents"]]:
        assert KNOWN not in admin.get(f"/v1/requests/{rid}").text
        assert KNOWN not in admin.get(f"/v1/requests/{rid}/events").text
    assert KNOWN not in admin.get(f"/v1/clusters/{cluster_id}").text

    # Every file the API wrote: SQLite store (and WAL), job directories and artifacts, its log.
    found = subprocess.run(["grep", "-rla", KNOWN, str(server.data_dir)], capture_output=True, text=True)
    assert found.stdout == "", f"password found in: {found.stdout}"
    # No secrets file is left behind.
    assert list((server.data_dir / "jobs" / ".secrets").glob("*")) == []
    # The job really ran and left artifacts to search.
    assert list((server.data_dir / "jobs").glob("*/artifacts/*/status"))
