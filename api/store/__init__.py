"""The API's store: SQLAlchemy 2 over SQLite (embedded default) or PostgreSQL, Alembic migrations."""
from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # pragma: no cover - trivial
            cursor = dbapi_connection.cursor()
            # WAL lets readers (GET, polling) proceed while a worker writes events.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def migrate(url: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def _run_after_commit(session: Session) -> None:
    """Callbacks a service registered in `session.info["after_commit"]` (e.g. submit a job)."""
    for callback in session.info.pop("after_commit", []):
        callback()


def _drop_after_commit(session: Session) -> None:
    session.info.pop("after_commit", None)


event.listen(Session, "after_commit", _run_after_commit)
event.listen(Session, "after_soft_rollback", lambda session, previous: _drop_after_commit(session))
