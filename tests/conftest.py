"""Fixtures: databases (SQLite, and PostgreSQL where marked), settings, the app, and one real local Ray."""

from __future__ import annotations

import os
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from service.config import Settings
from service.db import make_engine
from tests import databases


def pytest_sessionfinish(session, exitstatus) -> None:
    databases.cleanup_template()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request, tmp_path: Path) -> Iterator[str]:
    """A migrated database; data-layer tests take this fixture to run on both engines."""
    if request.param == "sqlite":
        with databases.sqlite_database(tmp_path) as url:
            yield url
        return
    if not databases.postgres_available():
        if databases.REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is required but not reachable at {databases.POSTGRES_URL}")
        pytest.skip("PostgreSQL not reachable")
    with databases.postgres_database() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> Iterator[str]:
    with databases.sqlite_database(tmp_path) as url:
        yield url


def _settings(tmp_path: Path, url: str) -> Settings:
    return Settings(var_dir=tmp_path / "var", database_url=url, secret_key="test-secret", ray_address="unused",
                    pool_join_address="head.pool.example:6379")


def _engine(url: str, tmp_path: Path) -> Iterator[Engine]:
    """The database, with the bundled dataset registered (and its files in the archive of `_settings`), as a
    serving observatory has it."""
    from service.archive.service import store_for
    from service.datasets.service import ensure_bundled

    engine = make_engine(url)
    with Session(engine) as session:
        ensure_bundled(session, store_for(_settings(tmp_path, url)))
        session.commit()
    yield engine
    engine.dispose()


def _session(engine: Engine) -> Iterator[Session]:
    with Session(engine, expire_on_commit=False) as session:
        yield session


def _client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    from web.app import create_app

    with TestClient(create_app(settings, engine)) as client:
        yield client


# On both databases (the data layer), and on SQLite only (behaviour above it: lite_*).
@pytest.fixture
def engine(db_url: str, tmp_path: Path) -> Iterator[Engine]:
    yield from _engine(db_url, tmp_path)


@pytest.fixture
def session(engine: Engine) -> Iterator[Session]:
    yield from _session(engine)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return _settings(tmp_path, db_url)


@pytest.fixture
def client(settings: Settings, engine: Engine) -> Iterator[TestClient]:
    yield from _client(settings, engine)


@pytest.fixture
def lite_engine(sqlite_url: str, tmp_path: Path) -> Iterator[Engine]:
    yield from _engine(sqlite_url, tmp_path)


@pytest.fixture
def lite_session(lite_engine: Engine) -> Iterator[Session]:
    yield from _session(lite_engine)


@pytest.fixture
def lite_settings(tmp_path: Path, sqlite_url: str) -> Settings:
    return _settings(tmp_path, sqlite_url)


@pytest.fixture
def lite_client(lite_settings: Settings, lite_engine: Engine) -> Iterator[TestClient]:
    yield from _client(lite_settings, lite_engine)


# ---- one real Ray head for the whole session ----------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_head():
    """A private Ray head on loopback with token auth, its own ports and temp dir; stopped by PID at the end."""
    from scheduler.local_ray import start_head

    base = int(os.environ.get("OBSERVATORY_TEST_RAY_PORT", "6700"))
    temp_dir = Path(tempfile.mkdtemp(prefix="obs-ray-", dir="/tmp"))
    node = start_head(base_port=base, dashboard_port=base + 1000, temp_dir=temp_dir / "t",
                      token=secrets.token_hex(16), num_cpus=2)
    yield node
    node.stop()
