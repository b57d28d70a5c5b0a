"""`observatory dataset ingest` against a stand-in Commons, the registered version in the database and the archive,
and the public dataset API."""

from __future__ import annotations

import hashlib
import json

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from observatory.cli import app
from service.config import get_settings
from service.db import get_engine
from tests.test_commons_ingest import commons  # noqa: F401  (the stand-in Commons)
from web.app import create_app


@pytest.fixture
def embedded(tmp_path, monkeypatch, commons):  # noqa: F811
    fake, url, script = commons
    monkeypatch.setenv("OBSERVATORY_VAR_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("OBSERVATORY_COMMONS_API_URL", url)
    monkeypatch.setenv("OBSERVATORY_COMMONS_MIN_INTERVAL_S", "0")
    monkeypatch.delenv("OBSERVATORY_COMMONS_CONTACT", raising=False)
    get_settings.cache_clear()
    get_engine.cache_clear()
    yield tmp_path, fake, script
    get_settings.cache_clear()
    get_engine.cache_clear()


ARGS = ["dataset", "ingest", "--name", "commons-test", "--category", "Test images", "--resolution", "32",
        "--contact", "ops@observatory.example"]


def test_ingest_registers_a_version_once_and_the_api_serves_it(embedded) -> None:
    tmp_path, fake, script = embedded
    blocklist = tmp_path / "names.txt"
    blocklist.write_text("Edvard Munch\n\n")
    runner = CliRunner()
    made = runner.invoke(app, [*ARGS, "--blocklist", str(blocklist)])
    assert made.exit_code == 0, made.output
    assert "registered commons-test@1 (sha256:" in made.output
    assert "5 images (CC BY-SA 3.0 de 1, CC BY-SA 4.0 2, Public domain 2); 5 left out, 2 duplicates" in made.output
    assert script.headers[0]["User-Agent"].endswith("(ops@observatory.example)")
    fetched = sum(fake.fetches.values())
    again = runner.invoke(app, [*ARGS, "--blocklist", str(blocklist)])
    assert again.exit_code == 0 and "already registered as commons-test@1" in again.output
    assert sum(fake.fetches.values()) == fetched  # resumed from the work folder: nothing downloaded again
    listed = runner.invoke(app, ["dataset", "list"])
    assert "commons-test@1" in listed.output and "Wikimedia Commons" in listed.output

    with TestClient(create_app(get_settings())) as client:
        shown = client.get("/api/datasets/commons-test@1").json()
        assert shown["images"] == 5 and shown["origin"] == "Wikimedia Commons"
        assert shown["licenses"] == {"CC BY-SA 3.0 de": 1, "CC BY-SA 4.0": 2, "Public domain": 2}
        assert client.get("/api/datasets/commons-test").json()["digest"] == shown["digest"]
        assert client.get(f"/api/datasets/{shown['digest']}").json()["ref"] == "commons-test@1"
        files = {f["name"]: f for f in shown["files"]}
        assert {"manifest.jsonl", "attribution.txt", "shard-00000.tar", "rejected.jsonl"} <= set(files)
        manifest = client.get(files["manifest.jsonl"]["url"])
        assert manifest.status_code == 200 and hashlib.sha256(manifest.content).hexdigest() == \
            files["manifest.jsonl"]["sha256"]
        assert len(manifest.text.splitlines()) == 5 and json.loads(manifest.text.splitlines()[0])["license"]
        assert manifest.headers["content-security-policy"] == "default-src 'none'; sandbox"
        assert manifest.headers["x-content-sha256"] == files["manifest.jsonl"]["sha256"]
        part = client.get(files["shard-00000.tar"]["url"], headers={"Range": "bytes=0-99"})
        assert part.status_code == 206 and len(part.content) == 100
        assert client.get("/api/datasets/commons-test@2").status_code == 404
        assert client.get("/api/datasets/commons-test@1/files/state.jsonl").status_code == 404
        assert client.get("/api/datasets/Bad Name").status_code == 422
        assert [d["ref"] for d in client.get("/api/datasets").json()] == ["commons-test@1"]


@pytest.mark.parametrize(("extra", "message"), [
    (["--search", "trees"], "exactly one source"),
    (["--license", "gfdl"], "gfdl is not one of"),
    (["--blocklist", "/nonexistent/names.txt"], "no file"),
])
def test_ingest_says_what_is_wrong(embedded, extra, message) -> None:
    result = CliRunner().invoke(app, [*ARGS, *extra])
    assert result.exit_code == 2 and message in result.output


def test_ingest_needs_a_contact_and_a_proper_name(embedded) -> None:
    runner = CliRunner()
    no_contact = runner.invoke(app, ["dataset", "ingest", "--name", "x", "--category", "Trees"])
    assert no_contact.exit_code == 2 and "how Wikimedia can reach you" in no_contact.output
    bad = runner.invoke(app, ["dataset", "ingest", "--name", "Bad Name", "--category", "Trees", "--contact", "a@b.c"])
    assert bad.exit_code == 2 and "not a dataset name" in bad.output
    other = runner.invoke(app, [*ARGS, "--resolution", "48"])
    assert other.exit_code == 0
    work = str(embedded[0] / "var/ingest/commons-test")
    clash = runner.invoke(app, [*ARGS[:-4], "--resolution", "32", "--work", work, "--contact", "a@b.c"])
    assert clash.exit_code == 2 and "other options" in clash.output


def test_the_bundled_set_is_registered_once_and_its_files_put_back_where_missing(lite_session, lite_settings,
                                                                                 tmp_path) -> None:
    from service.archive.service import store_for
    from service.datasets.service import ensure_bundled, listing

    first = ensure_bundled(lite_session, store_for(lite_settings))  # the fixture registered it already
    assert [f"{v.name}@{v.version}" for v in listing(lite_session)] == ["skimage-samples@1"]
    moved = store_for(lite_settings.model_copy(update={"var_dir": tmp_path / "elsewhere"}))
    assert not any(moved.exists(f["sha256"]) for f in first.files.values())
    again = ensure_bundled(lite_session, moved)
    assert again.id == first.id and all(moved.exists(f["sha256"]) for f in again.files.values())
    assert first.origin == "scikit-image sample images" and first.images == 12


def test_withdrawals_check_asks_commons_which_files_are_gone_and_records_them(embedded, monkeypatch) -> None:
    """`observatory dataset withdrawals check`: the dataset's page ids asked of Commons in batches; the deleted ones
    named, and with --record withdrawn (reason: deleted), once."""
    from sqlmodel import Session, select

    from service.archive.service import store_for
    from service.datasets.partitions import manifest_records
    from service.datasets.service import find
    from service.db import make_engine
    from service.models import Withdrawal
    from tests.commons_server import commons_api

    runner = CliRunner()
    assert runner.invoke(app, ARGS).exit_code == 0
    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        records = manifest_records(store_for(settings), find(session, "commons-test@1"))
    ids = [int(r["page_id"]) for r in records]
    gone = set(ids[:2])

    def answer(params: dict[str, str]):  # type: ignore[no-untyped-def]
        asked = [int(i) for i in params["pageids"].split("|")]
        pages = {str(i): ({"pageid": i, "missing": ""} if i in gone else {"pageid": i, "ns": 6, "title": f"File:{i}"})
                 for i in asked}
        return 200, {}, {"batchcomplete": "", "query": {"pages": pages}}

    with commons_api(answer) as (url, script):
        monkeypatch.setenv("OBSERVATORY_COMMONS_API_URL", url)
        get_settings.cache_clear()
        looked = runner.invoke(app, ["dataset", "withdrawals", "check", "commons-test@1", "--contact", "ops@x.org"])
        assert looked.exit_code == 0, looked.output
        assert f"2 of {len(ids)} files of commons-test@1 are gone from Commons" in " ".join(looked.output.split())
        assert sorted(int(i) for i in script.requests[0]["pageids"].split("|")) == sorted(ids)
        for _ in range(2):
            recorded = runner.invoke(app, ["dataset", "withdrawals", "check", "commons-test", "--record",
                                           "--contact", "ops@x.org"])
            assert recorded.exit_code == 0, recorded.output
    with Session(engine) as session:
        found = session.exec(select(Withdrawal)).all()
        assert {w.page_id for w in found} == gone and {str(w.reason) for w in found} == {"deleted"}
    engine.dispose()
    refused = runner.invoke(app, ["dataset", "withdrawals", "check", "nothing@1", "--contact", "ops@x.org"])
    assert refused.exit_code == 2 and "no dataset version" in refused.output
