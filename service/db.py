"""Engine and sessions. Services flush; the caller (a route, a CLI command, a scheduler tick) commits once.

Check-then-write on shared rows is made safe in one way on each database: on PostgreSQL the service takes a row
lock (`lock`, SELECT … FOR UPDATE) before it checks; on SQLite, whose writers are serialised anyway, a writing
session starts its transaction with BEGIN IMMEDIATE (`writer`), so no other writer can slip in between its check
and its write. A reading session never waits for a writer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, create_engine

from service.config import Settings, get_settings
from service.files import private_dir

_WRITER = "observatory_writer"
Row = TypeVar("Row", bound=SQLModel)


def _private_sqlite_file(url: str) -> None:
    """Create the database file readable by its owner alone, before SQLite creates it with the umask's mode."""
    if not url.startswith("sqlite:///") or len(url) == len("sqlite:///") or ":memory:" in url:
        return
    path = Path(url.removeprefix("sqlite:///").split("?")[0])
    private_dir(path.parent)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))


def make_engine(url: str, *, pool_size: int = 10, max_overflow: int = 10, pool_timeout_s: float = 10) -> Engine:
    """An engine for a SQLAlchemy URL (`engine_for` sizes it from the settings). A request that finds the pool
    empty waits `pool_timeout_s` and is then refused with a 503, not queued forever."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url.removeprefix("postgresql://")
    pool = {"pool_size": pool_size, "max_overflow": max_overflow, "pool_timeout": pool_timeout_s}
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True, **pool)
    _private_sqlite_file(url)
    if url in ("sqlite://", "sqlite:///:memory:"):
        pool = {}
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None  # SQLAlchemy, not the driver, begins transactions (below)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _sqlite_begin(connection) -> None:  # type: ignore[no-untyped-def]
        immediate = connection.get_execution_options().get(_WRITER)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def writer(engine: Engine) -> Engine:
    """The same engine and pool, for a session that checks and then writes (BEGIN IMMEDIATE on SQLite)."""
    return engine.execution_options(**{_WRITER: True})


def lock(session: Session, model: type[Row], key: object) -> Row | None:
    """The row, re-read and locked until the transaction ends (FOR UPDATE; SQLite serialises writers instead)."""
    return session.get(model, key, with_for_update=True, populate_existing=True)


def engine_for(settings: Settings) -> Engine:
    """An engine with the pool the settings ask for; the API and the scheduler each get their own."""
    return make_engine(settings.resolved_database_url, pool_size=settings.db_pool_size,
                       max_overflow=settings.db_max_overflow, pool_timeout_s=settings.db_pool_timeout_s)


@lru_cache
def get_engine() -> Engine:
    return engine_for(get_settings())


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A session that commits on success and rolls back on any error."""
    with Session(writer(engine or get_engine()), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
