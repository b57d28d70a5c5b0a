"""What cannot be undone is asked first, with what will happen, and done only when confirmed: withdrawing a
proposal, taking a machine out of the pool (the release of decisions and model registration are asked in their
own tests)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import Session

from service.models import Machine, Proposal, Role
from tests.factories import (
    PASSWORD,
    create_call,
    create_machine,
    create_proposal,
    create_user,
    post_form,
    start_review,
)


def _state(session: Session, model: type, row_id: int) -> str:
    """The row's state as the database holds it now (a session of its own, past the test's)."""
    with Session(session.get_bind()) as fresh:
        return str(fresh.get(model, row_id).state)


def _signed_in(client: TestClient, email: str) -> None:
    post_form(client, "/login", {"email": email, "password": PASSWORD, "next": "/"})


def test_withdrawing_a_proposal_is_asked_first(lite_client: TestClient, lite_session: Session) -> None:
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    proposal = create_proposal(lite_session, pi, create_call(lite_session, admin), title="Leaving one author out")
    _signed_in(lite_client, pi.email)
    asked = post_form(lite_client, f"/proposals/{proposal.id}/withdraw", {"reason": "a better plan"})
    assert asked.status_code == 200 and "Withdraw proposal" in asked.text
    assert "“Leaving one author out” is withdrawn for good" in asked.text and "“a better plan”" in asked.text
    assert 'name="reason" value="a better plan"' in asked.text
    assert _state(lite_session, Proposal, proposal.id) == "submitted"  # nothing done yet
    done = post_form(lite_client, f"/proposals/{proposal.id}/withdraw", {"reason": "a better plan",
                                                                        "confirmed": "yes"})
    assert done.status_code == 200 and "Proposal withdrawn." in done.text
    assert _state(lite_session, Proposal, proposal.id) == "withdrawn"


def test_taking_a_machine_out_is_asked_first_and_only_its_owner_is_asked(lite_client: TestClient,
                                                                         lite_session: Session) -> None:
    admin, owner, other = (create_user(lite_session, Role.admin), create_user(lite_session),
                           create_user(lite_session))
    machine, _ = create_machine(lite_session, owner, admin, name="the attic box")
    _signed_in(lite_client, other.email)
    assert post_form(lite_client, f"/machines/{machine.id}/leave", {}).status_code == 404  # no hint it exists
    lite_client.cookies.clear()
    _signed_in(lite_client, owner.email)
    asked = post_form(lite_client, f"/machines/{machine.id}/leave", {})
    assert asked.status_code == 200 and "Take machine" in asked.text and "Nothing runs on it now." in asked.text
    assert _state(lite_session, Machine, machine.id) == "approved"
    post_form(lite_client, f"/machines/{machine.id}/leave", {"confirmed": "yes"})
    assert _state(lite_session, Machine, machine.id) == "left"


def test_releasing_the_decisions_names_what_it_declines_and_warns_of_an_undecided_top_proposal(
        lite_client: TestClient, lite_session: Session) -> None:
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin)
    first = create_proposal(lite_session, pi, call, title="Which images does it copy?")
    start_review(lite_session, admin, call)
    _signed_in(lite_client, admin.email)
    asked = post_form(lite_client, f"/calls/{call.id}/release", {})
    assert asked.status_code == 200 and "Release the decisions?" in asked.text
    assert "Declined: #1 “Which images does it copy?”" in asked.text
    assert "has no decision though it is above the triage line: releasing declines it." in asked.text
    assert "no SMTP server is set" in asked.text  # the teams' e-mails would wait in the outbox
    assert _state(lite_session, Proposal, first.id) == "under_review"
    post_form(lite_client, f"/calls/{call.id}/release", {"confirmed": "yes"})
    assert _state(lite_session, Proposal, first.id) == "declined"
