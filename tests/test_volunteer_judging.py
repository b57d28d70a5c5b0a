"""How a unit out with volunteers is judged, on attempts as their agents leave them: a trusted volunteer's single
result counts, spot checks copy some of them, and results that do not agree ask for one more copy."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from scheduler.volunteers import judge
from service.archive.service import list_artifacts, store_for
from service.auth.service import take_role
from service.config import Settings
from service.models import AttemptState, Machine, Role, Run, RunAttempt, RunState, VolunteerCredit
from service.pool import machines
from service.runs.service import describe
from service.timeutil import utcnow
from service.volunteers import units
from tests.factories import PASSWORD, award, create_call, create_proposal, create_user, post_form


def volunteer(session: Session, trust: int = 0) -> Machine:
    owner = take_role(session, create_user(session), Role.owner)
    machine = machines.register(session, owner, name="box", show_owner=False, volunteer=True)
    machine.trust = trust
    session.add(machine)
    session.commit()
    return machine


def unit_out(session: Session, replicas: int) -> Run:
    admin = create_user(session, Role.admin)
    _, run = award(session, admin, create_proposal(session, create_user(session), create_call(session, admin)))
    run = session.get(Run, run.id)
    # Judging reads only the run's kind, its attempts and what they sent.
    run.job_kind, run.state, run.pool, run.replicas = "sample", RunState.running, units.VOLUNTEER_POOL, replicas
    session.add(run)
    session.commit()
    return run


def result(session: Session, settings: Settings, run: Run, machine: Machine, number: int, count: int) -> RunAttempt:
    """A succeeded copy whose agent sent metrics.json saying `count` and a samples.png."""
    store = store_for(settings)
    held = {}
    for name, data in (("metrics.json", json.dumps({"count": count}).encode()), ("samples.png", b"same bytes")):
        sha, size = store.put(io.BytesIO(data))
        held[name] = {"sha256": sha, "size": size}
    started = utcnow() - timedelta(seconds=30)
    attempt = RunAttempt(run_id=run.id, number=number, pool=units.VOLUNTEER_POOL, submission_id=f"s-{run.id}-{number}",
                         token_hash=f"{run.id}-{number}".ljust(64, "0"), state=AttemptState.succeeded,
                         machine_id=machine.id, held_outputs=held, started_at=started, ended_at=utcnow(),
                         charge_factor=1.5)
    session.add(attempt)
    session.commit()
    return attempt


def test_a_trusted_volunteers_single_result_counts(lite_session: Session, lite_settings: Settings) -> None:
    trusted = volunteer(lite_session, trust=units.TRUSTED_AFTER)
    run = unit_out(lite_session, replicas=1)
    result(lite_session, lite_settings, run, trusted, 1, count=4)
    assert judge(lite_session, store_for(lite_settings), run) == 1
    lite_session.commit()
    run = lite_session.get(Run, run.id)
    assert run.state == RunState.succeeded and "a trusted volunteer's result" in run.message
    assert {a.name for a in list_artifacts(lite_session, run.id)} >= {"metrics.json", "samples.png"}
    credit = lite_session.exec(VolunteerCredit.__table__.select()).all()
    assert len(credit) == 1 and credit[0].credit == pytest.approx(30 * 1.5, abs=2)  # GPU-seconds × its class


def test_an_untrusted_result_waits_for_a_second_and_disagreement_asks_for_a_third(
        lite_session: Session, lite_settings: Settings) -> None:
    first, second, third = (volunteer(lite_session) for _ in range(3))
    run = unit_out(lite_session, replicas=2)
    result(lite_session, lite_settings, run, first, 1, count=4)
    store = store_for(lite_settings)
    assert judge(lite_session, store, run) == 0  # one result of two: it waits
    result(lite_session, lite_settings, run, second, 2, count=5)  # disagrees
    assert judge(lite_session, store, run) == 0
    lite_session.commit()
    run = lite_session.get(Run, run.id, populate_existing=True)
    assert run.replicas == 3 and "a copy for one more volunteer decides" in run.message
    assert [wanted.run.id for wanted in units.copies_wanted(lite_session)] == [run.id]
    result(lite_session, lite_settings, run, third, 3, count=4)
    assert judge(lite_session, store, run) == 1
    lite_session.commit()
    verdicts = {a.machine_id: a.verdict for a in lite_session.exec(RunAttempt.__table__.select())}
    assert verdicts == {first.id: "agreed", second.id: "wrong", third.id: "agreed"}
    shown = describe(lite_session, lite_session.get(Run, run.id)).attempts  # as the run's page shows them
    assert [(a.verdict, a.node_name) for a in shown] == [(v, "a volunteer's machine") for v in
                                                         ("agreed", "wrong", "agreed")]
    assert lite_session.get(Machine, second.id, populate_existing=True).trust == 0


def test_spot_checks_copy_some_of_a_trusted_volunteers_units(monkeypatch: pytest.MonkeyPatch,
                                                              lite_session: Session) -> None:
    trusted, newcomer = volunteer(lite_session, trust=units.TRUSTED_AFTER), volunteer(lite_session, trust=3)
    monkeypatch.setattr(units.random, "random", lambda: 0.5)
    assert units.copies_needed(trusted) == 1 and units.copies_needed(newcomer) == 2
    monkeypatch.setattr(units.random, "random", lambda: units.SPOT_CHECK / 2)  # drawn for a spot check
    assert units.copies_needed(trusted) == 2
    # Spot checks thin out as the record grows, down to a floor: a long record is checked less, never never.
    veteran = volunteer(lite_session, trust=10 * units.TRUSTED_AFTER)
    assert units.copies_needed(veteran) == 1  # the same draw copies a newly trusted volunteer's unit
    assert units.spot_check_rate(units.TRUSTED_AFTER) == units.SPOT_CHECK
    assert units.spot_check_rate(10_000) == units.SPOT_FLOOR > 0


def test_an_owner_volunteers_a_machine_from_the_portal(lite_client: TestClient, lite_session: Session) -> None:
    owner = take_role(lite_session, create_user(lite_session), Role.owner)
    lite_session.commit()
    post_form(lite_client, "/login", {"email": owner.email, "password": PASSWORD, "next": "/"})
    page = post_form(lite_client, "/machines", {"name": "the den", "volunteer": "true"})
    assert "Registered as a volunteer&#39;s machine" in page.text or "Registered as a volunteer's machine" in page.text
    machine = lite_session.exec(select(Machine).where(Machine.name == "the den")).one()
    assert machine.volunteer and machine.state == "approved"  # nobody's approval needed
    page = post_form(lite_client, f"/machines/{machine.id}/join-command", {})
    assert "Volunteer command" in page.text and "observatory volunteer http" in page.text
    page = post_form(lite_client, f"/machines/{machine.id}/controls", {"team": "Attic Collective"})
    assert "Attic Collective" in page.text and "0.00 GPU-hours" in page.text
    page = post_form(lite_client, f"/machines/{machine.id}/forget-credential", {})
    assert "Its credential is revoked" in page.text
    lite_session.expire_all()
    assert lite_session.get(Machine, machine.id).token_hash is None
    assert "Attic Collective" not in lite_client.get("/volunteers").text  # no credit yet: no ranking


def test_the_agent_says_what_is_wrong_with_its_credential(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from observatory.cli import app

    monkeypatch.delenv("OBSERVATORY_MACHINE_TOKEN", raising=False)
    runner = CliRunner()
    missing = runner.invoke(app, ["volunteer", "http://127.0.0.1:9", "--folder", str(tmp_path / "agent")])
    assert missing.exit_code == 2 and "no credential in" in missing.output
    (tmp_path / "agent").mkdir()
    (tmp_path / "agent" / "credential").write_text("mc_seen")
    (tmp_path / "agent" / "credential").chmod(0o644)
    exposed = runner.invoke(app, ["volunteer", "http://127.0.0.1:9", "--folder", str(tmp_path / "agent")])
    assert exposed.exit_code == 2 and "may be read by others" in exposed.output
