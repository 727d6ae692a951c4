"""Engine versions this installation can install: Debian's packages and configured binaries."""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from api.settings import Settings

_VERSION = re.compile(r"\(PostgreSQL\) (\d+(?:\.\d+)*)")


@dataclass(frozen=True)
class EngineVersion:
    id: str
    major: str
    software_version: str
    source: str  # apt | binaries
    path: str = ""
    default: bool = False
    end_of_service: bool = False

    @property
    def name(self) -> str:
        return f"PostgreSQL {self.software_version}"


@lru_cache(maxsize=32)
def _binary_version(postgres: str) -> str:
    try:
        out = subprocess.run([postgres, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return ""
    match = _VERSION.search(out)
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


def engine_versions(settings: Settings) -> list[EngineVersion]:
    versions: list[EngineVersion] = []
    major = settings.default_version
    apt_version = _binary_version(f"/usr/lib/postgresql/{major}/bin/postgres") or _apt_candidate(
        f"postgresql-{major}")
    if apt_version:
        versions.append(EngineVersion(id=f"postgresql-{major}", major=major, software_version=apt_version,
                                      source="apt", default=True))
    for bin_major, path in sorted(settings.binaries_sources.items()):
        found = _binary_version(str(Path(path) / "bin" / "postgres"))
        if found and found.split(".")[0] == bin_major and bin_major != major:
            versions.append(EngineVersion(id=f"postgresql-{bin_major}", major=bin_major,
                                          software_version=found, source="binaries", path=str(path)))
    return versions


def find(settings: Settings, version_id_or_major: str) -> EngineVersion | None:
    """By id (`postgresql-15`), major (`15`) or full version (`15.18`)."""
    for version in engine_versions(settings):
        if version_id_or_major in (version.id, version.major, version.software_version):
            return version
    return None
