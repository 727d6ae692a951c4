"""Schemathesis over every operation of /openapi.json, once as an admin and once as a `user` account.

Checks: no server error (5xx; 502 only where documented: a job that failed on the host), no
undocumented status code, responses conform to their schema and content type. The run is bounded
(phases examples, coverage, fuzzing with few examples, a short stateful phase), deterministic
(fixed seed, derandomized Hypothesis, no example database, no response cache) and serial (one
worker: the machine has two cores, and the API's jobs need one).

The API under test is its own process whose only host is unreachable (tests/api/unreachable.py):
every job fails within a second, so no PostgreSQL instance is ever created, whatever the
generated bodies ask, while every API code path still runs. The agent facade is enabled
(PGDBAAS_AGENT_INSTANCE): its boot provision fails, so it serves an instance in ERROR: status 200,
start 502, stop/restart/configure 409 for the admin, 404 for an account that does not own it.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.api.harness import cluster_body, wait_request
from tests.api.unreachable import unreachable  # noqa: F401 (the module's server)

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
USER = ("tschema-user", "Tschema-User-Pass-1")
RUN_TIMEOUT = 600  # a guard only; a run takes well under a minute here


def _config(path: Path, account: tuple[str, str], cluster_id: str, request_id: str, project_id: int) -> Path:
    name, password = account
    path.write_text(f"""\
seed = 20261202
workers = 1
request-timeout = 120

[auth.basic]
username = "{name}"
password = "{password}"

[cache]
enabled = false

[generation]
max-examples = 10
deterministic = true
database = "none"

[phases.stateful]
max-steps = 10

[checks]
enabled = false
# 502 is the documented answer of a synchronous call whose job failed on the (unreachable) host;
# status_code_conformance still fails it wherever it is not documented.
not_a_server_error = {{ enabled = true, expected-statuses = ["2xx", "3xx", "4xx", "502"] }}
status_code_conformance.enabled = true
content_type_conformance.enabled = true
response_schema_conformance.enabled = true

# Ids that exist (the account's own cluster in ERROR, its create request, a project), so that
# these operations get past 404 to their state checks, locks and jobs.
[[operations]]
include-path-regex = "\\\\{{(cluster_id|instance_id)\\\\}}"
parameters = {{ cluster_id = "{cluster_id}", instance_id = "{cluster_id}" }}

[[operations]]
include-path-regex = "\\\\{{request_id\\\\}}"
parameters = {{ request_id = "{request_id}" }}

[[operations]]
include-path-regex = "\\\\{{project_id\\\\}}"
parameters = {{ project_id = {project_id} }}
""")
    return path


def _own_objects(client: httpx.Client, role: str) -> tuple[str, str, int]:
    """A cluster of this account (its provision fails: ERROR), that request, and a project."""
    response = client.post("/v1/clusters", json=cluster_body(f"tschema-{role}"))
    assert response.status_code == 202, response.text
    created = response.json()
    assert wait_request(client, created["request_id"])["state"] == "ERROR"
    project = client.post("/api/project/", json={"name": f"tschema-{role}"})
    assert project.status_code == 201, project.text
    return created["resource"]["id"], created["request_id"], project.json()["id"]


@pytest.mark.timeout(RUN_TIMEOUT + 120)
@pytest.mark.parametrize("role", ["admin", "user"])
def test_schemathesis_finds_nothing(unreachable, tmp_path, role):
    if role == "user":
        with unreachable.client() as admin:
            response = admin.post("/v1/accounts", json={"name": USER[0], "password": USER[1], "role": "user"})
            assert response.status_code == 201, response.text
    account = unreachable.admin if role == "admin" else USER
    with unreachable.client(auth=account) as client:
        cluster_id, request_id, project_id = _own_objects(client, role)
    config = _config(tmp_path / "schemathesis.toml", account, cluster_id, request_id, project_id)
    output = tmp_path / "schemathesis.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PGDBAAS_", "SCHEMATHESIS_", "HYPOTHESIS_"))}
    started = time.monotonic()
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [str(SCHEMATHESIS), "--config-file", str(config), "--no-color", "run", f"{unreachable.url}/openapi.json"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            code = process.wait(timeout=RUN_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise AssertionError(f"schemathesis ran over {RUN_TIMEOUT} s: {output.read_text()[-4000:]}")
    elapsed = time.monotonic() - started
    text = output.read_text()
    print(f"schemathesis as {role}: {elapsed:.1f} s, exit {code}\n" + text[text.find("SUMMARY"):])
    assert "Selected: " in text and "Tested: " in text, text[-4000:]
    tested = text.split("Tested: ", 1)[1].split()[0]
    assert code == 0, f"schemathesis as {role} failed (exit {code}):\n{_failures(text)}"
    # Every operation of the document ran, none was skipped for an error of the schema.
    selected = text.split("Selected: ", 1)[1].split()[0]
    assert tested == selected.split("/")[0] == selected.split("/")[1], text[text.find("SUMMARY"):]


def _failures(text: str) -> str:
    """The report's FAILURES / ERRORS sections and summary, bounded for an assertion message."""
    start = min((i for i in (text.find("==== ERRORS"), text.find("==== FAILURES")) if i >= 0), default=0)
    end = text.find("==== WARNINGS")
    report = text[start:end if end > start else None] + "\n" + text[text.find("SUMMARY"):]
    return report[:20000]
