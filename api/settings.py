"""Settings: every knob is a `PGDBAAS_*` environment variable (documented in the README)."""
from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PGDBAAS_", extra="ignore")

    # Where the SQLite file, job directories, the encryption key and logs live.
    data_dir: Path = REPO_ROOT / "var"
    # SQLAlchemy URL of the API's own store; empty means SQLite in data_dir.
    database_url: str = ""
    # Inventory of DB hosts (the host pool) and the group placement picks from.
    inventory: Path = REPO_ROOT / "inventories" / "local"
    host_group: str = "pgdbaas_hosts"
    # Ports handed to new instances, inclusive, checked free in the store and on the host.
    port_range: str = "54320-54999"
    # Concurrent ansible-runner jobs (of the API process in-process, of each worker in queue mode).
    workers: int = Field(default=4, ge=1, le=64)
    # Who runs the jobs: "inprocess" (a thread pool of the API process, the embedded default) or
    # "queue" (procrastinate on the PostgreSQL store: `python -m api` serves HTTP only and every
    # `python -m api worker` runs jobs; any number of each).
    executor: Literal["inprocess", "queue"] = "inprocess"
    # Queue mode: a running operation whose worker has not renewed its heartbeat for this long is
    # ended as ERROR "interrupted" (heartbeats every 5 s; the reaper looks every 10 s).
    heartbeat_timeout: float = Field(default=30, ge=10, le=3600)
    # How long a synchronous call (agent facade, DBaaS) waits for its operation before it answers
    # 504 with the request to poll.
    sync_timeout: float = Field(default=900, gt=0, le=86400)
    # First admin account, created at start-up when no account of that name exists.
    admin_user: str = "admin"
    admin_password: str = ""
    # Key for secrets the API must show again (Fernet, urlsafe base64); empty: a key file in data_dir.
    secret_key: str = ""
    # Instance served by the agent facade `/service/postgresql/*`; empty disables the facade boot.
    agent_instance: str = ""
    agent_port: int = 0
    # Extra install sources: "16=/path/to/pginstall,18=/path/to/pginstall18".
    binaries: str = ""
    # Default major for new clusters.
    default_version: str = "15"
    listen_host: str = "127.0.0.1"
    listen_port: int = 8000
    log_level: str = "info"
    playbook_dir: Path = REPO_ROOT / "playbooks"

    @field_validator("port_range")
    @classmethod
    def _check_range(cls, value: str) -> str:
        low, _, high = value.partition("-")
        if not (low.isdigit() and high.isdigit() and 1024 <= int(low) <= int(high) <= 65535):
            raise ValueError("port_range must look like 54320-54999 within 1024-65535")
        return value

    @model_validator(mode="after")
    def _check_agent_port(self) -> "Settings":
        # Every port the service hands out, the agent's included, comes from the one range.
        if self.agent_port and self.agent_port not in self.ports:
            raise ValueError(f"agent_port {self.agent_port} must be within port_range {self.port_range}")
        return self

    @cached_property
    def ports(self) -> range:
        low, _, high = self.port_range.partition("-")
        return range(int(low), int(high) + 1)

    @cached_property
    def binaries_sources(self) -> dict[str, Path]:
        sources: dict[str, Path] = {}
        for item in filter(None, (part.strip() for part in self.binaries.split(","))):
            major, _, path = item.partition("=")
            sources[major.strip()] = Path(path.strip())
        return sources

    @property
    def store_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'pgdbaas.sqlite3'}"

    @property
    def jobs_dir(self) -> Path:
        return self.data_dir / "jobs"

    @property
    def key_file(self) -> Path:
        return self.data_dir / "secret.key"

    def startup_problem(self) -> str | None:
        """Why this configuration cannot start, said plainly (checked before anything is touched)."""
        if self.executor != "queue":
            return None
        if not self.database_url.startswith("postgresql"):
            return ("PGDBAAS_EXECUTOR=queue needs the PostgreSQL store: set PGDBAAS_DATABASE_URL to "
                    "postgresql+psycopg://user:password@host:port/database (the same for every API and worker process)")
        if not self.secret_key and not self.key_file.is_file():
            return (f"PGDBAAS_EXECUTOR=queue needs the key every API and worker process shares: set "
                    f"PGDBAAS_SECRET_KEY (e.g. from `python -m api secret-key`) or put that key in {self.key_file}")
        return None
