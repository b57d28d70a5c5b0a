"""Donor shares: a call's reserved share of capacity, awarded to contributors' proposals in proportion to the
credit their volunteers' machines earned, through the same awards and ledger; spent once; shown on the public page."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from service.allocations.service import award_proposal
from service.errors import Conflict
from service.ledger.service import award_balance
from service.models import Award, Machine, Proposal, Role, User, VolunteerCredit
from service.volunteers import donors
from tests.factories import (
    auth_headers,
    award,
    create_call,
    create_machine,
    create_proposal,
    create_user,
    portal_signed_in,
    post_form,
    under_review,
)


def _contributor(session: Session, admin: User, credit_hours: float, run_id: int) -> tuple[User, Machine]:
    """An owner who is also a researcher, whose volunteer's machine earned `credit_hours` of validated credit."""
    user = create_user(session)
    machine, _ = create_machine(session, user, admin)  # the researcher becomes an owner too
    user = session.get(User, user.id)
    if credit_hours:
        session.add(VolunteerCredit(machine_id=machine.id, owner_id=user.id, run_id=run_id, attempt=user.id,
                                    gpu_seconds=round(credit_hours * 3600), credit=credit_hours * 3600))
    session.commit()
    return user, machine


def test_the_reserved_share_goes_to_contributors_by_credit_through_the_ledger(lite_client: TestClient,
                                                                              lite_session: Session) -> None:
    session = lite_session
    admin = create_user(session, Role.admin)
    earlier = create_call(session, admin, title="Earlier cycle")
    _, run = award(session, admin, create_proposal(session, create_user(session), earlier))  # the credit's work
    call = create_call(session, admin, capacity=10, donor_share=0.3, title="Commons memorisation")
    assert lite_client.get(f"/api/calls/{call.id}").json()["donor_share"] == 0.3
    (a, machine_a), (b, _), (none, _) = (_contributor(session, admin, hours, run.id) for hours in (4.0, 1.0, 0.0))
    plain = create_user(session)  # a researcher who lends no machine
    mine = {who.id: create_proposal(session, who, call, requested_gpu_hours=5.0) for who in (a, b, none, plain)}
    other = create_proposal(session, create_user(session), call, requested_gpu_hours=8.0)

    def claim(who: User, proposal: Proposal) -> int:
        response = lite_client.post(f"/api/proposals/{proposal.id}/donor-claim", headers=auth_headers(session, who),
                                    json={"claimed": True})
        return response.status_code

    assert claim(a, mine[a.id]) == 200 and claim(b, mine[b.id]) == 200
    assert claim(none, mine[none.id]) == 409  # no credit to claim with
    assert claim(plain, mine[plain.id]) == 403  # not an owner lending machines
    assert claim(b, mine[a.id]) == 404  # not b's proposal
    for proposal in [*mine.values(), other]:
        under_review(session, admin, proposal)
    # The reserved 3 GPU-hours are not the committee's to award as it likes: 7 are left for the rest.
    with pytest.raises(Conflict, match="7 GPU-hours left to award \\(its donor share of 3 set apart\\)"):
        award_proposal(session, actor=admin, proposal_id=other.id, gpu_hours=8.0, reason="test")
    session.rollback()
    url = f"/api/calls/{call.id}/donor-shares"
    assert lite_client.post(url, headers=auth_headers(session, a)).status_code == 403
    made = lite_client.post(url, headers=auth_headers(session, admin))
    assert made.status_code == 201, made.text
    shares = {s["proposal_id"]: s["gpu_hours"] for s in made.json()}
    assert shares == {mine[a.id].id: 2.4, mine[b.id].id: 0.6}  # 3 GPU-hours split 4 : 1
    session.expire_all()
    for share in made.json():  # the same awards and ledger as any: the hours are the award's to spend
        assert session.get(Award, share["award_id"]).proposal_id == share["proposal_id"]
        assert award_balance(session, share["award_id"]) == round(share["gpu_hours"] * 3600)
    # Credit is spent once: what is left, and a second round that finds nothing more to give.
    assert donors.unspent_credit_s(session, a.id) == pytest.approx(1.6 * 3600)
    assert donors.unspent_credit_s(session, b.id) == pytest.approx(0.4 * 3600)
    assert lite_client.post(url, headers=auth_headers(session, admin)).json() == []
    assert award(session, admin, other, gpu_hours=7.0)[0].gpu_hours == 7.0  # the rest, as before
    # Public: what was awarded from credit, an owner named only where they chose it.
    machine_a = session.get(Machine, machine_a.id)
    machine_a.show_owner = True
    session.add(machine_a)
    session.commit()
    public = lite_client.get("/api/volunteers").json()["donor_shares"]
    assert sorted((d["gpu_hours"], d["owner"], d["call"]) for d in public) == [
        (0.6, None, "Commons memorisation"), (2.4, a.name, "Commons memorisation")]
    page = lite_client.get("/volunteers").text
    assert "Donor shares" in page and "2.40" in page and a.name in page


def test_a_share_is_divided_by_credit_with_no_claim_past_its_cap() -> None:
    assert donors.divide(10, {1: (8, 2), 2: (2, 10)}) == pytest.approx({1: 2, 2: 8})
    assert donors.divide(3, {1: (4, 4), 2: (1, 1)}) == pytest.approx({1: 2.4, 2: 0.6})
    assert donors.divide(10, {1: (1, 1), 2: (1, 2)}) == pytest.approx({1: 1, 2: 2})  # less claimed than reserved
    assert donors.divide(5, {1: (0, 5)}) == {1: 0.0}


def test_the_portal_path_of_a_donor_share(lite_client: TestClient, lite_session: Session) -> None:
    """A PI claims a donor share from the proposal's page (with the form's CSRF token, and refused without it),
    and the committee awards it from the call's ranking page."""
    session = lite_session
    admin = create_user(session, Role.admin)
    _, run = award(session, admin, create_proposal(session, create_user(session), create_call(session, admin)))
    call = create_call(session, admin, capacity=10, donor_share=0.2, title="Donors welcome")
    pi, _ = _contributor(session, admin, 5.0, run.id)
    proposal = create_proposal(session, pi, call, requested_gpu_hours=3.0)
    client = portal_signed_in(lite_client, pi)
    page = client.get(f"/proposals/{proposal.id}").text
    assert "Claim a donor share" in page and "5.00 GPU-hours of unspent credit" in page
    forged = client.post(f"/proposals/{proposal.id}/donor-claim", data={"claimed": "true"}, follow_redirects=False)
    assert forged.status_code == 403  # no CSRF token: refused
    claimed = post_form(client, f"/proposals/{proposal.id}/donor-claim", {"claimed": "true"})
    assert claimed.status_code == 200 and "You claim a donor share" in claimed.text
    under_review(session, admin, proposal)
    board = portal_signed_in(lite_client, admin).get(f"/calls/{call.id}/ranking").text
    assert "2 GPU-hours reserved for contributors, 0 awarded; 1 proposals claim one" in board
    done = post_form(lite_client, f"/calls/{call.id}/donor-shares")
    assert done.status_code == 200 and "1 donor shares awarded (2 GPU-hours)" in done.text
    session.expire_all()
    assert session.get(Proposal, proposal.id).state == "accepted"
    assert "0 awarded" not in lite_client.get(f"/calls/{call.id}/ranking").text
