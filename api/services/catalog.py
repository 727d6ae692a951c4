"""The engine catalog, in the store: datastores (PostgreSQL) and their versions.

Seeded at start-up from what this machine offers (Debian's packages of `PGDBAAS_DEFAULT_VERSION`,
the relocatable trees of `PGDBAAS_BINARIES`) into the seeded datastore, adding what is absent and
never changing a row that exists; managed by admin accounts at `/mgmt` (the Trove seed); read by
`GET /v1/engine-versions` and by every service that creates or provisions a cluster.

A version is listed when it is active and not at its end of service; `eos_included` adds the
end-of-service ones. A new cluster needs an active version (an end-of-service one still creates
while it is active); an existing cluster keeps resolving its version whatever its state.
"""
from __future__ import annotations

import logging
import re
import subprocess
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.context import Context
from api.errors import Conflict, Invalid, NotFound
from api.services.accounts import require_admin
from api.services.members import TERMINATED
from api.settings import Settings
from api.store.models import Account, Cluster, Datastore, DatastoreVersion, ServiceFact, new_id

log = logging.getLogger("pgdbaas")

MANAGERS = ("postgresql",)
SEEDED_DATASTORE = "PostgreSQL"
SEED_FACT = "catalog_datastore_id"  # the seeded datastore, kept by id (an admin may rename it)
# Words of the /mgmt paths that a datastore's name would shadow: /mgmt/datastores/versions/{id}.
RESERVED_NAMES = ("versions",)

# Rules (the OpenAPI documents them; the service enforces them for every caller).
ID_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
VERSION_NAME_RE = re.compile(r"^[1-9][0-9]{1,2}(\.[0-9]{1,4})?$")
DATASTORE_NAME_RE = re.compile(r"^[A-Za-z]([A-Za-z0-9 ._-]{0,62}[A-Za-z0-9._-])?$")
_PACKAGE = r"[a-z0-9][a-z0-9+.-]*(=[A-Za-z0-9.+:~-]+)?"
PACKAGES_RE = re.compile(rf"^{_PACKAGE}( {_PACKAGE})*$")
BINARIES_RE = re.compile(r"^/[A-Za-z0-9._+/-]{0,254}$")
IMAGE_RE = re.compile(r"^[\x21-\x7e]{0,255}$")  # printable ASCII, no space: opaque, kept as given


@dataclass(frozen=True)
class EngineVersion:
    """A catalog version as the other services and the routers use it (no session needed)."""

    id: str
    datastore_id: str
    datastore_name: str
    name: str  # the PostgreSQL version, e.g. 16.14
    major: str
    manager: str
    packages: str
    binaries: str
    image_id: str
    active: bool
    end_of_service: bool
    default: bool
    origin: str

    @property
    def software_version(self) -> str:
        return self.name

    @property
    def source(self) -> str:
        """The install role's `pg_install_method`: apt, or binaries (a relocatable tree)."""
        return "binaries" if self.binaries else "apt"

    @property
    def path(self) -> str:
        return self.binaries

    def install_vars(self) -> dict:
        """How a playbook installs this version's software: the contract's pg_install_method, and
        pg_binaries_source or pg_packages (pinned ones included; not the plain postgresql-<major>,
        which the install role installs by itself, only when it is missing)."""
        if self.binaries:
            return {"pg_install_method": "binaries", "pg_binaries_source": self.binaries}
        packages = self.packages.split()
        return {"pg_install_method": "apt", "pg_packages": [] if packages == [f"postgresql-{self.major}"] else packages}

    @property
    def listed(self) -> bool:
        return self.active and not self.end_of_service


@dataclass(frozen=True)
class DatastoreView:
    id: str
    name: str
    default_version_id: str | None
    versions: list[EngineVersion] = field(default_factory=list)


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _view(row: DatastoreVersion) -> EngineVersion:
    return EngineVersion(id=row.id, datastore_id=row.datastore_id, datastore_name=row.datastore.name, name=row.name,
                         major=row.major, manager=row.manager, packages=row.packages, binaries=row.binaries,
                         image_id=row.image_id, active=row.active, end_of_service=row.end_of_service,
                         default=row.datastore.default_version_id == row.id, origin=row.origin)


def _datastore_view(row: Datastore) -> DatastoreView:
    return DatastoreView(id=row.id, name=row.name, default_version_id=row.default_version_id,
                         versions=sorted((_view(v) for v in row.versions), key=lambda v: _version_key(v.name)))


# -- discovery: what this machine offers (the seed) -------------------------------------------------
_POSTGRES_VERSION = re.compile(r"\(PostgreSQL\) (\d+(?:\.\d+)*)")


@dataclass(frozen=True)
class Discovered:
    id: str
    name: str
    major: str
    packages: str = ""
    binaries: str = ""


@lru_cache(maxsize=32)
def _binary_version(postgres: str) -> str:
    try:
        out = subprocess.run([postgres, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    match = _POSTGRES_VERSION.search(out)
    return match.group(1) if match else ""


@lru_cache(maxsize=8)
def _apt_candidate(package: str) -> str:
    """Installed or candidate version of a Debian package, e.g. 15.18 for postgresql-15."""
    try:
        out = subprocess.run(["apt-cache", "policy", package], capture_output=True, text=True,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    for label in ("Installed:", "Candidate:"):
        for line in out.splitlines():
            line = line.strip()
            if line.startswith(label) and "(none)" not in line:
                return line.split()[1].split("-")[0].split("+")[0]
    return ""


def discover(settings: Settings) -> list[Discovered]:
    """Debian's PostgreSQL of the default major (`postgresql-15`), then each PGDBAAS_BINARIES tree
    whose `postgres --version` is of the major it is configured for (`postgresql-16`). The ids are
    the ones clusters had before the catalog was stored."""
    found: list[Discovered] = []
    major = settings.default_version
    package = f"postgresql-{major}"
    apt_version = _binary_version(f"/usr/lib/postgresql/{major}/bin/postgres") or _apt_candidate(package)
    if VERSION_NAME_RE.match(apt_version or ""):
        found.append(Discovered(id=package, name=apt_version, major=major, packages=package))
    for bin_major, path in sorted(settings.binaries_sources.items()):
        version = _binary_version(str(Path(path) / "bin" / "postgres"))
        if VERSION_NAME_RE.match(version) and version.split(".")[0] == bin_major != major \
                and BINARIES_RE.match(str(path)):
            found.append(Discovered(id=f"postgresql-{bin_major}", name=version, major=bin_major,
                                    binaries=str(path)))
    return found


def seed(ctx: Context) -> list[str]:
    """Add what this machine offers to the seeded datastore (made at the first start), and make its
    first version the default while it has none. Idempotent; an existing row is never changed, so an
    admin's changes (a rename, a deactivation, another default) survive every restart. The ids of
    the versions added."""
    found = discover(ctx.settings)
    added: list[str] = []
    with ctx.sessions.begin() as session:
        datastore = _seeded_datastore(session)
        if datastore is None:
            datastore = session.scalar(select(Datastore).where(func.lower(Datastore.name) == SEEDED_DATASTORE.lower()))
            if datastore is None:
                datastore = Datastore(id=new_id(), name=SEEDED_DATASTORE)
                session.add(datastore)
                session.flush()
            session.merge(ServiceFact(key=SEED_FACT, value=datastore.id))
        names = {v.name for v in datastore.versions}
        for item in found:
            if session.get(DatastoreVersion, item.id) is not None:
                continue
            if item.name in names:
                log.info("catalog: %s (%s) not seeded: datastore %s has a version of that name", item.id, item.name,
                         datastore.name)
                continue
            session.add(DatastoreVersion(id=item.id, datastore=datastore, name=item.name, major=item.major,
                                         manager="postgresql", packages=item.packages, binaries=item.binaries,
                                         origin="discovered"))
            names.add(item.name)
            added.append(item.id)
        session.flush()
        if datastore.default_version_id is None:
            default = next((session.get(DatastoreVersion, item.id) for item in found
                            if item.major == ctx.settings.default_version), None)
            if default is not None and default.active and default.datastore_id == datastore.id:
                datastore.default_version_id = default.id
    if added:
        log.info("catalog: seeded %s", ", ".join(added))
    return added


def _seeded_datastore(session: Session) -> Datastore | None:
    fact = session.get(ServiceFact, SEED_FACT)
    return session.get(Datastore, fact.value) if fact else None


# -- reading ----------------------------------------------------------------------------------------
def list_versions(ctx: Context, *, eos_included: bool = False, version_id: str | None = None) -> list[EngineVersion]:
    """The versions new clusters are offered (active, not at end of service), plus the end-of-service
    ones with `eos_included`; one version with `version_id`."""
    with ctx.sessions() as session:
        statement = select(DatastoreVersion)
        if version_id is not None:
            if not ID_RE.match(version_id):
                return []
            statement = statement.where(DatastoreVersion.id == version_id)
        rows = [_view(v) for v in session.scalars(statement)]
    shown = [v for v in rows if v.listed or (eos_included and v.end_of_service)]
    return sorted(shown, key=lambda v: (v.datastore_name, _version_key(v.name)))


def get_version(ctx: Context, version_id: str) -> EngineVersion:
    with ctx.sessions() as session:
        row = session.get(DatastoreVersion, version_id) if ID_RE.match(version_id) else None
        if row is None:
            raise NotFound(f"engine version {_shown(version_id)} not found", field="dbaas_engine_version_id")
        return _view(row)


def properties(version: EngineVersion) -> list[tuple[str, str]]:
    """`GET /v1/engine-versions/{id}/properties`: what the catalog knows of a version, as strings."""
    return [("datastore", version.datastore_name), ("datastore_id", version.datastore_id),
            ("manager", version.manager), ("major_version", version.major), ("software_version", version.name),
            ("install_source", version.source), ("packages", version.packages), ("binaries", version.binaries),
            ("image_id", version.image_id), ("active", _flag(version.active)),
            ("end_of_service", _flag(version.end_of_service)), ("default", _flag(version.default)),
            ("origin", version.origin)]


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _shown(value: str) -> str:
    """A caller's id in a message when it is a plausible one (short, plain): never arbitrary input."""
    return repr(value) if ID_RE.match(value) else "(not a valid id)"


def _lookup(session: Session, wanted: str, by_major: bool = True) -> DatastoreVersion | None:
    """By id (any datastore); else, in the seeded datastore, by name (16.14) or, with `by_major`, by
    major (16: the default version when it is of that major, else the newest active one of it, else any)."""
    if not ID_RE.match(wanted):
        return None
    row = session.get(DatastoreVersion, wanted)
    if row is not None:
        return row
    datastore = _seeded_datastore(session)
    if datastore is None:
        return None
    by_name = [v for v in datastore.versions if v.name == wanted]
    if by_name:
        return by_name[0]
    if not by_major:
        return None
    of_major = sorted((v for v in datastore.versions if v.major == wanted), key=lambda v: _version_key(v.name))
    default = next((v for v in of_major if v.id == datastore.default_version_id and v.active), None)
    active = [v for v in of_major if v.active]
    return default or (active[-1] if active else (of_major[-1] if of_major else None))


def for_new_cluster(ctx: Context, wanted: str, *, field_name: str = "dbaas_engine_version_id",
                    allow_inactive: bool = False) -> EngineVersion:
    """The version a new cluster is made of: the one named (id, name or major), or the seeded
    datastore's default. 400 naming it when it is unknown or not active (`allow_inactive`: a restore,
    whose version is its source's)."""
    with ctx.sessions() as session:
        if wanted:
            row = _lookup(session, wanted)
            if row is None:
                offered = ", ".join(v.id for v in list_versions(ctx)) or "none"
                raise Invalid(f"{field_name}: unknown engine version {_shown(wanted)}; this installation offers {offered}",
                              field=field_name)
        else:
            datastore = _seeded_datastore(session)
            row = session.get(DatastoreVersion, datastore.default_version_id) \
                if datastore is not None and datastore.default_version_id else None
            if row is None:
                raise Invalid(f"{field_name}: this installation has no default engine version: name one from "
                              "GET /v1/engine-versions", field=field_name)
        version = _view(row)
    if not version.active and not allow_inactive:
        which = "engine version" if wanted else "the default engine version"
        raise Invalid(f"{field_name}: {which} {version.id} (PostgreSQL {version.name}) is not active: it takes no new clusters",
                      field=field_name)
    return version


def find_version(session: Session, wanted: str, *, by_major: bool = True) -> EngineVersion | None:
    """The version `wanted` names, as creates look it up (id; name; with `by_major`, a major), or None."""
    row = _lookup(session, wanted, by_major)
    return _view(row) if row is not None else None


def version_key(name: str) -> tuple[int, ...]:
    """A version's name as numbers, for ordering: 16.11 < 16.14 < 18.4."""
    return _version_key(name)


def active_versions(session: Session) -> list[EngineVersion]:
    """Every active version (end-of-service ones included: they still run and create), oldest first."""
    rows = [_view(v) for v in session.scalars(select(DatastoreVersion).where(DatastoreVersion.active.is_(True)))]
    return sorted(rows, key=lambda v: _version_key(v.name))


def shown(value: str) -> str:
    """A caller's version reference in a message, when it is a plausible one (never arbitrary input)."""
    return _shown(value)


def version_of(session: Session, cluster: Cluster) -> EngineVersion:
    """The catalog version an existing cluster runs, active or not (409 when it is gone)."""
    row = session.get(DatastoreVersion, cluster.engine_version_id)
    if row is None:
        raise Conflict(f"engine version {cluster.engine_version_id} of cluster {cluster.id} is not in the catalog")
    return _view(row)


# -- management (/mgmt, admin accounts) ---------------------------------------------------------------
def list_datastores(ctx: Context, actor: Account) -> list[DatastoreView]:
    require_admin(actor)
    with ctx.sessions() as session:
        return [_datastore_view(d) for d in session.scalars(select(Datastore).order_by(Datastore.name))]


def get_datastore(ctx: Context, actor: Account, ref: str) -> DatastoreView:
    require_admin(actor)
    with ctx.sessions() as session:
        return _datastore_view(_find_datastore(session, ref, "datastore_id"))


def _lock_datastore(session: Session, datastore_id: str) -> Datastore | None:
    """The datastore, its row locked for this transaction (PostgreSQL) before anything of it is read:
    a default change and a deactivation of the same version never both pass."""
    session.execute(select(Datastore.id).where(Datastore.id == datastore_id).with_for_update())
    return session.get(Datastore, datastore_id)


def _find_datastore(session: Session, ref: str, field_name: str, *, lock: bool = False) -> Datastore:
    """A datastore by id, else by name (case-insensitive), as Trove's CLI takes `{name/uuid}`."""
    found = None
    if ID_RE.match(ref) or DATASTORE_NAME_RE.match(ref):
        found = session.scalar(select(Datastore.id).where(Datastore.id == ref)) or session.scalar(
            select(Datastore.id).where(func.lower(Datastore.name) == ref.lower()))
    row = (_lock_datastore(session, found) if lock else session.get(Datastore, found)) if found else None
    if row is None:
        raise NotFound(f"datastore {_shown(ref)} not found", field=field_name)
    return row


def _find_version(datastore: Datastore, ref: str, field_name: str) -> DatastoreVersion:
    """A version of this datastore by id or by name."""
    row = next((v for v in datastore.versions if v.id == ref), None) or \
        next((v for v in datastore.versions if v.name == ref), None)
    if row is None:
        raise NotFound(f"datastore {datastore.name} has no version {_shown(ref)}", field=field_name)
    return row


def _check_datastore_name(session: Session, name: str, field_name: str, own_id: str | None = None) -> None:
    if not DATASTORE_NAME_RE.match(name):
        raise Invalid("a datastore's name is 1-64 letters, digits, spaces, '.', '_' or '-', starting with a letter "
                      "and not ending with a space", field=field_name)
    if name.lower() in RESERVED_NAMES:
        raise Invalid(f"{name!r} is reserved (a word of the /mgmt paths)", field=field_name)
    taken = session.scalar(select(Datastore.id).where(func.lower(Datastore.name) == name.lower()))
    if taken is not None and taken != own_id:
        raise Conflict(f"a datastore named {name!r} exists", field=field_name)


def _committed(work):
    """Run a write; a unique constraint that another request won meanwhile is a 409, not a 500."""
    try:
        return work()
    except IntegrityError as exc:
        raise Conflict("another request changed the catalog at the same time: try again") from exc


def create_datastore(ctx: Context, actor: Account, name: str) -> DatastoreView:
    require_admin(actor)

    def work() -> DatastoreView:
        with ctx.sessions.begin() as session:
            _check_datastore_name(session, name, "datastore.name")
            row = Datastore(id=new_id(), name=name)
            session.add(row)
            session.flush()
            return DatastoreView(id=row.id, name=row.name, default_version_id=None)
    return _committed(work)


def update_datastore(ctx: Context, actor: Account, ref: str, *, name: str | None = None,
                     default_version: str | None = None) -> DatastoreView:
    """Rename it, or name its default version (one of its versions, by name or id, active)."""
    require_admin(actor)
    if name is None and default_version is None:
        raise Invalid("nothing to change: give name or datastore_version", field="datastore")

    def work() -> DatastoreView:
        with ctx.sessions.begin() as session:
            row = _find_datastore(session, ref, "datastore_id", lock=True)
            if name is not None:
                _check_datastore_name(session, name, "datastore.name", own_id=row.id)
            if default_version is not None:
                version = _find_version(row, default_version, "datastore.datastore_version")
                if not version.active:
                    raise Conflict(f"version {version.name} ({version.id}) is not active: activate it before "
                                   "making it the default", field="datastore.datastore_version")
                row.default_version_id = version.id
            if name is not None:
                row.name = name
            session.flush()
            return _datastore_view(row)
    return _committed(work)


@dataclass
class VersionChanges:
    """A version's fields as a /mgmt body gives them (None: not given)."""

    name: str | None = None
    manager: str | None = None
    packages: str | None = None
    binaries: str | None = None
    image_id: str | None = None
    active: bool | None = None
    end_of_service: bool | None = None


def _check_version_fields(changes: VersionChanges, prefix: str = "version.") -> None:
    if changes.name is not None and not VERSION_NAME_RE.match(changes.name):
        raise Invalid("a version's name is a PostgreSQL version of 10 or later, e.g. 16.14 or 16 (its major is the "
                      "first number)", field=prefix + "name")
    if changes.manager is not None and changes.manager not in MANAGERS:
        raise Invalid(f"manager must be one of {', '.join(MANAGERS)}", field=prefix + "manager")
    if changes.packages and not PACKAGES_RE.match(changes.packages):
        raise Invalid("packages are Debian package names separated by spaces, each optionally =version",
                      field=prefix + "packages")
    if changes.binaries and (not BINARIES_RE.match(changes.binaries) or ".." in changes.binaries.split("/")):
        raise Invalid("binaries is the absolute path of a relocatable PostgreSQL tree on the database hosts "
                      "(letters, digits, '.', '_', '+', '-', '/'; no '..')", field=prefix + "binaries")
    if changes.image_id is not None and not IMAGE_RE.match(changes.image_id):
        raise Invalid("image_id is at most 255 printable characters without spaces", field=prefix + "image_id")


def _sources(packages: str, binaries: str, prefix: str = "version.") -> tuple[str, str]:
    if packages and binaries:
        raise Invalid("give packages or binaries, not both: a version installs from one source",
                      field=prefix + "binaries")
    if not packages and not binaries:
        raise Invalid("a version needs packages (apt) or binaries (a relocatable tree)", field=prefix + "packages")
    return packages, binaries


def create_version(ctx: Context, actor: Account, changes: VersionChanges,
                   datastore: str | None = None) -> EngineVersion:
    """A new version of a datastore (`datastore`: its id or name; absent: the seeded PostgreSQL one).
    Without packages or binaries it installs Debian's `postgresql-<major>`. The first active version
    of a datastore without a default becomes its default."""
    require_admin(actor)
    _check_version_fields(changes)
    if changes.name is None or changes.manager is None:
        raise Invalid("name and manager are required", field="version.name" if changes.name is None
                      else "version.manager")
    major = changes.name.split(".")[0]
    packages, binaries = _sources(changes.packages or ("" if changes.binaries else f"postgresql-{major}"),
                                  changes.binaries or "")

    def work() -> EngineVersion:
        with ctx.sessions.begin() as session:
            if datastore is None:
                fact = session.get(ServiceFact, SEED_FACT)
                row = _lock_datastore(session, fact.value) if fact else None
                if row is None:
                    raise NotFound("this installation has no seeded datastore: name one", field="version.datastore")
            else:
                row = _find_datastore(session, datastore, "version.datastore", lock=True)
            if any(v.name == changes.name for v in row.versions):
                raise Conflict(f"datastore {row.name} has a version named {changes.name}", field="version.name")
            version = DatastoreVersion(id=new_id(), datastore=row, name=changes.name, major=major,
                                       manager=changes.manager, packages=packages, binaries=binaries,
                                       image_id=changes.image_id or "", active=True if changes.active is None
                                       else changes.active, end_of_service=bool(changes.end_of_service),
                                       origin="admin")
            session.add(version)
            session.flush()
            if row.default_version_id is None and version.active:
                row.default_version_id = version.id
            return _view(version)
    return _committed(work)


def update_version(ctx: Context, actor: Account, ref: str, changes: VersionChanges,
                   datastore: str | None = None) -> EngineVersion:
    """Change a version: by id (`PATCH /mgmt/datastores/versions/{id}`) or, of `datastore`, by id
    or name (`PATCH /mgmt/datastores/{datastore_id}/{version_id}`). Giving one install source
    replaces the other. A version that live clusters run keeps its major (409). Deactivating the
    default version (the seed's example) is allowed: a create naming no version then answers 400
    until an admin names another default."""
    require_admin(actor)
    _check_version_fields(changes)
    if all(getattr(changes, name) is None for name in VersionChanges.__dataclass_fields__):
        raise Invalid("nothing to change: give one of name, manager, packages, binaries, image_id, active, "
                      "end_of_service", field="version")

    def work() -> EngineVersion:
        with ctx.sessions.begin() as session:
            if datastore is not None:
                owner = _find_datastore(session, datastore, "datastore_id", lock=True)
                row = _find_version(owner, ref, "version_id")
            else:
                owner_id = session.scalar(select(DatastoreVersion.datastore_id).where(DatastoreVersion.id == ref)) \
                    if ID_RE.match(ref) else None
                if owner_id is None:
                    raise NotFound(f"engine version {_shown(ref)} not found", field="version_id")
                owner = _lock_datastore(session, owner_id)
                row = _find_version(owner, ref, "version_id")
            if changes.name is not None and changes.name != row.name:
                if any(v.name == changes.name and v.id != row.id for v in owner.versions):
                    raise Conflict(f"datastore {owner.name} has a version named {changes.name}", field="version.name")
                major = changes.name.split(".")[0]
                if major != row.major and session.scalar(select(func.count()).select_from(Cluster).where(
                        Cluster.engine_version_id == row.id, Cluster.service_state != TERMINATED)):
                    raise Conflict(f"clusters run version {row.id}: its major stays {row.major}", field="version.name")
                row.name, row.major = changes.name, major
            packages = row.packages if changes.packages is None else changes.packages
            binaries = row.binaries if changes.binaries is None else changes.binaries
            if changes.packages and changes.binaries is None:
                binaries = ""
            if changes.binaries and changes.packages is None:
                packages = ""
            row.packages, row.binaries = _sources(packages, binaries)
            for name in ("manager", "image_id", "active", "end_of_service"):
                if getattr(changes, name) is not None:
                    setattr(row, name, getattr(changes, name))
            session.flush()
            return _view(row)
    return _committed(work)
