"""Alembic environment: the URL comes from the caller (api.store.migrate). The queue mode's
procrastinate objects (their own schema) are never the models': autogenerate leaves them out."""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from api.store.models import Base


def include_name(name, type_, parent_names) -> bool:
    if type_ == "schema":
        return name != "procrastinate"
    return not (name or "").startswith("procrastinate_")


config = context.config
url = config.get_main_option("sqlalchemy.url")
engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                      include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
