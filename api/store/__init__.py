"""The API's store: SQLAlchemy 2 over SQLite (embedded default) or PostgreSQL, Alembic migrations.

On PostgreSQL several processes (API nodes, queue workers) may start at once on one store:
migrations run under a session advisory lock, so exactly one process applies them and the others
find them applied. The queue mode's procrastinate tables live in their own schema
(`procrastinate`), created under the same lock when absent (procrastinate's schema script is not
idempotent); Alembic, whose autogenerate looks at the default schema only, never sees them.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
QUEUE_SCHEMA = "procrastinate"
# pg_advisory_lock(classid, objid) keys: one application ("pgdb"), one lock per duty.
LOCK_CLASS = 0x70676462
MIGRATE_LOCK, STARTUP_LOCK = 1, 2


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


def is_postgresql(url: str) -> bool:
    return url.startswith("postgresql")


@contextmanager
def advisory_lock(engine: Engine, key: int) -> Iterator[None]:
    """Hold a PostgreSQL session advisory lock (on a connection of its own) for the block: one
    process at a time, whichever process of the store. SQLite: nothing to lock (one process)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.execute(text("select pg_advisory_lock(:c, :k)"), {"c": LOCK_CLASS, "k": key})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("select pg_advisory_unlock(:c, :k)"), {"c": LOCK_CLASS, "k": key})
            connection.commit()


def migrate(url: str, *, queue_schema: bool = False) -> None:
    """Bring the store to the newest revision (and, for the queue mode, create procrastinate's
    schema when it is absent), one process at a time."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    if not is_postgresql(url):
        command.upgrade(config, "head")
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with advisory_lock(engine, MIGRATE_LOCK):
            command.upgrade(config, "head")
            if queue_schema:
                _apply_queue_schema(engine)
    finally:
        engine.dispose()


def _apply_queue_schema(engine: Engine) -> None:
    from procrastinate.schema import SchemaManager

    with engine.connect() as connection:
        if connection.scalar(text("select to_regclass(:name)"), {"name": f"{QUEUE_SCHEMA}.procrastinate_jobs"}):
            return
        connection.exec_driver_sql(f"create schema if not exists {QUEUE_SCHEMA}")
        connection.exec_driver_sql(f"set local search_path = {QUEUE_SCHEMA}")
        # Through the driver with parameters: a literal % of the script is written %%.
        connection.exec_driver_sql(SchemaManager.get_schema().replace("%", "%%"))
        connection.commit()


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
