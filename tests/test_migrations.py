"""The Alembic history: upgrades and downgrades cleanly, and matches the models exactly."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import service.models  # noqa: F401
from service.db import make_engine
from service.migrations import current_head, downgrade, upgrade

TABLES = {"users", "api_tokens", "calls", "proposals", "proposal_members", "awards", "runs", "artifacts", "pool_nodes"}


def test_upgrade_downgrade_upgrade(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        assert set(inspect(engine).get_table_names()) >= TABLES
        downgrade(db_url, "base")
        assert not TABLES & set(inspect(engine).get_table_names())
        upgrade(db_url)
        assert set(inspect(engine).get_table_names()) >= TABLES
        with engine.connect() as connection:
            assert MigrationContext.configure(connection).get_current_revision() == current_head()
    finally:
        engine.dispose()


def test_models_match_migrations(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, SQLModel.metadata) == []
    finally:
        engine.dispose()
