"""Proposals and awards at the service layer, on SQLite and PostgreSQL: the rules, and nothing half-stored."""

from __future__ import annotations

import pytest
from sqlmodel import Session, func, select

from service.allocations.service import award_proposal
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.models import Award, Proposal, ProposalState, Role, Run, RunState
from service.proposals import service as proposals
from service.proposals.access import is_member
from service.proposals.schemas import ProposalCreate, ProposalUpdate
from tests.factories import award, create_call, create_proposal, create_user, proposal_body, start_review


def _count(session: Session, model) -> int:
    return session.exec(select(func.count()).select_from(model)).one()


@pytest.fixture
def people(session: Session):
    return {"admin": create_user(session, Role.admin), "pi": create_user(session),
            "other": create_user(session), "reviewer": create_user(session, Role.reviewer)}


def test_submit_in_open_call_makes_pi_a_member(session: Session, people) -> None:
    call = create_call(session, people["admin"])
    proposal = create_proposal(session, people["pi"], call)
    assert proposal.state == ProposalState.submitted
    assert is_member(session, people["pi"], proposal.id)
    assert not is_member(session, people["other"], proposal.id)
    assert proposal.job_plan["steps"] == 2 and proposal.job_plan["learning_rate"] == 1e-3  # defaults filled in


@pytest.mark.parametrize(("overrides", "error", "fragment"), [
    ({"requested_gpu_hours": 11.0}, Invalid, "exceeds the call's capacity of 10"),
    ({"job_plan": {"kind": "train", "steps": 0}}, Invalid, "job_plan.train.steps"),
    ({"job_plan": {"kind": "paint"}}, Invalid, "job_plan"),
    ({"job_plan": {"kind": "train", "resolution": 10}}, Invalid, "10 is not divisible by 4"),
    ({"job_plan": {"kind": "sample", "checkpoint_sha256": "a" * 64}}, Invalid, "no checkpoint"),
])
def test_refused_proposals_store_nothing(session: Session, people, overrides, error, fragment) -> None:
    call = create_call(session, people["admin"])
    with pytest.raises(error, match=fragment):
        proposals.create_proposal(session, actor=people["pi"], call_id=call.id,
                                  data=ProposalCreate(**proposal_body(**overrides)))
    session.rollback()
    assert _count(session, Proposal) == 0


def test_closed_call_refuses_submission_but_keeps_nothing(session: Session, people) -> None:
    call = create_call(session, people["admin"], open_now=False)
    with pytest.raises(Conflict, match="is not open"):
        proposals.create_proposal(session, actor=people["pi"], call_id=call.id, data=ProposalCreate(**proposal_body()))
    session.rollback()
    assert _count(session, Proposal) == 0


def test_only_researchers_propose(session: Session, people) -> None:
    call = create_call(session, people["admin"])
    for role in ("admin", "reviewer"):
        with pytest.raises(Forbidden):
            proposals.create_proposal(session, actor=people[role], call_id=call.id,
                                      data=ProposalCreate(**proposal_body()))


def test_draft_edit_then_submit(session: Session, people) -> None:
    call = create_call(session, people["admin"])
    draft = create_proposal(session, people["pi"], call, submit=False)
    assert draft.state == ProposalState.draft
    proposals.update_proposal(session, actor=people["pi"], proposal_id=draft.id,
                              data=ProposalUpdate(title="Sharper title", job_plan={"kind": "train", "steps": 5}))
    with pytest.raises(NotFound):
        proposals.update_proposal(session, actor=people["other"], proposal_id=draft.id, data=ProposalUpdate(title="x"))
    submitted = proposals.submit_proposal(session, actor=people["pi"], proposal_id=draft.id)
    session.commit()
    assert submitted.title == "Sharper title" and submitted.job_plan["steps"] == 5
    with pytest.raises(Conflict, match="only a draft"):
        proposals.update_proposal(session, actor=people["pi"], proposal_id=draft.id, data=ProposalUpdate(title="y"))


def test_admins_do_not_see_drafts(session: Session, people) -> None:
    call = create_call(session, people["admin"])
    draft = create_proposal(session, people["pi"], call, submit=False)
    with pytest.raises(NotFound):
        proposals.get_visible(session, actor=people["admin"], proposal_id=draft.id)
    assert proposals.list_visible(session, actor=people["admin"]) == []


def test_award_queues_a_run_and_sets_exclusive_period(session: Session, people) -> None:
    call = create_call(session, people["admin"], exclusive_months=12)
    proposal = create_proposal(session, people["pi"], call)
    award_, run = award(session, people["admin"], proposal, gpu_hours=0.5)
    assert run.state == RunState.queued and run.job_plan == proposal.job_plan
    assert (award_.exclusive_until - award_.awarded_at).days in range(365, 367)
    assert session.get(Proposal, proposal.id).state == ProposalState.accepted


def test_award_rules(session: Session, people) -> None:
    call = create_call(session, people["admin"], capacity=1.5)
    first = create_proposal(session, people["pi"], call, requested_gpu_hours=1.0)
    second = create_proposal(session, people["other"], call, requested_gpu_hours=1.0)
    start_review(session, people["admin"], call)
    with pytest.raises(Invalid, match="exceeds the 1 requested"):
        award_proposal(session, actor=people["admin"], proposal_id=first.id, gpu_hours=2.0)
    with pytest.raises(Forbidden):
        award_proposal(session, actor=people["pi"], proposal_id=first.id, gpu_hours=1.0)
    award(session, people["admin"], first, gpu_hours=1.0)
    with pytest.raises(Conflict, match="already accepted"):
        award_proposal(session, actor=people["admin"], proposal_id=first.id, gpu_hours=0.1)
    with pytest.raises(Conflict, match="0.5 GPU-hours left"):
        award_proposal(session, actor=people["admin"], proposal_id=second.id, gpu_hours=1.0)
    session.rollback()
    assert _count(session, Award) == 1 and _count(session, Run) == 1
