"""Alembic environment: the URL comes from GANFORGE_DATABASE_URL (or the embedded default)."""

from __future__ import annotations

from alembic import context

from models.db import make_engine
from models.records import Base
from models.settings import Settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or Settings().database_url


def run_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # A batch migration copies a table and drops the original; with enforcement on, that DROP cascades to
            # every child row. The pragma only takes effect outside a transaction, hence the driver connection.
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").all()
                if broken:
                    raise RuntimeError(f"migration left rows without their parent: {broken[:10]}")
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
