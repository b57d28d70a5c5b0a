"""Proposals: written by a researcher (the PI) in an open call, kept as a draft, then submitted.

States: draft -> submitted -> awarded. Only this module and `service.allocations` change them.
Every check runs before anything is written, so a refused request leaves nothing half-stored.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, select

from jobs.config import JobPlanError, SampleConfig, TrainConfig, parse_job_plan
from service.archive import service as archive
from service.auth.service import normalise_email
from service.calls.service import get_call, is_open
from service.db import lock
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.ledger.service import award_used
from service.models import Award, Call, MemberRole, Proposal, ProposalMember, ProposalState, Role, User
from service.proposals.schemas import (
    AwardPublic,
    MemberPublic,
    ProposalCreate,
    ProposalDraft,
    ProposalPublic,
    ProposalUpdate,
)
from service.timeutil import utcnow
from service.types import Email, parse


def validate_job_plan(session: Session, actor: User, plan: dict[str, Any]) -> TrainConfig | SampleConfig:
    """The plan parsed by the job's own config model; a sample plan must name a checkpoint the actor may read."""
    try:
        parsed = parse_job_plan(plan)
    except JobPlanError as exc:
        raise Invalid(str(exc)) from None
    if isinstance(parsed, SampleConfig):
        artifact = archive.find_checkpoint(session, parsed.checkpoint_sha256)
        if artifact is None or not archive.can_download(session, actor, artifact.run_id):
            raise Invalid("job_plan.checkpoint_sha256: no checkpoint with that sha256 that you may use")
    return parsed


def save_draft(session: Session, *, actor: User, call_id: int | None = None, proposal_id: int | None = None,
               data: ProposalDraft) -> Proposal:
    """Create a draft in a call, or overwrite the actor's own draft, with whatever is there: nothing is checked
    but what the database could not hold. Submission checks everything."""
    if proposal_id is None:
        if not actor.has(Role.researcher):
            raise Forbidden("only researchers write proposals")
        call = get_call(session, call_id)
        proposal = Proposal(call_id=call.id, pi_id=actor.id, title="", abstract="", justification="",
                            requested_gpu_hours=0.0, job_kind="", job_plan={}, state=ProposalState.draft)
    else:
        proposal = _get_own_draft(session, actor, proposal_id)
    kind = data.job_plan.get("kind")
    proposal.title, proposal.abstract, proposal.justification = data.title.strip(), data.abstract, data.justification
    proposal.requested_gpu_hours = data.requested_gpu_hours
    proposal.job_plan, proposal.job_kind = data.job_plan, kind if isinstance(kind, str) and len(kind) <= 40 else ""
    proposal.updated_at = utcnow()
    session.add(proposal)
    session.flush()
    if proposal_id is None:
        session.add(ProposalMember(proposal_id=proposal.id, user_id=actor.id, role=MemberRole.pi))
        session.flush()
    return proposal


def delete_draft(session: Session, *, actor: User, proposal_id: int) -> None:
    """The PI throws a draft away (members and all); a submitted proposal stays."""
    proposal = _get_own_draft(session, actor, proposal_id)
    for member in session.exec(select(ProposalMember).where(ProposalMember.proposal_id == proposal_id)):
        session.delete(member)
    session.flush()
    session.delete(proposal)
    session.flush()


def _check_complete(proposal: Proposal) -> None:
    """A draft must be whole before it is submitted: every text written, GPU-hours asked for."""
    try:
        ProposalCreate.model_validate({"title": proposal.title, "abstract": proposal.abstract,
                                       "justification": proposal.justification,
                                       "requested_gpu_hours": proposal.requested_gpu_hours,
                                       "job_plan": proposal.job_plan})
    except ValidationError as exc:
        fields = sorted({str(e["loc"][0]).replace("_", " ") for e in exc.errors() if e["loc"]})
        raise Invalid(f"the draft is not complete: fill in {', '.join(fields)}") from None


def _check_capacity(call: Call, requested_gpu_hours: float) -> None:
    if requested_gpu_hours > call.capacity_gpu_hours:
        raise Invalid(f"requested {requested_gpu_hours:g} GPU-hours exceeds the call's capacity of "
                      f"{call.capacity_gpu_hours:g}")


def _check_submittable(session: Session, call: Call, requested_gpu_hours: float) -> None:
    if not is_open(call):
        raise Conflict(f"the call '{call.title}' is not open (it runs {call.opens_at:%Y-%m-%d %H:%M} to "
                       f"{call.closes_at:%Y-%m-%d %H:%M} UTC)")
    _check_capacity(call, requested_gpu_hours)


def create_proposal(session: Session, *, actor: User, call_id: int, data: ProposalCreate) -> Proposal:
    if not actor.has(Role.researcher):
        raise Forbidden("only researchers write proposals")
    call = get_call(session, call_id)
    plan = validate_job_plan(session, actor, data.job_plan)
    if data.submit:
        _check_submittable(session, call, data.requested_gpu_hours)
    else:
        _check_capacity(call, data.requested_gpu_hours)
    now = utcnow()
    proposal = Proposal(
        call_id=call.id, pi_id=actor.id, title=data.title.strip(), abstract=data.abstract,
        justification=data.justification, requested_gpu_hours=data.requested_gpu_hours,
        job_kind=plan.kind, job_plan=plan.model_dump(mode="json"),
        state=ProposalState.submitted if data.submit else ProposalState.draft,
        submitted_at=now if data.submit else None,
    )
    session.add(proposal)
    session.flush()
    session.add(ProposalMember(proposal_id=proposal.id, user_id=actor.id, role=MemberRole.pi))
    session.flush()
    return proposal


def is_member(session: Session, user: User | None, proposal_id: int) -> bool:
    return user is not None and session.get(ProposalMember, (proposal_id, user.id)) is not None


def get_visible(session: Session, *, actor: User, proposal_id: int) -> Proposal:
    """A proposal its members may see, and admins once it is submitted; 404 to anyone else."""
    proposal = session.get(Proposal, proposal_id)
    if proposal is None or not (
        is_member(session, actor, proposal_id)
        or (actor.has(Role.admin) and proposal.state != ProposalState.draft)
    ):
        raise NotFound(f"no proposal {proposal_id}")
    return proposal


def _get_own_draft(session: Session, actor: User, proposal_id: int) -> Proposal:
    """The actor's own draft, locked, so that an edit and a submission cannot both pass the draft check."""
    proposal = lock(session, Proposal, proposal_id)
    if proposal is None or not is_member(session, actor, proposal_id):
        raise NotFound(f"no proposal {proposal_id}")
    if proposal.pi_id != actor.id:
        raise Forbidden("only the PI changes or submits a proposal")
    if proposal.state != ProposalState.draft:
        raise Conflict(f"proposal {proposal_id} is {proposal.state}; only a draft can change")
    return proposal


def update_proposal(session: Session, *, actor: User, proposal_id: int, data: ProposalUpdate) -> Proposal:
    proposal = _get_own_draft(session, actor, proposal_id)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if "job_plan" in changes:
        plan = validate_job_plan(session, actor, changes["job_plan"])
        changes["job_plan"], changes["job_kind"] = plan.model_dump(mode="json"), plan.kind
    call = get_call(session, proposal.call_id)
    if "requested_gpu_hours" in changes:
        _check_capacity(call, changes["requested_gpu_hours"])
    for field, value in changes.items():
        setattr(proposal, field, value)
    proposal.updated_at = utcnow()
    session.add(proposal)
    session.flush()
    return proposal


def submit_proposal(session: Session, *, actor: User, proposal_id: int) -> Proposal:
    proposal = _get_own_draft(session, actor, proposal_id)
    _check_complete(proposal)
    _check_submittable(session, get_call(session, proposal.call_id), proposal.requested_gpu_hours)
    plan = validate_job_plan(session, actor, proposal.job_plan)
    proposal.job_plan, proposal.job_kind = plan.model_dump(mode="json"), plan.kind
    proposal.state, proposal.submitted_at = ProposalState.submitted, utcnow()
    session.add(proposal)
    session.flush()
    return proposal


def add_member(session: Session, *, actor: User, proposal_id: int, email: str) -> ProposalMember:
    """The PI adds a co-investigator who already has an account. The refusal is the same whether the address has
    no account or an account of another role, so that it reveals neither."""
    email = parse(Email, email, "email")
    proposal = lock(session, Proposal, proposal_id)
    if proposal is None or not is_member(session, actor, proposal_id):
        raise NotFound(f"no proposal {proposal_id}")
    if proposal.pi_id != actor.id:
        raise Forbidden("only the PI adds co-investigators")
    user = session.exec(select(User).where(User.email == normalise_email(email))).first()
    if user is None or not user.has(Role.researcher):
        raise NotFound(f"no researcher account can be added as {email}; co-investigators sign up as researchers "
                       "first")
    if session.get(ProposalMember, (proposal_id, user.id)):
        raise Conflict(f"{email} is already a member")
    member = ProposalMember(proposal_id=proposal_id, user_id=user.id, role=MemberRole.coi)
    session.add(member)
    session.flush()
    return member


def list_visible(session: Session, *, actor: User) -> list[Proposal]:
    if actor.has(Role.admin):
        query = select(Proposal).where(Proposal.state != ProposalState.draft)
    else:
        query = select(Proposal).join(ProposalMember).where(ProposalMember.user_id == actor.id)
    return list(session.exec(query.order_by(Proposal.id.desc())))


def to_public(session: Session, proposal: Proposal) -> ProposalPublic:
    rows = session.exec(select(ProposalMember, User).join(User).where(ProposalMember.proposal_id == proposal.id))
    members = [MemberPublic(user_id=u.id, name=u.name, email=u.email, role=m.role) for m, u in rows]
    award = session.exec(select(Award).where(Award.proposal_id == proposal.id)).first()
    award_public = None
    if award:
        award_public = AwardPublic(id=award.id, gpu_hours=award.gpu_hours, priority=award.priority,
                                   awarded_at=award.awarded_at, exclusive_until=award.exclusive_until,
                                   used_gpu_hours=award_used(session, award.id) / 3600)
    return ProposalPublic(**proposal.model_dump(), members=members, award=award_public)
