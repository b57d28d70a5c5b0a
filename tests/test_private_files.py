"""Secrets, the database and the archive are readable by the observatory's own user alone, from the moment each
file exists (not made readable and then narrowed), whatever the umask."""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.archive.store import LocalStore
from service.config import Settings
from service.db import make_engine


@pytest.fixture(autouse=True)
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)  # the common default, which leaves new files world-readable
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_private_from_creation(tmp_path: Path, monkeypatch) -> None:
    modes: list[int] = []
    real_open = os.open

    def watching_open(path, flags, mode=0o777, *args, **kwargs):
        if flags & os.O_CREAT:
            modes.append(mode)
        return real_open(path, flags, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", watching_open)
    key = Settings(var_dir=tmp_path / "var").resolved_secret_key()
    token = Settings(var_dir=tmp_path / "var").resolved_ray_auth_token()
    monkeypatch.undo()
    assert modes == [0o600, 0o600]  # created with the private mode, never widened and narrowed
    assert _mode(tmp_path / "var" / "secret_key") == 0o600 and _mode(tmp_path / "var" / "ray" / "auth_token") == 0o600
    assert key == Settings(var_dir=tmp_path / "var").resolved_secret_key() and len(token) == 64


def test_the_sqlite_database_is_private(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'var' / 'observatory.db'}")
    with engine.connect() as connection:
        connection.exec_driver_sql("create table t (x int)")
    engine.dispose()
    assert _mode(tmp_path / "var" / "observatory.db") == 0o600
    assert _mode(tmp_path / "var") == 0o700


def test_archive_objects_are_private(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "archive")
    sha, size = store.put(io.BytesIO(b"weights"))
    assert size == 7 and store.exists(sha)
    path = store.path(sha)
    assert _mode(path) == 0o600 and _mode(path.parent) == 0o700 and _mode(tmp_path / "archive" / "objects") == 0o700
    assert list((tmp_path / "archive" / "incoming").iterdir()) == []


def test_the_cli_makes_everything_private(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from observatory.cli import app

    monkeypatch.setenv("OBSERVATORY_VAR_DIR", str(tmp_path / "var"))
    from service.config import get_settings

    get_settings.cache_clear()
    try:
        assert CliRunner().invoke(app, ["db", "upgrade"]).exit_code == 0
        assert os.umask(0o077) == 0o077  # the CLI set it for everything it writes
    finally:
        get_settings.cache_clear()
    assert _mode(tmp_path / "var" / "observatory.db") == 0o600
