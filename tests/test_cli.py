"""The CLI: clear errors, no tracebacks; accounts and migrations from the command line."""

from __future__ import annotations

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from observatory.cli import app
from service.config import get_settings
from service.db import get_engine, make_engine
from service.models import User


@pytest.fixture
def embedded(tmp_path, monkeypatch):
    monkeypatch.setenv("OBSERVATORY_VAR_DIR", str(tmp_path / "var"))
    get_settings.cache_clear()
    get_engine.cache_clear()
    yield tmp_path / "var"
    get_settings.cache_clear()
    get_engine.cache_clear()


def test_db_upgrade_and_user_add(embedded) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    added = runner.invoke(app, ["user", "add", "Chair@Example.org", "--name", "Chair", "--role", "admin",
                                "--password", "amber kettle orbit"])
    assert added.exit_code == 0, added.output
    engine = make_engine(f"sqlite:///{embedded / 'observatory.db'}")
    with Session(engine) as session:
        user = session.exec(select(User)).one()
        assert (user.email, user.roles) == ("chair@example.org", ["admin"])
    engine.dispose()

    again = runner.invoke(app, ["user", "add", "chair@example.org", "--password", "amber kettle orbit"])
    assert again.exit_code == 2 and "already exists" in again.output and "Traceback" not in again.output
    short = runner.invoke(app, ["user", "add", "x@example.org", "--password", "short"])
    assert short.exit_code == 2 and "at least 10 characters" in short.output
    bad_role = runner.invoke(app, ["user", "add", "y@example.org", "--role", "wizard",
                                   "--password", "amber kettle orbit"])
    assert bad_role.exit_code == 2 and "wizard" in bad_role.output


def test_serve_needs_something_to_run(embedded) -> None:
    result = CliRunner().invoke(app, ["serve", "--no-api", "--no-scheduler"])
    assert result.exit_code == 2 and "nothing to run" in result.output


def test_demo_keeps_to_its_own_folder(embedded, monkeypatch) -> None:
    from observatory.demo import demo_settings, reset, seed
    from service.config import Settings

    configured = Settings(var_dir=embedded, database_url="postgresql://elsewhere/prod", archive_dir="/srv/archive")
    settings = demo_settings(configured)
    assert settings.var_dir == embedded / "demo" and settings.database_url is None
    assert settings.resolved_archive_dir == embedded / "demo" / "archive"
    with pytest.raises(ValueError, match="only a demo folder"):
        reset(configured)
    reset(settings)
    proposal_id, run_id = seed(settings, steps=5)
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        assert {r for u in session.exec(select(User)) for r in u.roles} == {"admin", "researcher", "reviewer"}
    engine.dispose()
    reset(settings)
    assert (proposal_id, run_id) == (1, 1) and not (embedded / "demo" / "observatory.db").exists()
