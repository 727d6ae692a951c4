"""The native /v1 API end to end: real app, executor, ansible-runner jobs and PostgreSQL."""
from __future__ import annotations

import concurrent.futures
import json

import psycopg
import pytest

from tests.api.harness import cluster_body, wait_request


def login(port: int, user: str, password: str, dbname: str):
    return psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname=dbname,
                           connect_timeout=5)


def create(admin, created, name: str, **kwargs) -> tuple[str, dict]:
    response = admin.post("/v1/clusters", json=cluster_body(name, **kwargs))
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["request_id"].startswith("req-")
    created.append((body["resource"]["id"], name))
    return body["resource"]["id"], wait_request(admin, body["request_id"])


@pytest.fixture(scope="module")
def life(server):
    """One cluster shared by the lifecycle tests of this module: its id, its create request, and
    the cluster as the API showed it right after that request ended."""
    with server.client() as admin:
        names: list = []
        cluster_id, request = create(admin, names, "tapi-life")
        assert request["state"] == "SUCCESS", request
        yield {"id": cluster_id, "create": request, "after_create": admin.get(f"/v1/clusters/{cluster_id}").json()}
        wait_request(admin, admin.delete(f"/v1/clusters/{cluster_id}").json()["request_id"])


@pytest.fixture
def running(admin, life):
    """The shared cluster, RUNNING and idle, whatever an earlier test left it in (stopped, or a
    request still under way)."""
    cluster_id = life["id"]
    cluster = admin.get(f"/v1/clusters/{cluster_id}").json()
    if cluster["active_request_id"]:
        wait_request(admin, cluster["active_request_id"])
        cluster = admin.get(f"/v1/clusters/{cluster_id}").json()
    if cluster["service_state"] == "STOPPED":
        started = wait_request(admin, admin.post(f"/v1/clusters/{cluster_id}/start").json()["request_id"])
        assert started["state"] == "SUCCESS", started
        cluster = admin.get(f"/v1/clusters/{cluster_id}").json()
    assert cluster["service_state"] == "RUNNING" and cluster["active_request_id"] is None, cluster
    return cluster_id


def port_of(admin, cluster_id: str) -> int:
    return admin.get(f"/v1/clusters/{cluster_id}").json()["instance_groups"][0]["instances"][0]["port"]


def test_create_then_initial_user_logs_into_initial_database(admin, life, running):
    cluster = life["after_create"]  # the state the create left, not one a later test set
    assert cluster["service_state"] == "RUNNING"
    assert cluster["init_config_option"]["database_name"] == "appdb"
    instance = cluster["instance_groups"][0]["instances"][0]
    assert instance["service_state"] == "RUNNING" and instance["role_type"] == "ACTIVE"
    assert 55600 <= instance["port"] <= 55689
    assert "appdb" in cluster["databases"]
    with login(instance["port"], "appuser", "App-Secret-Pw-1", "appdb") as conn:
        assert conn.execute("select current_user, current_database()").fetchone() == ("appuser", "appdb")
        owner = conn.execute("select pg_get_userbyid(datdba) from pg_database where datname = 'appdb'").fetchone()
        assert owner == ("appuser",)
    with pytest.raises(psycopg.OperationalError):
        login(instance["port"], "appuser", "wrong-password", "appdb")


def test_request_reports_operation_progress_and_times(admin, life):
    rows = admin.get("/v1/requests", params={"cluster_id": life["id"], "state": "SUCCESS", "size": 1000}).json()
    create_request = [r for r in rows["contents"] if r["operation"] == "create"]
    assert [r["request_id"] for r in create_request] == [life["create"]["request_id"]]
    create_request = create_request[0]
    assert create_request["cluster_id"] == life["id"]
    assert create_request["started_at"] and create_request["finished_at"]
    assert create_request["progress"]["tasks_done"] > 0
    events = admin.get(f"/v1/requests/{create_request['request_id']}/events").json()
    assert any(e["event"] == "playbook_on_task_start" for e in events)


def test_stop_start_restart_seen_in_api_and_by_connecting(admin, running):
    port = port_of(admin, running)
    with login(port, "appuser", "App-Secret-Pw-1", "appdb") as conn:
        started_at = conn.execute("select pg_postmaster_start_time()").fetchone()[0]

    stop = wait_request(admin, admin.post(f"/v1/clusters/{running}/stop").json()["request_id"])
    assert stop["state"] == "SUCCESS", stop
    assert admin.get(f"/v1/clusters/{running}").json()["service_state"] == "STOPPED"
    with pytest.raises(psycopg.OperationalError):
        login(port, "appuser", "App-Secret-Pw-1", "appdb")

    start = wait_request(admin, admin.post(f"/v1/clusters/{running}/start").json()["request_id"])
    assert start["state"] == "SUCCESS", start
    assert admin.get(f"/v1/clusters/{running}").json()["service_state"] == "RUNNING"
    with login(port, "appuser", "App-Secret-Pw-1", "appdb") as conn:
        after_start = conn.execute("select pg_postmaster_start_time()").fetchone()[0]
    assert after_start > started_at

    restart = wait_request(admin, admin.post(f"/v1/clusters/{running}/restart").json()["request_id"])
    assert restart["state"] == "SUCCESS", restart
    assert admin.get(f"/v1/clusters/{running}").json()["service_state"] == "RUNNING"
    with login(port, "appuser", "App-Secret-Pw-1", "appdb") as conn:
        assert conn.execute("select pg_postmaster_start_time()").fetchone()[0] > after_start


def test_invalid_transitions_answer_409_and_change_nothing(admin, running):
    response = admin.post(f"/v1/clusters/{running}/start")
    assert response.status_code == 409
    assert "RUNNING" in response.json()["detail"]
    assert admin.get(f"/v1/clusters/{running}").json()["service_state"] == "RUNNING"


def test_concurrent_conflicting_calls_run_exactly_one(server, running):
    def restart(_):
        with server.client() as client:
            return client.post(f"/v1/clusters/{running}/restart")

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        responses = list(pool.map(restart, range(6)))
    accepted = [r for r in responses if r.status_code == 202]
    refused = [r for r in responses if r.status_code == 409]
    assert len(accepted) == 1 and len(refused) == 5, [r.status_code for r in responses]
    winner = accepted[0].json()["request_id"]
    assert all(r.json().get("request_id") == winner or "RESTARTING" in r.json()["detail"] for r in refused)
    with server.client() as client:
        assert wait_request(client, winner)["state"] == "SUCCESS"
        restarts = client.get("/v1/requests", params={"cluster_id": running}).json()["contents"]
        assert [r["request_id"] for r in restarts if r["state"] in ("QUEUED", "IN_PROGRESS")] == []


def test_unknown_ids_answer_404(admin):
    assert admin.get("/v1/clusters/0123456789abcdef0123456789abcdef").status_code == 404
    assert admin.post("/v1/clusters/nope/restart").status_code == 404
    assert admin.delete("/v1/clusters/nope").status_code == 404
    assert admin.get("/v1/requests/req-nope").status_code == 404
    assert admin.post("/v1/requests/req-nope/cancel").status_code == 404


@pytest.mark.parametrize("mutate, field", [
    (lambda b: b.pop("name"), "name"),
    (lambda b: b["init_config_option"].pop("database_user_password"), "database_user_password"),
    (lambda b: b["init_config_option"].update(database_user_password="short"), "database_user_password"),
    (lambda b: b["init_config_option"].update(database_port=80), "database_port"),
    (lambda b: b["init_config_option"].update(database_port="abc"), "database_port"),
])
def test_bad_bodies_answer_400_naming_the_field(admin, mutate, field):
    body = cluster_body("tapi-bad")
    mutate(body)
    response = admin.post("/v1/clusters", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"].split(".")[-1] == field and response.json()["detail"]


@pytest.mark.parametrize("mutate, field", [
    (lambda b: b.update(name="Bad Name!"), "name"),
    (lambda b: b.update(dbaas_engine_version_id="postgresql-9"), "dbaas_engine_version_id"),
    (lambda b: b["init_config_option"].update(database_name='x"; drop table t; --'), "database_name"),
    (lambda b: b["init_config_option"].update(database_user_name="postgres"), "database_user_name"),
    (lambda b: b["init_config_option"].update(database_encoding="KLINGON"), "database_encoding"),
    (lambda b: b["instance_groups"][0].update(server_type_name="huge"), "server_type_name"),
    (lambda b: b.update(allowable_ip_addresses=["10.0.0.300/8"]), "allowable_ip_addresses"),
    (lambda b: b.update(timezone="Mars/Olympus"), "timezone"),
])
def test_rule_violations_answer_400_naming_the_field_and_create_nothing(admin, mutate, field):
    before = admin.get("/v1/clusters", params={"size": 1000}).json()["count"]
    body = cluster_body("tapi-bad")
    mutate(body)
    response = admin.post("/v1/clusters", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["field"] == field
    assert admin.get("/v1/clusters", params={"size": 1000}).json()["count"] == before


def test_list_filters_pages_and_sorts(admin, running):
    page = admin.get("/v1/clusters", params={"name": "tapi-life", "size": 5}).json()
    assert page["count"] == 1 and page["size"] == 5 and page["page"] == 0 and page["sort"] == ["name:asc"]
    assert page["contents"][0]["id"] == running and page["contents"][0]["database_name"] == "appdb"
    assert admin.get("/v1/clusters", params={"database_name": "appdb"}).json()["count"] >= 1
    assert admin.get("/v1/clusters", params={"service_state": "TERMINATED", "name": "tapi-life"}).json()["count"] == 0
    assert admin.get("/v1/clusters", params={"sort": "password:asc"}).status_code == 400


def test_engine_versions_list_what_this_machine_installs(admin):
    versions = admin.get("/v1/engine-versions").json()["contents"]
    debian = [v for v in versions if v["major_version"] == "15"]
    assert debian and debian[0]["software_version"].startswith("15.") and debian[0]["install_source"] == "apt"


def test_terminate_removes_instance_and_frees_the_name(admin, created):
    cluster_id, request = create(admin, created, "tapi-term")
    assert request["state"] == "SUCCESS"
    port = port_of(admin, cluster_id)
    done = wait_request(admin, admin.delete(f"/v1/clusters/{cluster_id}").json()["request_id"])
    assert done["state"] == "SUCCESS", done
    cluster = admin.get(f"/v1/clusters/{cluster_id}").json()
    assert cluster["service_state"] == "TERMINATED" and cluster["instance_groups"][0]["instances"] == []
    with pytest.raises(psycopg.OperationalError):
        login(port, "appuser", "App-Secret-Pw-1", "appdb")
    assert admin.post(f"/v1/clusters/{cluster_id}/start").status_code == 409


def test_events_stream_live_while_the_job_runs(admin, running):
    request_id = admin.post(f"/v1/clusters/{running}/restart").json()["request_id"]
    events, end, live = [], None, []
    with admin.stream("GET", f"/v1/requests/{request_id}/events", headers={"Accept": "text/event-stream"}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        # The stream has read what it replays before its headers: any event after these came live.
        replayed = max((e["id"] for e in admin.get(f"/v1/requests/{request_id}/events").json()), default=0)
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                if kind == "end":
                    end = json.loads(line.removeprefix("data: "))
                    break
                event = json.loads(line.removeprefix("data: "))
                events.append(event)
                if not live and event["id"] > replayed and event["event"] == "playbook_on_task_start":
                    # The request as a client sees it the moment this task's start reached the stream.
                    live.append((event, admin.get(f"/v1/requests/{request_id}").json()))
    assert end == {"state": "SUCCESS"}
    assert live, f"no task started after the stream opened: {events}"
    [(event, request)] = live
    assert request["state"] == "IN_PROGRESS", f"event {event} arrived only once the job was over: {request}"
    assert [e for e in events if e["id"] > event["id"] and e["event"] == "playbook_on_task_start"], \
        "tasks still ran after the live event"
    kinds = {e["event"] for e in events}
    assert {"playbook_on_task_start", "runner_on_ok"} <= kinds
    ids = [e["id"] for e in events]
    assert ids == sorted(ids) and len(ids) == len(set(ids))


def test_terminate_forgets_the_clusters_databases_and_credentials(admin, created):
    cluster_id, request = create(admin, created, "tapi-forget")
    assert request["state"] == "SUCCESS"
    endpoint_tail = f":{port_of(admin, cluster_id)}/appdb"

    def records():
        databases = admin.get("/api/database/", params={"page_size": 1000}).json()["database"]
        return [d for d in databases if d["endpoint"].endswith(endpoint_tail)]

    assert len(records()) == 1 and len(records()[0]["credentials"]) == 1
    wait_request(admin, admin.delete(f"/v1/clusters/{cluster_id}").json()["request_id"])
    assert records() == []
    assert admin.get(f"/v1/clusters/{cluster_id}/users").json() == []


def test_concurrent_creates_get_distinct_ports(server, created):
    names = [f"tapi-par{i}" for i in range(3)]

    def post(name):
        with server.client() as client:
            return client.post("/v1/clusters", json=cluster_body(name))

    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
        responses = list(pool.map(post, names))
    assert [r.status_code for r in responses] == [202] * len(names), [r.text for r in responses]
    with server.client() as admin:
        for name, response in zip(names, responses):
            created.append((response.json()["resource"]["id"], name))
        for response in responses:
            assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"
        ports = {port_of(admin, r.json()["resource"]["id"]) for r in responses}
    assert len(ports) == len(names)
