"""Test databases: a migrated SQLite file per test, and a migrated PostgreSQL schema per test."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from service.migrations import upgrade

POSTGRES_URL = os.environ.get("OBSERVATORY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("OBSERVATORY_REQUIRE_POSTGRES") == "1"


def postgres_available() -> bool:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
        return True
    except Exception:
        return False


_template: dict[str, Path] = {}


@contextmanager
def sqlite_database(folder: Path) -> Iterator[str]:
    """A copy of a SQLite file migrated once per test session."""
    if "path" not in _template:
        template = Path(os.environ.get("PYTEST_TMP_TEMPLATE", "/tmp")) / f"observatory-template-{uuid.uuid4().hex}.db"
        upgrade(f"sqlite:///{template}")
        _template["path"] = template
    path = folder / "observatory.db"
    shutil.copyfile(_template["path"], path)
    yield f"sqlite:///{path}"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A fresh schema, migrated, found through search_path; dropped afterwards."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    try:
        upgrade(url)
        yield url
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


def cleanup_template() -> None:
    if "path" in _template:
        _template.pop("path").unlink(missing_ok=True)
