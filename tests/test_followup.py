""""Analyse this run": the team of a finished training run asks for an analysis of it on its own award, from the
API or the run's page; the analysis is pinned to the run's checkpoint and training set and listed on the run."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from jobs.config import TrainConfig
from jobs.train import main as train_main
from service.ledger.service import account_id_for_award, debit
from service.models import Proposal, Role, Run, RunState, User
from tests.factories import PASSWORD, TINY_TRAIN, add_coi, auth_headers, create_user, post_form, registered_model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("model")
    train_main(TrainConfig.model_validate({**TINY_TRAIN, "resolution": 16}), out)
    return (out / "checkpoint.pt").read_bytes()


def _finished_run(client: TestClient, session: Session, settings, checkpoint: bytes) -> tuple[Run, Proposal]:
    admin = create_user(session, Role.admin)
    _, run = registered_model(client, session, settings, admin, checkpoint, {**TINY_TRAIN, "resolution": 16})
    return run, session.get(Proposal, run.proposal_id)


def test_the_team_analyses_its_finished_run_on_its_award(lite_client: TestClient, lite_session: Session,
                                                        lite_settings, checkpoint: bytes) -> None:
    run, proposal = _finished_run(lite_client, lite_session, lite_settings, checkpoint)
    pi = lite_session.get(User, proposal.pi_id)
    asked = lite_client.post(f"/api/runs/{run.id}/analyses", headers=auth_headers(lite_session, pi),
                             json={"job_plan": {"kind": "quality", "samples": 32}})
    assert asked.status_code == 201, asked.text
    analysis = lite_session.get(Run, asked.json()["id"])
    assert analysis.award_id == run.award_id and analysis.job_kind == "quality" and analysis.state == RunState.queued
    artifacts = lite_client.get(f"/api/runs/{run.id}/artifacts", headers=auth_headers(lite_session, pi)).json()
    assert analysis.job_plan["run"] == run.id and analysis.job_plan["model"] is None
    assert analysis.job_plan["checkpoint_sha256"] == next(a["sha256"] for a in artifacts if a["name"] ==
                                                          "checkpoint.pt")
    assert analysis.job_plan["dataset"] == "skimage-samples@1" and analysis.job_plan["dataset_digest"]
    page = lite_client.get(f"/runs/{run.id}", headers=auth_headers(lite_session, pi)).text
    assert f"<tr><td>{analysis.id}</td><td>quality</td><td>run {run.id}</td>" in page and 'id="analyse"' in page

    # Nobody else spends the award; a plan must analyse this run and be an analysis at all.
    stranger, admin = create_user(lite_session), create_user(lite_session, Role.admin)
    for who, status in ((stranger, 404), (admin, 403)):
        refused = lite_client.post(f"/api/runs/{run.id}/analyses", headers=auth_headers(lite_session, who),
                                   json={"job_plan": {"kind": "quality"}})
        assert refused.status_code == status and refused.json()["detail"]
    for plan, words in (({"kind": "train"}, "a follow-up is one of"),
                        ({"kind": "replication", "model": "tiny@1"}, "name no other model or run"),
                        ({"kind": "replication", "run": run.id + 1}, "name no other model or run"),
                        ({"kind": "quality", "samples": 0}, "samples")):
        refused = lite_client.post(f"/api/runs/{run.id}/analyses", headers=auth_headers(lite_session, pi),
                                   json={"job_plan": plan})
        assert refused.status_code == 422 and words in refused.json()["detail"], refused.text
    not_training = lite_client.post(f"/api/runs/{analysis.id}/analyses", headers=auth_headers(lite_session, pi),
                                    json={"job_plan": {"kind": "quality"}})
    assert not_training.status_code == 409 and "not a finished training run" in not_training.json()["detail"]

    # An award with no GPU-seconds left runs nothing more.
    account = account_id_for_award(lite_session, run.award_id)
    debit(lite_session, account_id=account, seconds=10**9, key="test-spend", run_id=run.id, attempt=1)
    lite_session.commit()
    spent = lite_client.post(f"/api/runs/{run.id}/analyses", headers=auth_headers(lite_session, pi),
                             json={"job_plan": {"kind": "replication"}})
    assert spent.status_code == 409 and "no GPU-hours left" in spent.json()["detail"]


def test_a_co_investigator_queues_one_from_the_run_page(lite_client: TestClient, lite_session: Session,
                                                        lite_settings, checkpoint: bytes) -> None:
    run, proposal = _finished_run(lite_client, lite_session, lite_settings, checkpoint)
    coi = create_user(lite_session)
    add_coi(lite_session, lite_session.get(User, proposal.pi_id), proposal, coi)
    post_form(lite_client, "/login", {"email": coi.email, "password": PASSWORD, "next": "/"})
    page = lite_client.get(f"/runs/{run.id}").text
    assert f'action="/runs/{run.id}/analyses"' in page
    done = post_form(lite_client, f"/runs/{run.id}/analyses", {"kind": "extraction", "samples": "16"})
    queued = lite_session.exec(select(Run).where(Run.job_kind == "extraction")).one()
    assert queued.job_plan["samples_per_class"] == 16 and queued.job_plan["run"] == run.id
    assert f"Run {queued.id} queued: an extraction analysis of run {run.id}." in done.text
    bad = post_form(lite_client, f"/runs/{run.id}/analyses", {"kind": "quality", "samples": "many"})
    assert "samples: a whole number of samples" in bad.text


def test_a_run_page_offers_no_analysis_to_those_who_may_not_ask(lite_client: TestClient, lite_session: Session,
                                                                lite_settings, checkpoint: bytes) -> None:
    run, _ = _finished_run(lite_client, lite_session, lite_settings, checkpoint)
    admin = create_user(lite_session, Role.admin)
    page = lite_client.get(f"/runs/{run.id}", headers=auth_headers(lite_session, admin)).text
    assert 'id="analyse"' not in page  # admins watch every run; they do not spend a team's award
