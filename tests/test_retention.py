"""Retention and quotas: a finished run's older intermediate checkpoints go after a set time (a dry run lists
exactly what the real run removes; what a version or an analysis points to stays), on the local store and on S3;
storage per proposal is counted, and a run that would pass the call's quota waits before it is placed."""

from __future__ import annotations

import io
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from scheduler.loop import Scheduler
from scheduler.placement import VramCache, read_facts
from service.archive import retention, storage
from service.archive.service import store_for
from service.archive.store import ArchiveStore
from service.config import Settings
from service.models import AuditEntry, ModelVersion, Proposal, Role, Run, RunAttempt, RunState, User
from service.timeutil import utcnow
from tests.factories import (
    TINY_TRAIN,
    archive_outputs,
    auth_headers,
    award,
    create_call,
    create_proposal,
    create_user,
)
from tests.pools import ScriptedPool, current_run
from tests.s3 import s3_server

STEPS = (50, 100, 150, 200, 300, 400)


@pytest.fixture(params=["local", "s3"])
def archive(request, lite_settings: Settings) -> Iterator[tuple[Settings, ArchiveStore]]:
    if request.param == "local":
        yield lite_settings, store_for(lite_settings)
        return
    with s3_server() as s3:
        settings = lite_settings.model_copy(update=s3)
        yield settings, store_for(settings)


def _trained(session: Session, settings: Settings, store: ArchiveStore, admin: User, *, days_ago: float,
             steps: tuple[int, ...] = STEPS) -> tuple[Run, dict[int, str]]:
    """A finished train run whose attempts shipped one state each at `steps` (the node was lost each time)."""
    proposal = create_proposal(session, create_user(session), create_call(session, admin), job_plan=dict(TINY_TRAIN))
    _, run = award(session, admin, proposal)
    run = session.get(Run, run.id)
    states = {}
    for number, step in enumerate(steps, start=1):
        sha, size = store.put(io.BytesIO(f"state of run {run.id} at step {step}".encode() * step))
        states[step] = sha
        session.add(RunAttempt(run_id=run.id, number=number, pool="test", submission_id=f"r{run.id}-{number}",
                               token_hash=f"{run.id}-{number}".ljust(64, "0"), state="lost",
                               checkpoint_sha256=sha, checkpoint_step=step, checkpoint_size=size,
                               resume_sha256=states.get(steps[number - 2]) if number > 1 else None))
    run.state, run.finished_at = RunState.succeeded, utcnow() - timedelta(days=days_ago)
    run.resume_sha256, run.resume_step = states[steps[-1]], steps[-1]
    session.add(run)
    archive_outputs(session, settings, run, {"checkpoint.pt": b"final weights", "metrics.json": b"{}"})
    session.commit()
    return run, states


def test_a_dry_run_lists_what_the_real_run_removes_and_what_is_pointed_to_stays(
        lite_session: Session, archive: tuple[Settings, ArchiveStore]) -> None:
    settings, store = archive
    admin = create_user(lite_session, Role.admin)
    old, states = _trained(lite_session, settings, store, admin, days_ago=40)
    recent, recent_states = _trained(lite_session, settings, store, admin, days_ago=5)
    # A version registered from the state at step 100, and an analysis of the state at step 200, point to them.
    lite_session.add(ModelVersion(name="mid-training", version=1, run_id=old.id, checkpoint_sha256=states[100],
                                  attribution_sha256="a" * 64, dataset="skimage-samples@1", dataset_digest="",
                                  images=0, steps=100, gpu_seconds=0, created_by=admin.id))
    analysis_proposal = create_proposal(lite_session, create_user(lite_session), create_call(lite_session, admin))
    _, analysis = award(lite_session, admin, analysis_proposal)
    analysis = lite_session.get(Run, analysis.id)
    analysis.job_plan = {**analysis.job_plan, "checkpoint_sha256": states[200]}
    lite_session.add(analysis)
    lite_session.commit()
    used_before = storage.used_bytes(lite_session, old.proposal_id)

    listed = retention.prune(lite_session, store, keep=2, after_days=30, dry_run=True)
    assert [(p.run_id, p.step) for p in listed] == [(old.id, 150), (old.id, 50)]
    assert all(store.exists(sha) for sha in [*states.values(), *recent_states.values()])  # nothing deleted
    assert lite_session.exec(select(AuditEntry).where(AuditEntry.action == "archive.prune")).first() is None

    removed = retention.prune(lite_session, store, keep=2, after_days=30, dry_run=False)
    assert removed == listed  # exactly what the dry run said
    gone = {states[50], states[150]}
    assert not any(store.exists(sha) for sha in gone)
    assert all(store.exists(sha) for step, sha in states.items() if step not in (50, 150))  # 100, 200, 300, 400
    assert all(store.exists(sha) for sha in recent_states.values())  # finished 5 days ago: untouched
    lite_session.expire_all()
    shipped = lite_session.exec(select(RunAttempt.checkpoint_sha256).where(RunAttempt.run_id == old.id)).all()
    assert not gone & set(shipped) and sum(sha is not None for sha in shipped) == 4
    entry = lite_session.exec(select(AuditEntry).where(AuditEntry.action == "archive.prune")).one()
    assert entry.subject == f"run:{old.id}" and [r["step"] for r in entry.detail["removed"]] == [150, 50]
    assert storage.used_bytes(lite_session, old.proposal_id) == used_before - sum(p.size for p in removed)
    assert retention.prune(lite_session, store, keep=2, after_days=30, dry_run=False) == []  # nothing more


def test_a_run_that_would_pass_the_quota_waits_before_it_is_placed(
        lite_client: TestClient, lite_session: Session, lite_settings: Settings, lite_engine) -> None:  # noqa: ANN001
    admin = create_user(lite_session, Role.admin)
    call = create_call(lite_session, admin, storage_quota_gb=0.000_5)  # 500 kB per proposal
    pi = create_user(lite_session)
    proposal = create_proposal(lite_session, pi, call, job_plan={**TINY_TRAIN, "block_out_channels": [64, 128]})
    _, run = award(lite_session, admin, proposal)
    expected = storage.expected_bytes(lite_session.get(Run, run.id))
    assert expected > 500_000  # a checkpoint of 64 and 128 channels, and a resumable state, do not fit
    # Another proposal's run (no quota) is placed and holds a node while this one is considered.
    _, other = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                          create_call(lite_session, admin)))
    pool = ScriptedPool()
    assert Scheduler(lite_engine, lite_settings, pool).dispatch() == 1 and len(pool.requests) == 1
    assert current_run(lite_engine, run.id).message.startswith("waiting: the proposal's archive storage would pass")
    facts = read_facts(lite_session, lite_settings, pool.nodes(), VramCache())
    assert run.id not in {q.run_id for q in facts.queue}
    assert "would pass its quota (0 bytes used of 500 kB" in facts.held[run.id]
    # An admin raises the quota: the run is placeable again.
    raised = lite_client.put(f"/api/calls/{call.id}/storage-quota", json={"storage_quota_gb": 1},
                             headers=auth_headers(lite_session, admin))
    assert raised.status_code == 200 and raised.json()["storage_quota_gb"] == 1
    lite_session.expire_all()
    facts = read_facts(lite_session, lite_settings, pool.nodes(), VramCache())
    assert run.id in {q.run_id for q in facts.queue} and not facts.held
    bad = lite_client.put(f"/api/calls/{call.id}/storage-quota", json={"storage_quota_gb": -1},
                          headers=auth_headers(lite_session, admin))
    assert bad.status_code == 422


def test_storage_is_counted_on_the_run_and_proposal_pages_and_a_follow_up_past_it_is_refused(
        lite_client: TestClient, lite_session: Session, lite_settings: Settings) -> None:
    admin = create_user(lite_session, Role.admin)
    call = create_call(lite_session, admin, storage_quota_gb=0.000_01)  # 10 kB
    pi = create_user(lite_session)
    proposal = create_proposal(lite_session, pi, call, job_plan=dict(TINY_TRAIN))
    _, run = award(lite_session, admin, proposal)
    run = lite_session.get(Run, run.id)
    run.state, run.finished_at = RunState.succeeded, utcnow()
    lite_session.add(run)
    archive_outputs(lite_session, lite_settings, run, {"checkpoint.pt": b"w" * 6_000, "samples.png": b"\x89PNG",
                                                       "training_images.png": b"\x89PNG", "metrics.json": b"{}",
                                                       "attribution.json": b'{"images": []}'})
    used = storage.used_bytes(lite_session, proposal.id)
    assert 6_000 < used < 10_000
    headers = auth_headers(lite_session, pi)
    page = lite_client.get(f"/proposals/{proposal.id}", headers=headers).text
    assert f"Kept in the archive: {storage.size_words(used)} of the call's quota of 10 kB" in page
    assert f"This run keeps {storage.size_words(used)}" in lite_client.get(f"/runs/{run.id}", headers=headers).text
    refused = lite_client.post(f"/api/runs/{run.id}/analyses", headers=headers,
                               json={"job_plan": {"kind": "quality", "samples": 64}})
    assert refused.status_code == 409 and "would pass its quota" in refused.json()["detail"]
    assert lite_session.exec(select(Run).where(Run.proposal_id == proposal.id)).all() == [run]
    assert lite_session.get(Proposal, proposal.id) is not None
