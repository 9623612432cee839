"""Alembic migrations: the only way the schema changes."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import Engine

from models.db import make_engine

HERE = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the schema at `database_url` up to `revision`."""
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    """Take the schema at `database_url` back down to `revision`."""
    command.downgrade(alembic_config(database_url), revision)


@functools.cache
def head_revision() -> str:
    """The Alembic revision this version of ganforge needs (the head of migrations/versions)."""
    head = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
    assert head is not None, "migrations/versions has no revision"
    return head


def current_revision(bind: str | Engine) -> str | None:
    """The Alembic revision the store at `bind` (a URL or an engine) is at; None for a store never migrated.

    Raises sqlalchemy.exc.SQLAlchemyError when the store cannot be reached.
    """
    engine = make_engine(bind) if isinstance(bind, str) else bind
    try:
        with engine.connect() as connection:
            # Alembic logs its dialect at INFO on every configure: noise in a refusal that should be one line.
            alembic_log = logging.getLogger("alembic.runtime.migration")
            level = alembic_log.level
            alembic_log.setLevel(logging.WARNING)
            try:
                return MigrationContext.configure(connection).get_current_revision()
            finally:
                alembic_log.setLevel(level)
    finally:
        if isinstance(bind, str):
            engine.dispose()


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(revision) is not None
    except CommandError:
        return False


def schema_problem(bind: str | Engine) -> str | None:
    """None when the store's schema is at `head_revision()`, else one line saying what it is at and what to do.

    Raises sqlalchemy.exc.SQLAlchemyError when the store cannot be reached.
    """
    current, head = current_revision(bind), head_revision()
    if current == head:
        return None
    if current is not None and not _known(current):
        # `migrate` cannot help: the revision comes from a newer ganforge.
        return f"the job store's schema is at revision {current}, unknown to this version of ganforge (needs {head})"
    return (
        f"the job store's schema is at revision {current or 'none (never migrated)'}, this version of ganforge "
        f"needs {head}: run `ganforge migrate`"
    )
