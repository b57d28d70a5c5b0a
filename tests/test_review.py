"""Peer review in the domain, on SQLite and PostgreSQL: proposal transitions, invites, conflicts and reassignment,
the Director's reserve, supplements, decisions against the ranking, release, feedback and the audit log."""

from __future__ import annotations

from datetime import timedelta
from statistics import pstdev

import pytest
from sqlalchemy import update
from sqlmodel import Session, select

from service.allocations.service import award_proposal, decline_proposal
from service.auth.service import update_profile
from service.calls.schemas import CallCreate, CycleCreate
from service.calls.service import create_call as make_call
from service.calls.service import create_cycle as make_cycle
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.ledger.service import award_balance
from service.models import (
    AssignmentState,
    AuditEntry,
    Award,
    CallKind,
    OutboxMessage,
    Proposal,
    ProposalEvent,
    ProposalInvite,
    ProposalMember,
    ProposalState,
    Review,
    ReviewAssignment,
    Role,
    Run,
    User,
)
from service.proposals import service as proposals
from service.proposals import states, team
from service.proposals.schemas import ProposalUpdate
from service.review import assignments, committee, feedback, reviews
from service.review.reviews import ReviewCreate
from service.timeutil import utcnow
from tests.factories import (
    auth_headers,
    award,
    close_call,
    create_call,
    create_cycle,
    create_proposal,
    create_user,
    start_review,
)

S = ProposalState


@pytest.fixture
def admin(session: Session):
    return create_user(session, Role.admin)


def _assigned(session: Session, proposal_id: int) -> dict[int, ReviewAssignment]:
    session.expire_all()
    return {a.reviewer_id: a for a in session.exec(select(ReviewAssignment)
                                                   .where(ReviewAssignment.proposal_id == proposal_id))}


def _review(session: Session, reviewer, assignment_id: int, grade: float, for_pi: str = "Clear plan.") -> None:
    assignments.accept(session, actor=reviewer, assignment_id=assignment_id)
    reviews.submit(session, actor=reviewer, assignment_id=assignment_id, data=ReviewCreate(
        grade=grade, expertise="high", for_committee="For the panel.", for_pi=for_pi))
    session.commit()


# ---- transitions -------------------------------------------------------------------------------------------


# The proposal machine as the design writes it down, spelled out here rather than read from the code.
PROPOSAL_MOVES = {("draft", "submitted"), ("draft", "withdrawn"), ("submitted", "under_review"),
                  ("submitted", "accepted"), ("submitted", "declined"), ("submitted", "withdrawn"),
                  ("under_review", "accepted"), ("under_review", "declined"), ("under_review", "withdrawn")}


def test_every_transition_not_written_down_is_refused(session: Session, admin) -> None:
    call = create_call(session, admin)
    proposal = create_proposal(session, create_user(session), call, submit=False)
    for source in S:
        for target in S:
            session.execute(update(Proposal).where(Proposal.id == proposal.id).values(state=source))
            session.refresh(proposal)
            if (source, target) in PROPOSAL_MOVES:
                states.move(session, proposal, target, actor=admin, reason="test")
                assert session.get(Proposal, proposal.id, populate_existing=True).state == target
            else:
                with pytest.raises(Conflict, match="cannot become"):
                    states.move(session, proposal, target, actor=admin)
            session.rollback()


def test_a_stale_read_loses_the_race_with_a_conflict(session: Session, admin, engine) -> None:
    pi = create_user(session)
    proposal = create_proposal(session, pi, create_call(session, admin))
    with Session(engine, expire_on_commit=False) as other:
        stale = other.get(Proposal, proposal.id)
        other.commit()
        states.move(session, session.get(Proposal, proposal.id), S.withdrawn, actor=pi)
        session.commit()
        with pytest.raises(Conflict, match="changed meanwhile"):
            states.move(other, stale, S.under_review, actor=admin)
    events = session.exec(select(ProposalEvent).where(ProposalEvent.proposal_id == proposal.id)).all()
    assert [(e.from_state, e.to_state) for e in events] == [("draft", "submitted"), ("submitted", "withdrawn")]


def test_submission_freezes_the_text_confirms_by_mail_and_a_withdrawal_ends_it(session: Session, admin) -> None:
    pi = create_user(session)
    call = create_call(session, admin)
    proposal = create_proposal(session, pi, call)
    with pytest.raises(Conflict, match="only a draft can change"):
        proposals.update_proposal(session, actor=pi, proposal_id=proposal.id, data=ProposalUpdate(title="New"))
    session.rollback()
    mail = session.exec(select(OutboxMessage).where(OutboxMessage.to_address == pi.email)).all()
    assert [m.subject for m in mail] == [f"Submitted: {proposal.title}"]
    proposals.withdraw(session, actor=pi, proposal_id=proposal.id, reason="changed plans")
    session.commit()
    assert session.get(Proposal, proposal.id).state == S.withdrawn
    with pytest.raises(Conflict):
        proposals.withdraw(session, actor=pi, proposal_id=proposal.id)
    session.rollback()
    accepted = create_proposal(session, pi, call)
    award(session, admin, accepted)
    with pytest.raises(Conflict, match="accepted; it cannot become withdrawn"):
        proposals.withdraw(session, actor=pi, proposal_id=accepted.id)


# ---- team ----------------------------------------------------------------------------------------------------


def test_an_invite_link_works_once_for_the_person_who_accepts(session: Session, admin) -> None:
    pi, coi, late = create_user(session), create_user(session), create_user(session)
    proposal = create_proposal(session, pi, create_call(session, admin))
    row, link = team.invite(session, actor=pi, proposal_id=proposal.id, email=coi.email, base_url="http://p")
    session.commit()
    token = link.rsplit("/", 1)[1]
    assert link.startswith("http://p/invites/inv_") and token not in row.token_hash
    assert session.get(ProposalMember, (proposal.id, coi.id)) is None  # nobody joins without accepting
    team.accept(session, actor=coi, raw=token)
    session.commit()
    assert session.get(ProposalMember, (proposal.id, coi.id)).role == "coi"
    with pytest.raises(NotFound, match="not valid"):
        team.accept(session, actor=late, raw=token)
    session.rollback()
    assert session.get(ProposalMember, (proposal.id, late.id)) is None

    revoked, link2 = team.invite(session, actor=pi, proposal_id=proposal.id, email="x@example.org", base_url="h")
    team.revoke_invite(session, actor=pi, proposal_id=proposal.id, invite_id=revoked.id)
    expired, link3 = team.invite(session, actor=pi, proposal_id=proposal.id, email="y@example.org", base_url="h")
    expired.expires_at = utcnow() - timedelta(seconds=1)
    session.add(expired)
    session.commit()
    for spent in (link2, link3, "inv_made-up", "garbage"):
        with pytest.raises(NotFound):
            team.accept(session, actor=late, raw=spent.rsplit("/", 1)[-1])
    with pytest.raises(Forbidden):
        team.invite(session, actor=coi, proposal_id=proposal.id, email="z@example.org", base_url="h")
    reviewer = create_user(session, Role.reviewer)
    _, link4 = team.invite(session, actor=pi, proposal_id=proposal.id, email=reviewer.email, base_url="h")
    with pytest.raises(Forbidden, match="researcher"):
        team.accept(session, actor=reviewer, raw=link4.rsplit("/", 1)[1])


def test_the_pi_removes_members_and_hands_on_the_role(session: Session, admin) -> None:
    pi, coi = create_user(session), create_user(session)
    proposal = create_proposal(session, pi, create_call(session, admin))
    _, link = team.invite(session, actor=pi, proposal_id=proposal.id, email=coi.email, base_url="h")
    team.accept(session, actor=coi, raw=link.rsplit("/", 1)[1])
    with pytest.raises(Forbidden):
        team.transfer_pi(session, actor=coi, proposal_id=proposal.id, user_id=coi.id)
    team.transfer_pi(session, actor=pi, proposal_id=proposal.id, user_id=coi.id)
    session.commit()
    assert session.get(Proposal, proposal.id).pi_id == coi.id
    assert session.get(ProposalMember, (proposal.id, pi.id)).role == "coi"
    with pytest.raises(Conflict, match="PI cannot be removed"):
        team.remove_member(session, actor=coi, proposal_id=proposal.id, user_id=coi.id)
    team.remove_member(session, actor=coi, proposal_id=proposal.id, user_id=pi.id)
    session.commit()
    assert session.get(ProposalMember, (proposal.id, pi.id)) is None
    actions = [e.action for e in session.exec(select(AuditEntry))]
    assert "team.transfer_pi" in actions and "team.remove" in actions


# ---- review ----------------------------------------------------------------------------------------------


def test_conflicts_are_excluded_and_a_declared_one_is_reassigned(session: Session, admin) -> None:
    """Rosa (Utrecht) leads P1; Kai is on Ola's competing P2; Una shares Rosa's institution. Of five reviewers,
    only the three without a conflict review P1; a declared conflict passes P1 to the fourth, who is free."""
    rosa = create_user(session, institution="Utrecht")
    ola = create_user(session, institution="Oslo")
    kai = create_user(session, Role.reviewer, institution="Kiel")  # a reviewer who is also on a team
    kai.roles = ["researcher", "reviewer"]
    session.add(kai)
    una = create_user(session, Role.reviewer, institution=" utrecht ")
    free = [create_user(session, Role.reviewer, institution=f"Lab {i}") for i in range(4)]
    call = create_call(session, admin, reviewers_per_proposal=3, reviewer_cap=2)
    p1 = create_proposal(session, rosa, call)
    p2 = create_proposal(session, ola, call)
    _, link = team.invite(session, actor=ola, proposal_id=p2.id, email=kai.email, base_url="h")
    team.accept(session, actor=kai, raw=link.rsplit("/", 1)[1])
    session.commit()
    conflicts = assignments.automatic_conflicts(session, call, [p1.id, p2.id], assignments.reviewers(session))
    assert conflicts[(una.id, p1.id)] == "same institution as a team member"
    assert conflicts[(kai.id, p2.id)] == "on the proposal's team"
    assert conflicts[(kai.id, p1.id)] == "on the team of a competing proposal in this call"
    started = start_review(session, admin, call)
    assert started.proposals == 2 and started.assignments == 6 and started.shortfalls == {}
    on_p1 = _assigned(session, p1.id)
    assert set(on_p1) <= {f.id for f in free} and len(on_p1) == 3
    assert kai.id not in _assigned(session, p2.id)
    loads = [len(session.exec(select(ReviewAssignment).where(ReviewAssignment.reviewer_id == r.id)).all())
             for r in [una, *free]]
    assert max(loads) <= 2  # the cap

    stepping_aside = session.get(type(kai), next(iter(on_p1)))
    idle = [f for f in free if len(session.exec(select(ReviewAssignment)
                                                .where(ReviewAssignment.reviewer_id == f.id)).all()) < 2]
    replacement = assignments.declare_conflict(session, actor=stepping_aside, assignment_id=on_p1[stepping_aside.id].id,
                                               reason="I supervised the PI")
    session.commit()
    on_p1 = _assigned(session, p1.id)
    assert on_p1[stepping_aside.id].state == AssignmentState.conflict
    assert replacement is not None and replacement.reviewer_id in {f.id for f in idle}
    assert len([a for a in on_p1.values() if a.state != AssignmentState.conflict]) == 3
    # The reviewer's one e-mail digest: assignments wait in the outbox as digest items, titles only.
    mail = session.exec(select(OutboxMessage).where(OutboxMessage.kind == "assignment")).all()
    assert len(mail) == 7 and all(rosa.name not in m.body and ola.name not in m.body for m in mail)
    with pytest.raises(NotFound):  # someone else's assignment is not there at all
        assignments.accept(session, actor=una, assignment_id=replacement.id)


def test_a_reviewer_who_joins_a_team_in_review_is_withdrawn_and_replaced(session: Session, admin) -> None:
    """The attack: a reviewer takes the PI's invite while reviewing (dual-anonymous or not). Joining withdraws them
    from the proposal (their review no longer counts) and from the call's competing proposals, hands each on to
    another reviewer, and is audited; grading it after joining is refused."""
    pi = create_user(session, institution="Utrecht")
    rival_pi = create_user(session, institution="Oslo")
    insider = create_user(session, Role.reviewer, institution="Kiel")
    insider.roles = ["researcher", "reviewer"]
    session.add(insider)
    for i in range(2):
        create_user(session, Role.reviewer, institution=f"Lab {i}")
    call = create_call(session, admin, reviewers_per_proposal=3)
    target = create_proposal(session, pi, call)
    rival = create_proposal(session, rival_pi, call)
    session.commit()
    start_review(session, admin, call)  # three reviewers for three places: the insider reviews both
    mine = {a.proposal_id: a for a in session.exec(select(ReviewAssignment)
                                                   .where(ReviewAssignment.reviewer_id == insider.id))}
    assert set(mine) == {target.id, rival.id}
    for i in range(2):  # reviewers who join the panel later, free to take over
        create_user(session, Role.reviewer, institution=f"Late lab {i}")
    _review(session, insider, mine[target.id].id, 5.0)
    _, link = team.invite(session, actor=pi, proposal_id=target.id, email=insider.email, base_url="h")
    team.accept(session, actor=insider, raw=link.rsplit("/", 1)[1])
    session.commit()
    on_target = _assigned(session, target.id)
    assert on_target[insider.id].state == AssignmentState.conflict
    assert "on the proposal's team" in on_target[insider.id].conflict_reason
    assert len([a for a in on_target.values() if a.state != AssignmentState.conflict]) == 3  # handed on
    assert all(a.reviewer_id != insider.id for a, _ in committee.submitted_reviews(session, call.id))
    assert _assigned(session, rival.id)[insider.id].state == AssignmentState.conflict  # a competing proposal
    assert "competing proposal" in _assigned(session, rival.id)[insider.id].conflict_reason
    with pytest.raises(Conflict, match="you may not review this proposal: you are on the proposal's team"):
        reviews.submit(session, actor=insider, assignment_id=mine[target.id].id, data=ReviewCreate(
            grade=5.0, expertise="high", for_committee="Excellent.", for_pi="Excellent."))
    session.rollback()
    actions = [e.action for e in session.exec(select(AuditEntry).order_by(AuditEntry.id))]
    assert "team.invite" in actions and "team.join" in actions and "review.conflict_found" in actions


def test_an_institution_change_withdraws_a_reviewer_it_conflicts(session: Session, admin) -> None:
    pi = create_user(session, institution="Utrecht")
    for i in range(3):
        create_user(session, Role.reviewer, institution=f"Lab {i}")
    call = create_call(session, admin, reviewers_per_proposal=2)
    proposal = create_proposal(session, pi, call)
    start_review(session, admin, call)
    assigned = _assigned(session, proposal.id)
    moving = session.get(User, next(iter(assigned)))
    update_profile(session, moving, institution=" utrecht")
    session.commit()
    after = _assigned(session, proposal.id)
    assert after[moving.id].state == AssignmentState.conflict and "same institution" in after[moving.id].conflict_reason
    assert len([a for a in after.values() if a.state != AssignmentState.conflict]) == 2


def test_review_waits_for_the_deadline_and_happens_once(session: Session, admin) -> None:
    call = create_call(session, admin)
    create_proposal(session, create_user(session), call)
    with pytest.raises(Conflict, match="open until"):
        assignments.start_review(session, actor=admin, call_id=call.id)
    session.rollback()
    start_review(session, admin, call)
    with pytest.raises(Conflict, match="started"):
        assignments.start_review(session, actor=admin, call_id=call.id)


def test_decisions_against_the_ranking_need_a_reason_and_are_audited(session: Session, admin) -> None:
    panel = [create_user(session, Role.reviewer) for _ in range(2)]
    call = create_call(session, admin, reviewers_per_proposal=2, triage_fraction=0.5, capacity=10)
    pis = [create_user(session) for _ in range(4)]
    props = [create_proposal(session, pi, call) for pi in pis]
    start_review(session, admin, call)
    for proposal, grade in zip(props, (1.5, 2.0, 4.0, 4.5), strict=True):
        for reviewer, assignment in _assigned(session, proposal.id).items():
            _review(session, next(r for r in panel if r.id == reviewer), assignment.id, grade)
    ranked = committee.ranking(session, session.get(type(call), call.id))
    assert [r.proposal_id for r in ranked] == [p.id for p in props] and [r.triaged for r in ranked] == [
        False, False, True, True]
    with pytest.raises(Invalid, match="below the triage line"):
        award_proposal(session, actor=admin, proposal_id=props[3].id, gpu_hours=1)
    session.rollback()
    with pytest.raises(Invalid, match="above the triage line"):
        decline_proposal(session, actor=admin, proposal_id=props[1].id)
    session.rollback()
    award_proposal(session, actor=admin, proposal_id=props[0].id, gpu_hours=1, priority="A")
    award_proposal(session, actor=admin, proposal_id=props[3].id, gpu_hours=1, reason="a bold idea worth a try")
    session.commit()
    entries = {e.subject: e for e in session.exec(select(AuditEntry).where(AuditEntry.action == "award"))}
    assert entries[f"proposal:{props[3].id}"].detail["against_ranking"] == "it is ranked 4, below the triage line"
    assert entries[f"proposal:{props[3].id}"].detail["reason"] == "a bold idea worth a try"
    assert entries[f"proposal:{props[0].id}"].detail["against_ranking"] == ""

    # Release: the rest are declined, every team hears, the PIs see their band and comments and rate them.
    assert committee.release(session, actor=admin, call_id=call.id) == 2
    session.commit()
    assert [session.get(Proposal, p.id).state for p in props] == [S.accepted, S.declined, S.declined, S.accepted]
    decided = session.exec(select(OutboxMessage).where(OutboxMessage.subject.startswith("Decision"))).all()
    assert {m.to_address for m in decided} == {pi.email for pi in pis}
    seen = feedback.feedback(session, actor=pis[0], proposal_id=props[0].id)
    assert seen.band.startswith("outstanding") and "top quarter of 4" in seen.band
    assert [r.label for r in seen.reviews] == ["Reviewer 1", "Reviewer 2"] and seen.reviews[0].for_pi
    feedback.rate(session, actor=pis[0], proposal_id=props[0].id, review_id=seen.reviews[0].review_id,
                  helpfulness=5)
    session.commit()
    with pytest.raises(NotFound):  # another proposal's review
        feedback.rate(session, actor=pis[1], proposal_id=props[1].id, review_id=seen.reviews[0].review_id,
                      helpfulness=1)
    session.rollback()
    stats = {s.reviewer.id: s for s in committee.reviewer_stats(session, actor=admin)}
    assert sum(s.ratings for s in stats.values()) == 1 and all(s.reviews == 4 for s in stats.values())
    assert all(s.versus_panel == pytest.approx(0) for s in stats.values())  # both graded alike
    with pytest.raises(Conflict, match="released"):
        reviews.submit(session, actor=panel[0], assignment_id=next(iter(_assigned(session, props[0].id).values())).id,
                       data=ReviewCreate(grade=1, expertise="low", for_committee="x", for_pi="y"))


def test_the_directors_reserve_is_at_most_a_tenth_and_never_overspent(session: Session, admin) -> None:
    with pytest.raises(Invalid, match="at most 10%"):
        make_cycle(session, actor=admin, data=CycleCreate(name="C", capacity_gpu_hours=100,
                                                          director_reserve_gpu_hours=10.5))
    cycle = create_cycle(session, admin, capacity=100, reserve=10)
    now = utcnow()

    def call(kind: CallKind, capacity: float):
        made = make_call(session, actor=admin, data=CallCreate(
            title=str(kind), kind=kind, cycle_id=cycle.id, opens_at=now - timedelta(days=1),
            closes_at=now + timedelta(days=30), capacity_gpu_hours=capacity))
        session.commit()
        return made

    with pytest.raises(Invalid, match="reserve of 10"):
        call(CallKind.director, 11)
    session.rollback()
    first, second = call(CallKind.director, 8), call(CallKind.director, 8)
    with pytest.raises(Conflict, match="has 90 GPU-hours left"):
        call(CallKind.regular, 91)  # the reserve is set apart from the calls' share
    session.rollback()
    call(CallKind.regular, 90)
    a = create_proposal(session, create_user(session), first, requested_gpu_hours=7)
    b = create_proposal(session, create_user(session), second, requested_gpu_hours=7)
    award_proposal(session, actor=admin, proposal_id=a.id, gpu_hours=7)  # decided at once: no review
    session.commit()
    with pytest.raises(Conflict, match="Director's reserve of cycle 'Cycle test' has 3 GPU-hours left"):
        award_proposal(session, actor=admin, proposal_id=b.id, gpu_hours=4)
    session.rollback()
    award_proposal(session, actor=admin, proposal_id=b.id, gpu_hours=3)
    session.commit()
    assert sum(x.gpu_hours for x in session.exec(select(Award))) == 10


def test_a_supplement_tops_up_its_award_and_starts_no_run(session: Session, admin) -> None:
    pi, stranger = create_user(session), create_user(session)
    cycle = create_cycle(session, admin)
    regular = create_call(session, admin, capacity=5, cycle_id=cycle.id)
    parent, run = award(session, admin, create_proposal(session, pi, regular, requested_gpu_hours=2), gpu_hours=2)
    top_ups = create_call(session, admin, capacity=3, kind=CallKind.supplemental, cycle_id=cycle.id)
    with pytest.raises(Invalid, match="you lead no award"):
        create_proposal(session, stranger, top_ups, parent_award_id=parent.id, job_plan={})
    session.rollback()
    with pytest.raises(Invalid, match="at most the award's own 2"):
        create_proposal(session, pi, top_ups, parent_award_id=parent.id, job_plan={}, requested_gpu_hours=2.5)
    session.rollback()
    supplement = create_proposal(session, pi, top_ups, parent_award_id=parent.id, job_plan={},
                                 requested_gpu_hours=1.5)
    assert supplement.job_kind == "supplement"
    award_proposal(session, actor=admin, proposal_id=supplement.id, gpu_hours=1.5)
    session.commit()
    assert award_balance(session, parent.id) == round(3.5 * 3600)
    parent = session.get(Award, parent.id)
    parent.exclusive_until = utcnow() - timedelta(seconds=1)
    session.add(parent)
    session.commit()
    with pytest.raises(Invalid, match="no longer active"):
        create_proposal(session, pi, top_ups, parent_award_id=parent.id, job_plan={}, requested_gpu_hours=0.5)
    assert len(session.exec(select(Run)).all()) == 1
    assert session.exec(select(OutboxMessage).where(OutboxMessage.subject == f"Decision: {supplement.title}")).one()


def test_invites_and_drafts_leave_nothing_behind(session: Session, admin) -> None:
    pi = create_user(session)
    draft = create_proposal(session, pi, create_call(session, admin), submit=False)
    team.invite(session, actor=pi, proposal_id=draft.id, email="a@example.org", base_url="h")
    proposals.delete_draft(session, actor=pi, proposal_id=draft.id)
    session.commit()
    assert session.exec(select(ProposalInvite)).all() == [] and session.get(Proposal, draft.id) is None


def test_a_closed_call_refuses_submission_and_review_needs_a_closed_regular_call(session: Session, admin) -> None:
    cycle = create_cycle(session, admin)
    director = create_call(session, admin, kind=CallKind.director, cycle_id=cycle.id, capacity=5)
    with pytest.raises(Conflict, match="only regular calls"):
        assignments.start_review(session, actor=admin, call_id=director.id)
    session.rollback()
    call = create_call(session, admin)
    draft = create_proposal(session, create_user(session), call, submit=False)
    close_call(session, call)
    with pytest.raises(Conflict, match="not open"):
        proposals.submit_proposal(session, actor=session.get(type(admin), draft.pi_id), proposal_id=draft.id)


def test_a_harsh_and_a_lenient_reviewer_are_told_apart_with_their_spread_and_turnaround(
        session: Session, admin, client) -> None:  # noqa: ANN001
    """Three reviewers on four proposals: one grades a point harsher than the middle one every time, one half a
    point more lenient; their figures against the panel must differ in sign and size, and the steady offsets have
    no spread."""
    harsh, middle, lenient = (create_user(session, Role.reviewer, name=n) for n in ("Harsh", "Middle", "Lenient"))
    call = create_call(session, admin, reviewers_per_proposal=3)
    props = [create_proposal(session, create_user(session), call) for _ in range(4)]
    start_review(session, admin, call)
    base = (1.5, 2.0, 2.5, 3.0)
    for proposal, grade in zip(props, base, strict=True):
        assigned = _assigned(session, proposal.id)
        for reviewer, offset in ((harsh, 1.0), (middle, 0.0), (lenient, -0.5)):
            _review(session, reviewer, assigned[reviewer.id].id, grade + offset)
    slow = session.exec(select(Review).join(ReviewAssignment).where(ReviewAssignment.reviewer_id == harsh.id)).all()
    for review in slow:  # the harsh reviewer took ten days over each
        review.submitted_at = review.submitted_at + timedelta(days=10)
        session.add(review)
    session.commit()
    stats = {s.reviewer.name: s for s in committee.reviewer_stats(session, actor=admin)}
    # Against the other two: harsh +1 − (0 − 0.5)/2 = +1.25; lenient −0.5 − (1 + 0)/2 = −1.0; middle 0 − 0.25.
    assert stats["Harsh"].versus_panel == pytest.approx(1.25)
    assert stats["Lenient"].versus_panel == pytest.approx(-1.0)
    assert stats["Middle"].versus_panel == pytest.approx(-0.25)
    assert all(s.versus_spread == pytest.approx(0) for s in stats.values())  # steady offsets
    assert stats["Harsh"].grade_spread == pytest.approx(pstdev(base))
    assert stats["Harsh"].turnaround_days == pytest.approx(10, abs=0.01) and stats["Middle"].turnaround_days < 0.01
    shown = client.get("/api/review/reviewers", headers=auth_headers(session, admin)).json()
    assert {r["name"]: r["versus_panel"] for r in shown} == pytest.approx(
        {"Harsh": 1.25, "Middle": -0.25, "Lenient": -1.0})
