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
    # HA clusters (Patroni over etcd): the etcd member each database host runs as the DCS of its
    # HA clusters (role dbaas.postgresql.etcd): its name (empty: pgdbaas-<host>) and ports.
    etcd_name: str = Field(default="", pattern=r"^([a-z][a-z0-9-]{0,62})?$")
    etcd_client_port: int = Field(default=2379, ge=1024, le=65535)
    etcd_peer_port: int = Field(default=2380, ge=1024, le=65535)
    # Backups (pgBackRest): the repository every stanza of this installation uses, "posix" (a path
    # on the database host: mount shared storage there for several hosts) or "s3" (an S3-compatible
    # object store; the path is then the prefix inside the bucket).
    backup_repo_type: Literal["posix", "s3"] = "posix"
    backup_repo_path: str = "/var/lib/pgbackrest"
    backup_s3_bucket: str = ""
    backup_s3_endpoint: str = ""
    backup_s3_region: str = "us-east-1"
    backup_s3_uri_style: Literal["host", "path"] = "host"
    backup_s3_verify_tls: bool = True
    backup_s3_key: str = ""
    backup_s3_key_secret: str = ""
    # The backup scheduler: seconds between two looks for due backups and verifications (in-process
    # executor: a thread of the API process; queue mode: a periodic task of the workers, every
    # minute); 0 turns the in-process scheduler off. The clock offset (seconds, may be negative) is
    # added to the scheduler's clock only: a drill or a test fires tomorrow's 02:00 backup now.
    scheduler_interval: float = Field(default=30, ge=0, le=3600)
    scheduler_clock_offset: float = 0

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

    @property
    def backup_repository(self) -> dict:
        """The repository extra-vars of set_backup.yml (never a secret: see backup_secrets)."""
        repository = {"pg_backup_repo_type": self.backup_repo_type, "pg_backup_repo_path": self.backup_repo_path}
        if self.backup_repo_type == "s3":
            repository.update(pg_backup_s3_bucket=self.backup_s3_bucket, pg_backup_s3_endpoint=self.backup_s3_endpoint,
                              pg_backup_s3_region=self.backup_s3_region, pg_backup_s3_uri_style=self.backup_s3_uri_style,
                              pg_backup_s3_verify_tls=self.backup_s3_verify_tls)
        return repository

    @property
    def backup_secrets(self) -> dict:
        if self.backup_repo_type != "s3":
            return {}
        return {"pg_backup_s3_key": self.backup_s3_key, "pg_backup_s3_key_secret": self.backup_s3_key_secret}

    def startup_problem(self) -> str | None:
        """Why this configuration cannot start, said plainly (checked before anything is touched)."""
        if self.backup_repo_type == "s3" and not (self.backup_s3_bucket and self.backup_s3_endpoint
                                                  and self.backup_s3_key and self.backup_s3_key_secret):
            return ("PGDBAAS_BACKUP_REPO_TYPE=s3 needs PGDBAAS_BACKUP_S3_BUCKET, PGDBAAS_BACKUP_S3_ENDPOINT, "
                    "PGDBAAS_BACKUP_S3_KEY and PGDBAAS_BACKUP_S3_KEY_SECRET")
        if self.executor != "queue":
            return None
        if not self.database_url.startswith("postgresql"):
            return ("PGDBAAS_EXECUTOR=queue needs the PostgreSQL store: set PGDBAAS_DATABASE_URL to "
                    "postgresql+psycopg://user:password@host:port/database (the same for every API and worker process)")
        if not self.secret_key and not self.key_file.is_file():
            return (f"PGDBAAS_EXECUTOR=queue needs the key every API and worker process shares: set "
                    f"PGDBAAS_SECRET_KEY (e.g. from `python -m api secret-key`) or put that key in {self.key_file}")
        return None
