"""Proposals: written by a researcher (the PI) in an open call, kept as a draft, then submitted.

Their states change only through `service.proposals.states`; who may do what is `service.proposals.access`.
Every check runs before anything is written, so a refused request leaves nothing half-stored.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, select

from jobs.config import (
    AblationConfig,
    DescriptorConfig,
    DuplicationConfig,
    JobPlanError,
    ModelAnalysis,
    Plan,
    RouterConfig,
    SampleConfig,
    TrainConfig,
    parse_job_plan,
)
from service.archive import service as archive
from service.calls.service import get_call, is_open
from service.datasets import pinning
from service.errors import Conflict, Forbidden, Invalid
from service.ledger.service import award_used
from service.mail import outbox
from service.models import (
    Award,
    Call,
    CallKind,
    MemberRole,
    Proposal,
    ProposalEvent,
    ProposalInvite,
    ProposalMember,
    ProposalState,
    Role,
    User,
)
from service.proposals import access, states
from service.proposals.access import Act
from service.proposals.schemas import (
    AwardPublic,
    MemberPublic,
    ProposalCreate,
    ProposalDraft,
    ProposalPublic,
    ProposalUpdate,
)
from service.timeutil import utcnow
from service.types import words


def validate_job_plan(session: Session, actor: User, plan: dict[str, Any]) -> Plan:
    """The plan parsed by the job's own config model, its names pinned to what they point to now (see
    service.datasets.pinning); a sample plan must name a model version, or a checkpoint the actor may read."""
    try:
        parsed = parse_job_plan(plan)
    except JobPlanError as exc:
        raise Invalid(str(exc)) from None
    if isinstance(parsed, TrainConfig):
        return pinning.pin_train(session, parsed)
    if isinstance(parsed, SampleConfig) and (parsed.model or parsed.expert_checkpoints or parsed.router_sha256):
        return pinning.pin_sample(session, parsed)
    if isinstance(parsed, ModelAnalysis):
        return pinning.pin_model_analysis(session, actor, parsed)
    if isinstance(parsed, DuplicationConfig):
        return pinning.pin_duplication(session, parsed)
    if isinstance(parsed, RouterConfig):
        return pinning.pin_router(session, parsed)
    if isinstance(parsed, DescriptorConfig):
        return pinning.pin_descriptor(session, parsed)
    if isinstance(parsed, AblationConfig):
        return pinning.pin_ablation(session, parsed)
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
    proposal.parent_award_id = data.parent_award_id
    proposal.subject, proposal.keywords = data.subject.strip(), words(data.keywords)
    proposal.updated_at = utcnow()
    session.add(proposal)
    session.flush()
    if proposal_id is None:
        session.add(ProposalMember(proposal_id=proposal.id, user_id=actor.id, role=MemberRole.pi))
        session.flush()
    return proposal


def delete_draft(session: Session, *, actor: User, proposal_id: int) -> None:
    """The PI throws a draft away (members, invites and all); a submitted proposal stays."""
    proposal = _get_own_draft(session, actor, proposal_id)
    for model in (ProposalMember, ProposalInvite, ProposalEvent):
        for row in session.exec(select(model).where(model.proposal_id == proposal_id)):
            session.delete(row)
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
    if call.kind == CallKind.supplemental:
        _check_top_up(session, actor, call, data.parent_award_id, data.requested_gpu_hours)
        kind, plan_json = "supplement", {}
    else:
        plan = validate_job_plan(session, actor, data.job_plan)
        kind, plan_json = plan.kind, plan.model_dump(mode="json")
    if data.submit:
        _check_submittable(session, call, data.requested_gpu_hours)
    else:
        _check_capacity(call, data.requested_gpu_hours)
    proposal = Proposal(
        call_id=call.id, pi_id=actor.id, title=data.title.strip(), abstract=data.abstract,
        justification=data.justification, requested_gpu_hours=data.requested_gpu_hours,
        job_kind=kind, job_plan=plan_json, state=ProposalState.draft, subject=data.subject.strip(),
        keywords=words(data.keywords),
        parent_award_id=data.parent_award_id if call.kind == CallKind.supplemental else None,
    )
    session.add(proposal)
    session.flush()
    session.add(ProposalMember(proposal_id=proposal.id, user_id=actor.id, role=MemberRole.pi))
    session.flush()
    if data.submit:
        states.move(session, proposal, ProposalState.submitted, actor=actor)
        confirm_submission(session, proposal, call)
    return proposal


def get_visible(session: Session, *, actor: User, proposal_id: int) -> Proposal:
    """A proposal `actor` may read (see `service.proposals.access`); 404 to anyone else."""
    return access.get(session, actor, proposal_id)


def _get_own_draft(session: Session, actor: User, proposal_id: int) -> Proposal:
    """The actor's own draft, locked, so that an edit and a submission cannot both pass the draft check."""
    proposal = access.get(session, actor, proposal_id, Act.write, for_update=True)
    if proposal.state != ProposalState.draft:
        raise Conflict(f"proposal {proposal_id} is {proposal.state}; only a draft can change")
    return proposal


def update_proposal(session: Session, *, actor: User, proposal_id: int, data: ProposalUpdate) -> Proposal:
    proposal = _get_own_draft(session, actor, proposal_id)
    changes = data.model_dump(exclude_unset=True, exclude_none=True)
    if "keywords" in changes:
        changes["keywords"] = words(changes["keywords"])
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
    call = get_call(session, proposal.call_id)
    _check_submittable(session, call, proposal.requested_gpu_hours)
    if call.kind == CallKind.supplemental:
        _check_top_up(session, actor, call, proposal.parent_award_id, proposal.requested_gpu_hours)
    else:
        plan = validate_job_plan(session, actor, proposal.job_plan)
        proposal.job_plan, proposal.job_kind = plan.model_dump(mode="json"), plan.kind
    session.add(proposal)
    states.move(session, proposal, ProposalState.submitted, actor=actor)
    confirm_submission(session, proposal, call)
    return proposal


def confirm_submission(session: Session, proposal: Proposal, call: Call) -> None:
    """The e-mail that confirms a submission to the whole team."""
    outbox.queue_all(session, team(session, proposal.id),
                     f"Submitted: {proposal.title}",
                     f"The proposal “{proposal.title}” (number {proposal.id}) was submitted to the call "
                     f"“{call.title}” on {proposal.submitted_at:%Y-%m-%d %H:%M} UTC. Its text is now frozen; you may "
                     "still withdraw it before a decision.")


def events(session: Session, proposal_id: int) -> list[ProposalEvent]:
    """The proposal's changes of state, oldest first (who made them is not shown to the team)."""
    return list(session.exec(select(ProposalEvent).where(ProposalEvent.proposal_id == proposal_id)
                             .order_by(ProposalEvent.id)))


def team(session: Session, proposal_id: int) -> list[User]:
    return list(session.exec(select(User).join(ProposalMember).where(ProposalMember.proposal_id == proposal_id)))


def withdraw(session: Session, *, actor: User, proposal_id: int, reason: str = "") -> Proposal:
    """The PI withdraws the proposal at any time before a decision."""
    proposal = access.get(session, actor, proposal_id, Act.write, for_update=True)
    return states.move(session, proposal, ProposalState.withdrawn, actor=actor, reason=reason or "withdrawn by the PI")


def _check_top_up(session: Session, actor: User, call: Call, parent_award_id: int | None, hours: float) -> None:
    """A supplemental proposal tops up an active award (within its exclusive period) of a proposal its PI leads, by
    at most that award's GPU-hours."""
    if parent_award_id is None:
        raise Invalid("parent_award_id: a supplemental proposal names the award it tops up")
    parent = session.get(Award, parent_award_id)
    owner = session.get(Proposal, parent.proposal_id) if parent else None
    if parent is None or owner is None or owner.pi_id != actor.id or parent.tops_up_award_id is not None:
        raise Invalid(f"parent_award_id: you lead no award {parent_award_id}")
    if parent.exclusive_until <= utcnow():
        raise Invalid(f"parent_award_id: award {parent_award_id} is no longer active (its exclusive period ended "
                      f"{parent.exclusive_until:%Y-%m-%d})")
    if hours > parent.gpu_hours:
        raise Invalid(f"requested_gpu_hours: a top-up is at most the award's own {parent.gpu_hours:g} GPU-hours")


def list_visible(session: Session, *, actor: User) -> list[Proposal]:
    """What `actor` may read, newest first."""
    return list(session.exec(select(Proposal).where(access.readable(actor)).order_by(Proposal.id.desc())))


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
