"""Proposals: written and submitted by researchers, seen by their members and by admins once submitted."""

from __future__ import annotations

from fastapi import APIRouter, Response

from service.allocations.schemas import AwardCreate, Decline
from service.allocations.service import award_proposal, decline_proposal
from service.deps import AdminUser, CurrentUser, ResearcherUser, SessionDep, SettingsDep
from service.proposals import outcomes, service, team
from service.proposals.schemas import (
    InviteAccept,
    InviteCreate,
    InvitePublic,
    ProposalCreate,
    ProposalPublic,
    ProposalUpdate,
    TransferPi,
    Withdrawal,
)
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
    """The proposals you may read: your teams' and, for admins (the committee), every submitted one."""
    return [service.to_public(session, p) for p in service.list_visible(session, actor=user)]


@router.get("/proposals/{proposal_id}", response_model=ProposalPublic)
def get_proposal(proposal_id: IdPath, user: CurrentUser, session: SessionDep) -> ProposalPublic:
    """One proposal: for its team, and for admins (the committee) once it is submitted. Reviewers read packets."""
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


@router.post("/proposals/{proposal_id}/withdraw", response_model=ProposalPublic)
def withdraw(proposal_id: IdPath, user: CurrentUser, session: SessionDep,
             data: Withdrawal | None = None) -> ProposalPublic:
    """Withdraw the proposal, at any time before a decision (its PI); a reason is optional."""
    proposal = service.withdraw(session, actor=user, proposal_id=proposal_id, reason=data.reason if data else "")
    session.commit()
    return service.to_public(session, proposal)


@router.post("/proposals/{proposal_id}/invites", response_model=InvitePublic, status_code=201)
def invite(proposal_id: IdPath, data: InviteCreate, user: CurrentUser, session: SessionDep,
           settings: SettingsDep) -> InvitePublic:
    """Invite a co-investigator (its PI): a single-use link is e-mailed to them, and returned here once. They join
    only by accepting it."""
    row, link = team.invite(session, actor=user, proposal_id=proposal_id, email=data.email,
                            base_url=settings.base_url, days=settings.invite_days)
    session.commit()
    return _invite_public(row, link)


def _invite_public(row, link: str | None = None) -> InvitePublic:  # type: ignore[no-untyped-def]
    return InvitePublic(id=row.id, email=row.email, created_at=row.created_at, expires_at=row.expires_at,
                        used=row.used_at is not None, link=link)


@router.get("/proposals/{proposal_id}/invites", response_model=list[InvitePublic])
def list_invites(proposal_id: IdPath, user: CurrentUser, session: SessionDep) -> list[InvitePublic]:
    """The proposal's invites, used or not (its PI); the links themselves are not shown again."""
    return [_invite_public(row) for row in team.invites(session, actor=user, proposal_id=proposal_id)]


@router.delete("/proposals/{proposal_id}/invites/{invite_id}", status_code=204)
def revoke_invite(proposal_id: IdPath, invite_id: IdPath, user: CurrentUser, session: SessionDep) -> None:
    """Withdraw an invite that has not been accepted (its PI)."""
    team.revoke_invite(session, actor=user, proposal_id=proposal_id, invite_id=invite_id)
    session.commit()


@router.post("/invites/accept", response_model=ProposalPublic)
def accept_invite(data: InviteAccept, user: CurrentUser, session: SessionDep) -> ProposalPublic:
    """Join a proposal's team as co-investigator with the invite link's token (the part after /invites/)."""
    proposal = team.accept(session, actor=user, raw=data.token)
    session.commit()
    return service.to_public(session, proposal)


@router.delete("/proposals/{proposal_id}/members/{user_id}", status_code=204)
def remove_member(proposal_id: IdPath, user_id: IdPath, user: CurrentUser, session: SessionDep) -> None:
    """Remove a co-investigator (its PI), or leave the team yourself (a co-investigator)."""
    team.remove_member(session, actor=user, proposal_id=proposal_id, user_id=user_id)
    session.commit()


@router.post("/proposals/{proposal_id}/pi", response_model=ProposalPublic)
def transfer_pi(proposal_id: IdPath, data: TransferPi, user: CurrentUser, session: SessionDep) -> ProposalPublic:
    """Hand the PI role to a co-investigator (its PI), who becomes PI; you stay on as co-investigator."""
    proposal = team.transfer_pi(session, actor=user, proposal_id=proposal_id, user_id=data.user_id)
    session.commit()
    return service.to_public(session, proposal)


@router.post("/proposals/{proposal_id}/award", response_model=ProposalPublic, status_code=201)
def award(proposal_id: IdPath, data: AwardCreate, admin: AdminUser, session: SessionDep,
          settings: SettingsDep) -> ProposalPublic:
    """Award GPU-hours (the committee): a proposal under review, or a Director's Discretionary or supplemental one.
    Its run is queued for the scheduler; a supplement tops up its award instead."""
    award_proposal(session, actor=admin, proposal_id=proposal_id, gpu_hours=data.gpu_hours,
                   priority=data.priority, gpus_per_run=max(settings.gpus_per_run, 1), reason=data.reason)
    session.commit()
    return service.to_public(session, service.get_visible(session, actor=admin, proposal_id=proposal_id))


@router.post("/proposals/{proposal_id}/decline", response_model=ProposalPublic)
def decline(proposal_id: IdPath, data: Decline, admin: AdminUser, session: SessionDep) -> ProposalPublic:
    """Decline a proposal (the committee)."""
    proposal = decline_proposal(session, actor=admin, proposal_id=proposal_id, reason=data.reason)
    session.commit()
    return service.to_public(session, proposal)


@router.get("/proposals/{proposal_id}/runs", response_model=list[RunPublic])
def proposal_runs(proposal_id: IdPath, user: CurrentUser, session: SessionDep) -> list[RunPublic]:
    """The runs of an awarded proposal: its members and admins."""
    service.get_visible(session, actor=user, proposal_id=proposal_id)
    return [RunPublic.model_validate(r, from_attributes=True) for r in list_for_proposal(session, proposal_id)]


# ---- outcomes: what came of an award ---------------------------------------------------------------------------


@router.post("/proposals/{proposal_id}/outcomes", response_model=outcomes.OutcomePublic, status_code=201)
def add_outcome(proposal_id: IdPath, data: outcomes.OutcomeCreate, user: CurrentUser,
                session: SessionDep) -> outcomes.OutcomePublic:
    """Record a paper, preprint, dataset or software that came of the award (a member of its team)."""
    outcome = outcomes.add(session, user, proposal_id, data)
    session.commit()
    return outcomes.to_public(outcome)


@router.get("/proposals/{proposal_id}/outcomes", response_model=list[outcomes.OutcomePublic])
def list_outcomes(proposal_id: IdPath, session: SessionDep) -> list[outcomes.OutcomePublic]:
    """An accepted proposal's outcomes (public)."""
    return outcomes.public(session, proposal_id)


@router.delete("/outcomes/{outcome_id}", status_code=204)
def remove_outcome(outcome_id: IdPath, user: CurrentUser, session: SessionDep) -> Response:
    """Take an outcome off the record (its team, or an admin)."""
    outcomes.remove(session, user, outcome_id)
    session.commit()
    return Response(status_code=204)
