"""The engine catalog in the store: the start-up seed of what this machine offers, Trove's datastore
management at /mgmt (the seed's bodies replayed, 403 to a regular account on every route), what
GET /v1/engine-versions lists, creates refused on an inactive or unknown version, the default
version a create uses, and all of it across an API restart.

One API process of its own (ports 57600-57649, instances `tcat-*`); one real cluster."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.api.harness import ApiServer, cluster_body, drop_instance, wait_request

PORTS = "57600-57649"
USER = ("tcat-user", "Tcat-User-Pass-1")
CLUSTER = "tcat-default"
ITCARE_BODY = {"name": "tcatitc", "admPassword": "Itc-Passw0rd-12!", "nodeSizing": "1cpu1gb", "diskSize": 40}

# The Trove seed's bodies, as written (its `000` is no JSON number: 0; its Python True: true).
SEED_CREATE_DATASTORE = {"datastore": {"name": "Mysql"}}
SEED_UPDATE_DATASTORE = {"datastore": {"name": "Mysql", "datastore_version": "5.5"}}
SEED_CREATE_VERSION = {"version": {"name": "5.5", "manager": "mysql", "packages": "mysql-server-5.5",
                                   "image_id": 0, "active": True}}
SEED_UPDATE_VERSION = {"version": {"active": False}}


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    server = ApiServer(tmp_path_factory.mktemp("catalog"), port_range=PORTS)
    server.start()
    with server.client() as admin:
        response = admin.post("/v1/accounts", json={"name": USER[0], "password": USER[1], "role": "user"})
        assert response.status_code == 201, response.text
    yield server
    server.stop()
    drop_instance(CLUSTER)


@pytest.fixture
def admin(api):
    with api.client() as client:
        yield client


@pytest.fixture
def user(api):
    with api.client(auth=USER) as client:
        yield client


def seeded(admin) -> dict:
    """The datastore the start-up seed made (whatever an admin renamed it to): it holds postgresql-15."""
    datastores = admin.get("/mgmt/datastores").raise_for_status().json()["datastores"]
    [datastore] = [d for d in datastores if any(v["id"] == "postgresql-15" for v in d["versions"])]
    return datastore


def listed(client, **params) -> dict:
    response = client.get("/v1/engine-versions", params=params)
    assert response.status_code == 200, response.text
    return {v["id"]: v for v in response.json()["contents"]}


def new_version(admin, name: str, **fields) -> dict:
    response = admin.post("/mgmt/datastores/versions", json={"version": {"name": name, "manager": "postgresql",
                                                                         **fields}})
    assert response.status_code == 200, response.text
    return response.json()["version"]


def test_the_seed_offers_debians_postgresql_as_the_default(admin):
    version = listed(admin)["postgresql-15"]
    assert version["install_source"] == "apt" and version["major_version"] == "15"
    assert version["software_version"].startswith("15.") and version["name"] == f"PostgreSQL {version['software_version']}"
    assert version["active"] is True and version["default"] is True and version["end_of_service"] is False
    datastore = seeded(admin)
    assert datastore["default_version"] == "postgresql-15"
    properties = {p["name"]: p["value"] for p in
                  admin.get("/v1/engine-versions/postgresql-15/properties").raise_for_status().json()["contents"]}
    assert properties["origin"] == "discovered" and properties["packages"] == "postgresql-15"
    assert properties["manager"] == "postgresql" and properties["datastore_id"] == datastore["id"]
    assert admin.get("/v1/engine-versions/postgresql-99/properties").status_code == 404


def test_the_trove_seeds_bodies_replayed(admin):
    # Create datastore: 200 {"datastore": {"id", "name", "versions": []}}
    response = admin.post("/mgmt/datastores", json=SEED_CREATE_DATASTORE)
    assert response.status_code == 200, response.text
    datastore = response.json()["datastore"]
    assert {"id", "name", "versions"} <= set(datastore) and datastore["name"] == "Mysql" and datastore["versions"] == []

    # Create version, verbatim: a MySQL 5.5 is nothing this installation can run. The field says why.
    before = admin.get("/mgmt/datastores").json()
    response = admin.post("/mgmt/datastores/versions", json=SEED_CREATE_VERSION)
    assert response.status_code == 400 and response.json()["field"] == "version.manager", response.text
    assert admin.get("/mgmt/datastores").json() == before
    # ... and as a PostgreSQL one, into the new datastore: 200 in the seed's shape.
    body = {"version": {**SEED_CREATE_VERSION["version"], "name": "16.14", "manager": "postgresql",
                        "packages": "postgresql-16", "datastore": datastore["id"]}}
    response = admin.post("/mgmt/datastores/versions", json=body)
    assert response.status_code == 200, response.text
    version = response.json()["version"]
    assert {"id", "name", "manager", "packages", "image_id", "active"} <= set(version)
    assert (version["name"], version["manager"], version["packages"], version["image_id"], version["active"]) == \
        ("16.14", "postgresql", "postgresql-16", "0", True)

    # Update datastore (name, default version by name): the seed's `datastore_version` list with links.
    response = admin.patch(f"/mgmt/datastores/{datastore['id']}",
                           json={"datastore": {**SEED_UPDATE_DATASTORE["datastore"], "datastore_version": "16.14"}})
    assert response.status_code == 200, response.text
    updated = response.json()["datastore"]
    assert (updated["id"], updated["name"], updated["default_version"]) == (datastore["id"], "Mysql", version["id"])
    [item] = updated["datastore_version"]
    assert {"name", "links", "image", "active", "packages", "id"} <= set(item)
    assert (item["id"], item["name"], item["image"], item["active"], item["packages"]) == \
        (version["id"], "16.14", "0", True, "postgresql-16")
    assert [link["rel"] for link in item["links"]] == ["self", "bookmark"]
    assert admin.get(item["links"][1]["href"]).status_code == 200
    # The seed's own default, 5.5, is no version of this datastore.
    response = admin.patch(f"/mgmt/datastores/{datastore['id']}", json=SEED_UPDATE_DATASTORE)
    assert response.status_code == 404 and response.json()["field"] == "datastore.datastore_version", response.text

    # Update version, both routes, the seed's body: 200 with the version, inactive.
    response = admin.patch(f"/mgmt/datastores/{datastore['id']}/{version['id']}", json=SEED_UPDATE_VERSION)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == {**version, "active": False}
    response = admin.patch(f"/mgmt/datastores/versions/{version['id']}", json={"version": {"active": True}})
    assert response.status_code == 200 and response.json()["version"]["active"] is True, response.text
    response = admin.patch(f"/mgmt/datastores/versions/{version['id']}", json=SEED_UPDATE_VERSION)
    assert response.status_code == 200 and response.json()["version"]["active"] is False, response.text
    # The datastore-scoped route takes the version's name too, and refuses another datastore's version.
    response = admin.patch(f"/mgmt/datastores/{datastore['id']}/16.14", json={"version": {"image_id": "img-2"}})
    assert response.status_code == 200 and response.json()["version"]["image_id"] == "img-2", response.text
    response = admin.patch(f"/mgmt/datastores/{seeded(admin)['id']}/{version['id']}", json=SEED_UPDATE_VERSION)
    assert response.status_code == 404 and response.json()["field"] == "version_id", response.text


def test_a_regular_account_gets_403_on_every_mgmt_route(admin, user):
    datastore = seeded(admin)
    routes = {
        ("get", "/mgmt/datastores"): None,
        ("post", "/mgmt/datastores"): {"datastore": {"name": "Tcat user store"}},
        ("get", "/mgmt/datastores/{datastore_id}"): None,
        ("patch", "/mgmt/datastores/{datastore_id}"): {"datastore": {"name": "Tcat renamed by a user"}},
        ("post", "/mgmt/datastores/versions"): {"version": {"name": "15.3", "manager": "postgresql"}},
        ("patch", "/mgmt/datastores/versions/{version_id}"): SEED_UPDATE_VERSION,
        ("patch", "/mgmt/datastores/{datastore_id}/{version_id}"): SEED_UPDATE_VERSION,
    }
    # Every /mgmt route of the OpenAPI document is here.
    document = admin.get("/openapi.json").json()
    assert {(method, path) for path, operations in document["paths"].items() if path.startswith("/mgmt/")
            for method in operations} == set(routes)
    before = admin.get("/mgmt/datastores").json()
    for (method, path), body in routes.items():
        url = path.format(datastore_id=datastore["id"], version_id="postgresql-15")
        for sent in ([body, {}, {"junk": [1]}] if body is not None else [None]):
            response = user.request(method, url, json=sent)
            assert response.status_code == 403, (method, url, sent, response.text)
            assert response.json()["detail"]
        assert user.request(method, path.format(datastore_id="nope", version_id="nope"), json=body).status_code == 403
    for body in (SEED_CREATE_DATASTORE, SEED_CREATE_VERSION):
        assert user.post("/mgmt/datastores" + ("/versions" if "version" in body else ""), json=body).status_code == 403
    assert admin.get("/mgmt/datastores").json() == before
    # A regular account reads the catalog as everyone does.
    assert "postgresql-15" in listed(user)


def test_a_deactivated_version_is_not_listed_and_takes_no_cluster(admin, user):
    version = new_version(admin, "15.1", image_id="tcat-image")  # no datastore: the seeded one
    assert version["packages"] == "postgresql-15" and version["datastore"] == seeded(admin)["id"]
    assert listed(user)[version["id"]]["active"] is True

    response = admin.patch(f"/mgmt/datastores/versions/{version['id']}", json={"version": {"active": False}})
    assert response.status_code == 200, response.text
    assert version["id"] not in listed(user) and version["id"] not in listed(user, eos_included="true")
    properties = {p["name"]: p["value"] for p in user.get(f"/v1/engine-versions/{version['id']}/properties").json()
                  ["contents"]}
    assert properties["active"] == "false" and properties["image_id"] == "tcat-image"

    clusters_before = admin.get("/v1/clusters").json()["count"]
    body = {**cluster_body("tcat-inactive"), "dbaas_engine_version_id": version["id"]}
    for client in (admin, user):
        response = client.post("/v1/clusters", json=body)
        assert response.status_code == 400, response.text
        assert response.json()["field"] == "dbaas_engine_version_id" and version["id"] in response.json()["detail"]
        assert "not active" in response.json()["detail"]
    response = user.post("/itcare/databases/postgresql", json={**ITCARE_BODY, "postgreVersion": version["id"]})
    assert response.status_code == 400 and response.json()["field"] == "postgreVersion", response.text
    assert version["id"] in response.json()["message"]
    for unknown in ("postgresql-9", "15.99"):
        response = user.post("/v1/clusters", json={**body, "dbaas_engine_version_id": unknown})
        assert response.status_code == 400 and response.json()["field"] == "dbaas_engine_version_id", response.text
        assert f"unknown engine version '{unknown}'" in response.json()["detail"]
    assert admin.get("/v1/clusters").json()["count"] == clusters_before

    # At its end of service it is listed again, but only when asked (eos_included), still inactive.
    response = admin.patch(f"/mgmt/datastores/versions/{version['id']}", json={"version": {"end_of_service": True}})
    assert response.status_code == 200, response.text
    assert version["id"] not in listed(user)
    shown = listed(user, eos_included="true")[version["id"]]
    assert shown["end_of_service"] is True and shown["active"] is False
    assert listed(user, id=version["id"], eos_included="true").keys() == {version["id"]}
    assert user.post("/v1/clusters", json=body).status_code == 400
    # An active version at its end of service: listed with eos_included only.
    eos = new_version(admin, "15.4", end_of_service=True)
    assert eos["id"] not in listed(user) and listed(user, eos_included="true")[eos["id"]]["active"] is True


BAD = [
    ("post", "/mgmt/datastores", {"datastore": {"name": "Bad/Name"}}, 400, "datastore.name"),
    ("post", "/mgmt/datastores", {"datastore": {"name": " lead"}}, 400, "datastore.name"),
    ("post", "/mgmt/datastores", {"datastore": {"name": "versions"}}, 400, "datastore.name"),
    ("post", "/mgmt/datastores", {"datastore": {}}, 400, "datastore.name"),
    ("post", "/mgmt/datastores", {"name": "Flat"}, 400, "datastore"),
    ("post", "/mgmt/datastores", {"datastore": {"name": "postgresql"}}, 409, "datastore.name"),  # the seeded one
    ("post", "/mgmt/datastores/versions", {"version": {"name": "16.14; rm -rf /", "manager": "postgresql"}}, 400,
     "version.name"),
    ("post", "/mgmt/datastores/versions", {"version": {"name": "9.6", "manager": "postgresql"}}, 400, "version.name"),
    ("post", "/mgmt/datastores/versions", {"version": {"name": "16.14"}}, 400, "version.manager"),
    ("post", "/mgmt/datastores/versions", {"version": {"name": "16.14", "manager": "postgresql",
                                                       "packages": "postgresql-16; curl evil"}}, 400,
     "version.packages"),
    ("post", "/mgmt/datastores/versions", {"version": {"name": "16.14", "manager": "postgresql",
                                                       "binaries": "relative/pginstall"}}, 400, "version.binaries"),
    ("post", "/mgmt/datastores/versions", {"version": {"name": "16.14", "manager": "postgresql",
                                                       "binaries": "/opt/../etc"}}, 400, "version.binaries"),
    ("post", "/mgmt/datastores/versions", {"version": {"name": "16.14", "manager": "postgresql",
                                                       "packages": "postgresql-16", "binaries": "/opt/pg16"}}, 400,
     "version.binaries"),
    ("post", "/mgmt/datastores/versions", {"version": {"name": "16.14", "manager": "postgresql", "activ": False}},
     400, "version.activ"),
    ("post", "/mgmt/datastores/versions", {"version": {"name": "16.14", "manager": "postgresql",
                                                       "image_id": 2**64}}, 400, "version.image_id"),
    ("post", "/mgmt/datastores/versions", {"version": {"name": "16.14", "manager": "postgresql",
                                                       "datastore": "no-such-store"}}, 404, "version.datastore"),
    ("patch", "/mgmt/datastores/{seeded}", {"datastore": {}}, 400, "datastore"),
    ("patch", "/mgmt/datastores/{seeded}", {"datastore": {"datastore_version": "99.1"}}, 404,
     "datastore.datastore_version"),
    ("patch", "/mgmt/datastores/no-such-store", {"datastore": {"name": "Whatever"}}, 404, "datastore_id"),
    ("patch", "/mgmt/datastores/versions/no-such-version", {"version": {"active": False}}, 404, "version_id"),
    ("patch", "/mgmt/datastores/versions/postgresql-15", {"version": {}}, 400, "version"),
    ("patch", "/mgmt/datastores/versions/postgresql-15", {"version": {"active": "maybe"}}, 400, "version.active"),
    ("patch", "/mgmt/datastores/versions/postgresql-15", {"version": {"manager": "mysql"}}, 400, "version.manager"),
    ("patch", "/mgmt/datastores/{seeded}/postgresql-15", {"version": {"binaries": "/opt/pg", "packages": "x"}}, 400,
     "version.binaries"),
    ("patch", "/mgmt/datastores/{seeded}/no-such-version", {"version": {"active": False}}, 404, "version_id"),
    ("get", "/mgmt/datastores/no-such-store", None, 404, "datastore_id"),
]


@pytest.mark.parametrize("method, path, body, status, field", BAD,
                         ids=[f"{m} {p} {str(b)[:50]}" for m, p, b, _s, _f in BAD])
def test_bad_input_answers_with_the_field_and_changes_nothing(admin, method, path, body, status, field):
    datastore = seeded(admin)
    before = admin.get("/mgmt/datastores").json()
    response = admin.request(method, path.format(seeded=datastore["id"]), json=body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field and response.json()["detail"], response.text
    assert "rm -rf" not in response.text and "curl evil" not in response.text
    assert admin.get("/mgmt/datastores").json() == before


def test_a_taken_name_is_a_409_and_changes_nothing(admin):
    datastore = seeded(admin)
    [debian] = [v for v in datastore["versions"] if v["id"] == "postgresql-15"]
    other = new_version(admin, "15.5")
    before = admin.get("/mgmt/datastores").json()
    for method, path, body in (
            ("post", "/mgmt/datastores/versions", {"version": {"name": debian["name"], "manager": "postgresql",
                                                               "datastore": datastore["id"]}}),
            ("patch", f"/mgmt/datastores/versions/{other['id']}", {"version": {"name": debian["name"]}}),
            ("post", "/mgmt/datastores", {"datastore": {"name": datastore["name"].upper()}})):
        response = admin.request(method, path, json=body)
        assert response.status_code == 409, response.text
        assert response.json()["field"] in ("version.name", "datastore.name"), response.text
    assert admin.get("/mgmt/datastores").json() == before


def test_the_default_version_is_what_create_uses_and_the_catalog_survives_a_restart(api, admin):
    datastore = seeded(admin)
    version = new_version(admin, "15.2", image_id=7)
    assert version["default"] is False
    cluster_id = None
    try:
        response = admin.patch(f"/mgmt/datastores/{datastore['id']}", json={"datastore": {"datastore_version": "15.2"}})
        assert response.status_code == 200 and response.json()["datastore"]["default_version"] == version["id"]
        versions = listed(admin)
        assert versions[version["id"]]["default"] is True and versions["postgresql-15"]["default"] is False

        # A create that names no version gets the new default, and installs it (Debian's 15 packages).
        response = admin.post("/v1/clusters", json=cluster_body(CLUSTER))
        assert response.status_code == 202, response.text
        cluster_id = response.json()["resource"]["id"]
        cluster = admin.get(f"/v1/clusters/{cluster_id}").json()
        assert cluster["dbaas_engine_version_id"] == version["id"]
        assert wait_request(admin, response.json()["request_id"])["state"] == "SUCCESS"

        # Admin changes that a restart's seed must keep: the old default deactivated, the seeded
        # datastore renamed (the seed finds it by id, and makes no second "PostgreSQL").
        assert admin.patch("/mgmt/datastores/versions/postgresql-15",
                           json={"version": {"active": False}}).status_code == 200
        assert admin.patch(f"/mgmt/datastores/{datastore['id']}",
                           json={"datastore": {"name": "Tcat PostgreSQL"}}).status_code == 200
        before = admin.get("/mgmt/datastores").json()
        listed_before = listed(admin, eos_included="true")
        api.stop()
        api.start()
        with api.client() as again:
            assert again.get("/mgmt/datastores").json() == before
            assert listed(again, eos_included="true") == listed_before
            assert "postgresql-15" not in listed(again)
            assert again.get(f"/v1/clusters/{cluster_id}").json()["dbaas_engine_version_id"] == version["id"]
            response = again.post("/v1/clusters", json={**cluster_body("tcat-after"),
                                                        "dbaas_engine_version_id": "postgresql-15"})
            assert response.status_code == 400 and "postgresql-15" in response.json()["detail"], response.text
            properties = {p["name"]: p["value"] for p in
                          again.get(f"/v1/engine-versions/{version['id']}/properties").json()["contents"]}
            assert (properties["default"], properties["image_id"], properties["origin"]) == ("true", "7", "admin")
    finally:
        with api.client() as cleanup:
            cleanup.patch("/mgmt/datastores/versions/postgresql-15", json={"version": {"active": True}})
            cleanup.patch(f"/mgmt/datastores/{datastore['id']}",
                          json={"datastore": {"name": "PostgreSQL", "datastore_version": "postgresql-15"}})
            if cluster_id:
                response = cleanup.delete(f"/v1/clusters/{cluster_id}")
                if response.status_code == 202:
                    assert wait_request(cleanup, response.json()["request_id"])["state"] == "SUCCESS"


def test_a_versions_packages_are_what_create_installs(admin):
    """An apt version's packages reach the install role: pinned to what is installed, the create
    succeeds; pinned to a version Debian has not, it fails with apt's reason and no instance."""
    installed = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "postgresql-15"], capture_output=True,
                               text=True, check=True).stdout
    pinned = new_version(admin, "15.6", packages=f"postgresql-15={installed}")
    missing = new_version(admin, "15.7", packages="postgresql-15=0.0-tcat")
    made = []
    try:
        for name, version, state in (("tcat-missing", missing, "ERROR"), ("tcat-pinned", pinned, "SUCCESS")):
            response = admin.post("/v1/clusters", json={**cluster_body(name), "dbaas_engine_version_id": version["id"]})
            assert response.status_code == 202, response.text
            made.append((response.json()["resource"]["id"], name))
            request = wait_request(admin, response.json()["request_id"])
            assert request["state"] == state, request
            if state == "ERROR":
                assert "no available installation candidate for postgresql-15=0.0-tcat" in request["message"], request
                assert not any(Path("/etc/postgresql/15").glob(f"{name}*"))
        assert admin.get(f"/v1/clusters/{made[1][0]}").json()["service_state"] == "RUNNING"
    finally:
        for cluster_id, name in made:
            response = admin.delete(f"/v1/clusters/{cluster_id}")
            if response.status_code == 202:
                wait_request(admin, response.json()["request_id"])
            drop_instance(name)
