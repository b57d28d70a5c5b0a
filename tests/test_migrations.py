"""The Alembic history: upgrades and downgrades cleanly, and matches the models exactly."""

from __future__ import annotations

import pytest
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


def test_usage_charged_before_the_ledger_moves_into_it(db_url: str) -> None:
    """Awards and the GPU-seconds runs were charged before 0004 become ledger entries: no usage is lost."""
    from sqlalchemy import text

    engine = make_engine(db_url)
    try:
        downgrade(db_url, "0003")
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO users (id, email, name, role, password_hash, created_at, email_verified) "
                "VALUES (1, 'a@x.org', 'A', 'admin', NULL, CURRENT_TIMESTAMP, false)"))
            connection.execute(text(
                "INSERT INTO calls (id, title, description, opens_at, closes_at, capacity_gpu_hours, "
                "exclusive_months, created_by, created_at) VALUES (1, 'C', '', CURRENT_TIMESTAMP, "
                "CURRENT_TIMESTAMP, 10, 12, 1, CURRENT_TIMESTAMP)"))
            connection.execute(text(
                "INSERT INTO proposals (id, call_id, pi_id, title, abstract, justification, requested_gpu_hours, "
                "job_kind, job_plan, state, created_at, updated_at) VALUES (1, 1, 1, 'P', 'a', 'j', 2, 'train', "
                "'{}', 'awarded', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            connection.execute(text(
                "INSERT INTO awards (id, proposal_id, gpu_hours, awarded_by, awarded_at, exclusive_until) "
                "VALUES (1, 1, 1.5, 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            connection.execute(text(
                "INSERT INTO runs (id, award_id, proposal_id, job_kind, job_plan, state, progress, progress_detail, "
                "message, gpus, gpu_seconds, key, attempt, cancel_requested, created_at) VALUES (1, 1, 1, 'train', "
                "'{}', 'succeeded', 1, '{}', '', 1, 123.6, 'abc', 1, false, CURRENT_TIMESTAMP)"))
        upgrade(db_url)
        with engine.connect() as connection:
            entries = connection.execute(text(
                "SELECT kind, amount, key, run_id FROM ledger_entries ORDER BY id")).fetchall()
        assert [tuple(e) for e in entries] == [("credit", 5400, "award:1", None),
                                               ("debit", -124, "debit:run-1:before-ledger", 1)]
    finally:
        engine.dispose()


def test_calls_get_cycles_awarded_becomes_accepted_and_plans_name_the_renamed_set(db_url: str) -> None:
    """0006 gives each existing call a cycle of its own and makes awarded proposals accepted; 0008 renames the
    bundled set in stored plans. Nothing is lost either way."""
    import json

    from sqlalchemy import text

    engine = make_engine(db_url)
    try:
        downgrade(db_url, "0005")
        with engine.begin() as connection:
            connection.execute(text(
                "INSERT INTO users (id, email, name, roles, password_hash, created_at, email_verified) "
                "VALUES (1, 'a@x.org', 'A', '[\"admin\"]', NULL, CURRENT_TIMESTAMP, false)"))
            connection.execute(text(
                "INSERT INTO calls (id, title, description, opens_at, closes_at, capacity_gpu_hours, "
                "exclusive_months, created_by, created_at) VALUES (7, 'Old call', '', CURRENT_TIMESTAMP, "
                "CURRENT_TIMESTAMP, 25, 12, 1, CURRENT_TIMESTAMP)"))
            connection.execute(text(
                "INSERT INTO proposals (id, call_id, pi_id, title, abstract, justification, requested_gpu_hours, "
                "job_kind, job_plan, state, created_at, updated_at) VALUES (1, 7, 1, 'P', 'a', 'j', 2, 'train', "
                "'{\"kind\": \"train\", \"dataset\": \"commons-mini\", \"steps\": 5}', 'awarded', CURRENT_TIMESTAMP, "
                "CURRENT_TIMESTAMP)"))
        upgrade(db_url)
        with engine.connect() as connection:
            call = connection.execute(text(
                "SELECT c.kind, c.dual_anonymous, y.name, y.capacity_gpu_hours, y.director_reserve_gpu_hours "
                "FROM calls c JOIN cycles y ON y.id = c.cycle_id WHERE c.id = 7")).one()
            proposal = connection.execute(text("SELECT state, job_plan FROM proposals WHERE id = 1")).one()
        assert tuple(call)[0] == "regular" and bool(call[1]) and tuple(call)[2:] == ("Old call", 25, 0)
        plan = proposal[1] if isinstance(proposal[1], dict) else json.loads(proposal[1])
        assert proposal[0] == "accepted" and plan == {"kind": "train", "dataset": "skimage-samples", "steps": 5}
        downgrade(db_url, "0005")
        with engine.connect() as connection:
            back = connection.execute(text("SELECT state, job_plan FROM proposals WHERE id = 1")).one()
        plan = back[1] if isinstance(back[1], dict) else json.loads(back[1])
        assert back[0] == "awarded" and plan["dataset"] == "commons-mini"
        upgrade(db_url)
    finally:
        engine.dispose()


def test_the_audit_log_is_append_only_in_the_database(engine, session) -> None:
    """Not by convention alone: the database refuses to change or remove an audit entry, whoever asks."""
    from sqlalchemy import delete, update
    from sqlalchemy.exc import DBAPIError

    from service.audit.service import record
    from service.models import AuditEntry

    entry = record(session, None, "test.append_only", "nothing", detail="kept")
    session.commit()
    for statement in (update(AuditEntry).where(AuditEntry.id == entry.id).values(action="rewritten"),
                      delete(AuditEntry).where(AuditEntry.id == entry.id)):
        with pytest.raises(DBAPIError, match="append-only"):
            session.execute(statement)
            session.flush()
        session.rollback()
    assert session.get(AuditEntry, entry.id, populate_existing=True).action == "test.append_only"
