"""The CLI: clear errors, no tracebacks; accounts and migrations from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlmodel import Session, select
from typer.testing import CliRunner

from observatory.cli import app
from service.config import get_settings
from service.db import get_engine, make_engine
from service.models import Proposal, ReviewAssignment, User


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
    # Its jobs' work folders are its own; its pool takes an owner's machine on this host.
    assert settings.head_node_dir == embedded / "demo" / "node" and settings.ray_accept_workers
    with pytest.raises(ValueError, match="only a demo folder"):
        reset(configured)
    reset(settings)
    proposal_id, run_id = seed(settings, steps=5)
    engine = make_engine(settings.resolved_database_url)
    with Session(engine) as session:
        assert {r for u in session.exec(select(User)) for r in u.roles} == {"admin", "researcher", "reviewer",
                                                                            "owner"}
        # A call under review that a newcomer can click through: four proposals, three reviewers each, and the
        # reviewer who shares the PI's institution kept off her proposal.
        under_review = session.exec(select(Proposal).where(Proposal.state == "under_review")).all()
        assert len(under_review) == 4
        for proposal in under_review:
            reviewers = [session.get(User, a.reviewer_id) for a in session.exec(
                select(ReviewAssignment).where(ReviewAssignment.proposal_id == proposal.id))]
            pi = session.get(User, proposal.pi_id)
            assert len(reviewers) == 3 and pi.institution not in {r.institution for r in reviewers}
        assert session.get(Proposal, proposal_id).state == "accepted"
    engine.dispose()
    reset(settings)
    assert (proposal_id, run_id) == (1, 1) and not (embedded / "demo" / "observatory.db").exists()


def test_pool_join_says_what_is_wrong(monkeypatch, lite_settings, lite_engine, lite_session) -> None:
    """No token, a bad token, or an unapproved machine: a clear error naming the problem, no traceback."""
    from service.models import Role
    from tests.factories import create_machine, create_user
    from tests.live import live_server

    runner = CliRunner()
    monkeypatch.delenv("OBSERVATORY_MACHINE_TOKEN", raising=False)
    missing = runner.invoke(app, ["pool", "join", "http://127.0.0.1:9"])
    assert missing.exit_code == 2 and "no machine token" in missing.output
    admin, owner = create_user(lite_session, Role.admin), create_user(lite_session)
    machine, token = create_machine(lite_session, owner, admin)
    from service.pool import machines

    machines.revoke(lite_session, admin, machine.id, message="it kept failing jobs")
    lite_session.commit()
    with live_server(lite_settings, lite_engine) as url:
        for given, expected in (("mc_wrong", "this machine token is not valid"),
                                (token, "is revoked: it kept failing jobs")):
            result = runner.invoke(app, ["pool", "join", url], env={"OBSERVATORY_MACHINE_TOKEN": given})
            assert result.exit_code == 2 and expected in " ".join(result.output.split()), result.output
            assert "Traceback" not in result.output
    unreachable = runner.invoke(app, ["pool", "join", "http://127.0.0.1:9"], env={"OBSERVATORY_MACHINE_TOKEN": token})
    assert unreachable.exit_code == 2 and "cannot reach the portal" in unreachable.output


def test_the_measurement_reads_every_card() -> None:
    from types import SimpleNamespace

    from observatory.hardware import measure

    cards = [SimpleNamespace(name="NVIDIA GeForce RTX 3090", total_memory=24 * 2**30, major=8, minor=6),
             SimpleNamespace(name="NVIDIA GeForce RTX 3090", total_memory=int(23.5 * 2**30), major=8, minor=6)]
    found = measure(cards)
    assert (found["gpu_model"], found["gpu_count"], found["vram_gb"], found["cuda_capability"]) == (
        "NVIDIA GeForce RTX 3090", 2, 23.5, "8.6")
    cpu_only = measure([])
    assert cpu_only["gpu_count"] == 0 and "gpu_model" not in cpu_only and cpu_only["cpus"] >= 1


def test_user_list_and_password_reset(embedded) -> None:
    runner = CliRunner()
    for email, role in (("chair@example.org", "admin"), ("rosa@example.org", "researcher")):
        added = runner.invoke(app, ["user", "add", email, "--role", role, "--role", "reviewer",
                                    "--password", "amber kettle orbit"])
        assert added.exit_code == 0, added.output
    listed = runner.invoke(app, ["user", "list"])
    assert listed.exit_code == 0
    assert "chair@example.org" in listed.output and "admin, reviewer" in listed.output
    assert "researcher, reviewer" in listed.output
    from service.auth.service import authenticate, issue_token, user_for_token
    from service.db import session_scope

    with session_scope() as session:
        user = authenticate(session, email="rosa@example.org", password="amber kettle orbit")
        token = issue_token(session, user=user)
    reset = runner.invoke(app, ["user", "password", "rosa@example.org", "--password", "violet harbour lantern"])
    assert reset.exit_code == 0 and "signed out" in reset.output
    with session_scope() as session:
        assert user_for_token(session, token) is None  # the old token no longer works
        assert authenticate(session, email="rosa@example.org", password="violet harbour lantern").id == user.id
    missing = runner.invoke(app, ["user", "password", "nobody@example.org", "--password", "violet harbour lantern"])
    assert missing.exit_code == 2 and "no account for nobody@example.org" in missing.output
    weak = runner.invoke(app, ["user", "password", "rosa@example.org", "--password", "short"])
    assert weak.exit_code == 2 and "at least 10 characters" in weak.output
    roles = runner.invoke(app, ["user", "roles", "rosa@example.org", "--role", "researcher"])
    assert roles.exit_code == 0 and "now holds: researcher" in roles.output
    assert runner.invoke(app, ["user", "roles", "nobody@example.org", "--role", "reviewer"]).exit_code == 2
    from service.models import AuditEntry

    with session_scope() as session:
        entry = session.exec(select(AuditEntry).where(AuditEntry.action == "role.set")).all()[-1]
        assert entry.detail["after"] == ["researcher"] and entry.detail["before"] == ["researcher", "reviewer"]


def test_both_migration_commands_take_the_revision_the_same_way(embedded) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade", "0004"]).exit_code == 0
    assert runner.invoke(app, ["db", "downgrade", "0003"]).exit_code == 0
    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 0 and "database at head" in upgraded.output
    assert "OBSERVATORY_DATABASE_URL" in runner.invoke(app, ["serve", "--help"]).output


def test_help_reads_plainly() -> None:
    """Flags read as --api / --no-api, with no type column and no default named after the flag."""
    shown = CliRunner().invoke(app, ["serve", "--help"]).output
    assert "--api / --no-api" in shown and "<bool>" not in shown and "[default: api]" not in shown


def test_the_planted_copy_demonstration_writes_its_reports(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "planted"
    done = runner.invoke(app, ["analysis", "planted", "--out", str(out), "--distinct", "10", "--planted", "2",
                               "--copies", "5", "--steps", "3", "--samples", "6", "--side", "8"])
    assert done.exit_code == 0, done.output
    assert "planted pictures regenerated:" in done.output and "extraction attack:" in done.output
    for name in ("replication", "extraction"):
        assert (out / name / "report.html").is_file() and str((out / name / "report.html").resolve()) in done.output
    again = runner.invoke(app, ["analysis", "planted", "--out", str(out)])
    assert again.exit_code == 2 and "is not empty" in again.output  # nothing written over


def test_the_planted_copy_demonstration_cuts_natural_pictures_from_photographs(tmp_path: Path) -> None:
    runner = CliRunner()
    photos = Path(__file__).resolve().parent / "data" / "photos"
    out = tmp_path / "natural"
    done = runner.invoke(app, ["analysis", "planted", "--out", str(out), "--distinct", "10", "--planted", "2",
                               "--copies", "4", "--steps", "2", "--samples", "4", "--side", "8", "--pictures",
                               str(photos), "--variants", "0.5"])
    assert done.exit_code == 0, done.output
    records = [json.loads(line) for line in (out / "package" / "manifest.jsonl").read_text().splitlines()]
    assert {r["author"] for r in records} <= {"NASA", "Stefan van der Walt", "Rachel Michetti", "SpaceX",
                                              "Brooklyn Museum", "Lav Varshney"}
    assert sum(", nudged" in r["title"] or ", shifted" in r["title"] for r in records) == 4  # half of 2 x 4 copies
    for wrong, said in (("nowhere", "name blocks, a folder of images, or a dataset version"),
                        ("nothing@3", "no dataset version")):
        refused = runner.invoke(app, ["analysis", "planted", "--out", str(tmp_path / wrong), "--pictures", wrong])
        assert refused.exit_code == 2 and f"--pictures {wrong}: " in refused.output and said in refused.output


def test_rotate_token_gives_the_embedded_pool_a_new_one_that_its_running_head_takes_up(embedded, monkeypatch) -> None:
    """`observatory pool rotate-token` replaces the embedded pool's token (private from creation); the running
    serve notices on its next tick and starts its head again with it. A token from the environment is refused."""
    import subprocess
    from types import SimpleNamespace

    from observatory import runtime
    from scheduler.local_ray import RayNode

    monkeypatch.delenv("OBSERVATORY_RAY_AUTH_TOKEN", raising=False)
    settings = get_settings()
    before = settings.resolved_ray_auth_token()
    process = subprocess.Popen(["sleep", "60"])  # a head that is alive
    head = RayNode(process, embedded, embedded / "head.log", "127.0.0.1:1", "http://127.0.0.1:2", before)
    started: list[str] = []

    def fake_open(given):  # type: ignore[no-untyped-def]
        started.append(given.resolved_ray_auth_token())
        return runtime.Pool(SimpleNamespace(token=started[-1]), head, given)

    monkeypatch.setattr(runtime, "open_pool", fake_open)
    monkeypatch.setattr(RayNode, "stop", lambda self, timeout=3: process.kill())
    pool = runtime.Pool(SimpleNamespace(token=before), head, settings)
    try:
        assert pool.ensure_alive() is None  # same token, head alive: nothing to do
        rotated = CliRunner().invoke(app, ["pool", "rotate-token"])
        assert rotated.exit_code == 0, rotated.output
        path = settings.ray_dir / "auth_token"
        after = path.read_text().strip()
        assert after != before and len(after) == 64 and path.stat().st_mode & 0o777 == 0o600
        assert not path.with_name("auth_token.new").exists()
        backend = pool.ensure_alive()
        assert backend is not None and started == [after]  and backend.token == after
    finally:
        process.kill()
    monkeypatch.setenv("OBSERVATORY_RAY_AUTH_TOKEN", "from-the-environment")
    get_settings.cache_clear()
    refused = CliRunner().invoke(app, ["pool", "rotate-token"])
    assert refused.exit_code == 2 and "OBSERVATORY_RAY_AUTH_TOKEN" in refused.output


def test_a_dataset_is_partitioned_once_per_clusters_and_seed_and_the_partition_outlives_the_sweep(embedded) -> None:
    from observatory.cli import register_bundled
    from service.archive.service import store_for
    from service.archive.sweep import sweep
    from service.datasets import partitions
    from service.datasets.service import find
    from service.models import DatasetPartition

    settings = get_settings()
    runner = CliRunner()
    assert runner.invoke(app, ["db", "upgrade"]).exit_code == 0
    register_bundled(settings)
    made = runner.invoke(app, ["dataset", "partition", "skimage-samples", "--clusters", "3", "--seed", "5"])
    assert made.exit_code == 0, made.output
    again = runner.invoke(app, ["dataset", "partition", "skimage-samples@1", "--clusters", "3", "--seed", "5"])
    engine = make_engine(settings.resolved_database_url)
    store = store_for(settings)
    with Session(engine) as session:
        (found,) = session.exec(select(DatasetPartition)).all()
        version = find(session, "skimage-samples")
        assert found.dataset_id == version.id and (found.k, found.seed) == (3, 5)
        assert found.digest in made.output and found.digest in again.output
        assert sum(found.sizes) == version.images and max(found.sizes) - min(found.sizes) <= 1
        assert [sum(c.values()) for c in found.licenses] == found.sizes
        members = [partitions.cluster_records(store, version, found, c) for c in range(3)]
        assert [len(m) for m in members] == found.sizes
        assert {r["image_sha256"] for m in members for r in m} == {
            r["image_sha256"] for r in partitions.manifest_records(store, version)}
        sweep(session, store, grace_s=0)
        assert store.exists(found.file_sha256)
    engine.dispose()
    for wrong, says in ((["nothing@1", "--clusters", "2"], "no dataset version"),
                        (["skimage-samples", "--clusters", "64"], "into 64 clusters")):
        refused = runner.invoke(app, ["dataset", "partition", *wrong])
        assert refused.exit_code == 2 and says in refused.output, refused.output


def test_reading_an_empty_folder_makes_no_database(embedded) -> None:
    result = CliRunner().invoke(app, ["user", "list"])
    assert result.exit_code != 0 and "no observatory here yet" in result.output
    assert not (embedded / "observatory.db").exists()


@pytest.mark.parametrize("group", [[], ["dataset"], ["analysis"], ["user"], ["pool"], ["db"], ["archive"]])
def test_the_command_lists_cut_no_description(group: list[str]) -> None:
    shown = CliRunner().invoke(app, [*group, "--help"], terminal_width=80)
    assert shown.exit_code == 0, shown.output
    listed = shown.output.split("Commands:", 1)[1].splitlines()
    assert listed and not [line for line in listed if line.rstrip().endswith("...")], shown.output
