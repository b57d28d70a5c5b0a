"""Proposals: written and submitted by researchers, seen by their members and by admins once submitted."""

from __future__ import annotations

from fastapi import APIRouter

from service.allocations.schemas import AwardCreate
from service.allocations.service import award_proposal
from service.deps import AdminUser, CurrentUser, ResearcherUser, SessionDep, SettingsDep
from service.proposals import service
from service.proposals.schemas import MemberAdd, ProposalCreate, ProposalPublic, ProposalUpdate
from service.runs.schemas import RunPublic
from service.runs.service import list_for_proposal
from service.types import IdPath

router = APIRouter(tags=["proposals"])


@router.post("/calls/{call_id}/proposals", response_model=ProposalPublic, status_code=201)
def create_proposal(call_id: IdPath, data: ProposalCreate, user: ResearcherUser, session: SessionDep) -> ProposalPublic:
    """Write a proposal in a call as its PI; with `submit: true` it is submitted at once."""
    proposal = service.create_proposal(session, actor=user, call_id=call_id, data=data)
    session.commit()
    return service.to_public(session, proposal)


@router.get("/proposals", response_model=list[ProposalPublic])
def list_proposals(user: CurrentUser, session: SessionDep) -> list[ProposalPublic]:
    """Your proposals; for admins, every submitted proposal."""
    return [service.to_public(session, p) for p in service.list_visible(session, actor=user)]


@router.get("/proposals/{proposal_id}", response_model=ProposalPublic)
def get_proposal(proposal_id: IdPath, user: CurrentUser, session: SessionDep) -> ProposalPublic:
    """One proposal: its members, and admins once it is submitted."""
    return service.to_public(session, service.get_visible(session, actor=user, proposal_id=proposal_id))


@router.patch("/proposals/{proposal_id}", response_model=ProposalPublic)
def update_proposal(proposal_id: IdPath, data: ProposalUpdate, user: CurrentUser,
                    session: SessionDep) -> ProposalPublic:
    """Change a draft (its PI)."""
    proposal = service.update_proposal(session, actor=user, proposal_id=proposal_id, data=data)
    session.commit()
    return service.to_public(session, proposal)


@router.delete("/proposals/{proposal_id}", status_code=204)
def delete_draft(proposal_id: IdPath, user: CurrentUser, session: SessionDep) -> None:
    """Throw a draft away (its PI); submitted proposals stay."""
    service.delete_draft(session, actor=user, proposal_id=proposal_id)
    session.commit()


@router.post("/proposals/{proposal_id}/submit", response_model=ProposalPublic)
def submit_proposal(proposal_id: IdPath, user: CurrentUser, session: SessionDep) -> ProposalPublic:
    """Submit a draft while its call is open (its PI)."""
    proposal = service.submit_proposal(session, actor=user, proposal_id=proposal_id)
    session.commit()
    return service.to_public(session, proposal)


@router.post("/proposals/{proposal_id}/members", response_model=ProposalPublic, status_code=201)
def add_member(proposal_id: IdPath, data: MemberAdd, user: CurrentUser, session: SessionDep) -> ProposalPublic:
    """Add a co-investigator who has an account (its PI)."""
    service.add_member(session, actor=user, proposal_id=proposal_id, email=data.email)
    session.commit()
    return service.to_public(session, service.get_visible(session, actor=user, proposal_id=proposal_id))


@router.post("/proposals/{proposal_id}/award", response_model=ProposalPublic, status_code=201)
def award(proposal_id: IdPath, data: AwardCreate, admin: AdminUser, session: SessionDep,
          settings: SettingsDep) -> ProposalPublic:
    """Award GPU-hours to a submitted proposal (admins); its run is queued for the scheduler."""
    award_proposal(session, actor=admin, proposal_id=proposal_id, gpu_hours=data.gpu_hours,
                   priority=data.priority, gpus_per_run=max(settings.gpus_per_run, 1))
    session.commit()
    return service.to_public(session, service.get_visible(session, actor=admin, proposal_id=proposal_id))


@router.get("/proposals/{proposal_id}/runs", response_model=list[RunPublic])
def proposal_runs(proposal_id: IdPath, user: CurrentUser, session: SessionDep) -> list[RunPublic]:
    """The runs of an awarded proposal: its members and admins."""
    service.get_visible(session, actor=user, proposal_id=proposal_id)
    return [RunPublic.model_validate(r, from_attributes=True) for r in list_for_proposal(session, proposal_id)]
