"""Engine and session factory for the job store (PostgreSQL or the embedded SQLite)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.util import immutabledict

SQLITE_POOL_SIZE = 40
# A connection execution option: this transaction only reads (StoreSession sets it).
READS_ONLY = "ganforge_reads_only"


class StoreSession(Session):
    """A Session whose transaction only reads unless it is begun explicitly (`with session.begin():`).

    The store never commits an autobegun transaction: every write is `with store.session() as s, s.begin():`
    (models/store), so one that is not begun that way is a read, and carries READS_ONLY. On SQLite a read starts
    with a deferred BEGIN, a WAL snapshot that neither waits for the writer nor holds it up; every other
    transaction takes the write lock up front (BEGIN IMMEDIATE, make_engine).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.execution_options = self.execution_options.union({READS_ONLY: True})

    def begin(self, nested: bool = False) -> Any:
        if not nested:
            self.execution_options = immutabledict(
                {name: value for name, value in self.execution_options.items() if name != READS_ONLY}
            )
        return super().begin(nested)


def make_engine(url: str) -> Engine:
    """An engine for `url`; SQLite gets WAL and a busy timeout so API and worker share it."""
    if url.startswith("sqlite"):
        # pool_size: as many kept connections as the API runs requests at once (anyio's 40 threads). Beyond the
        # pool, a connection was opened (with its PRAGMAs and a cold page cache) and closed for each request.
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=SQLITE_POOL_SIZE, max_overflow=10
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin_immediate(conn: Any) -> None:
            # Take the write lock up front: a deferred transaction that upgrades fails with "database is locked".
            # A read (StoreSession) needs no lock: BEGIN IMMEDIATE there made every GET wait behind every writer.
            conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get(READS_ONLY) else "BEGIN IMMEDIATE")

        # Let SQLAlchemy's "begin" event issue BEGIN itself instead of pysqlite's implicit one.
        @event.listens_for(engine, "connect", insert=True)
        def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None

        return engine
    # Up to 15 connections a process (README: PostgreSQL sizing), all kept: 5 kept and 10 overflow closed each one
    # after its request whenever more than 5 requests ran at once, a new server backend per request under load.
    return create_engine(url, pool_pre_ping=True, pool_size=15, max_overflow=0)


def make_sessionmaker(engine: Engine) -> sessionmaker[StoreSession]:
    """The store's sessions: StoreSession (an autobegun transaction only reads), objects usable after commit."""
    return sessionmaker(engine, class_=StoreSession, expire_on_commit=False)


def driver_connect_args(engine: Engine) -> tuple[list[Any], dict[str, Any]]:
    """The (args, kwargs) that open a plain driver connection (psycopg's) to `engine`'s database, for a connection
    kept outside SQLAlchemy's pool (a LISTEN, the job read cache's row-version checks)."""
    args, params = engine.dialect.create_connect_args(engine.url)
    params.pop("context", None)  # SQLAlchemy's adapters for its own connections; plain psycopg here
    return list(args), dict(params)
