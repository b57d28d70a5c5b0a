"""Phase II: an awardee's team queues further runs on its award while GPU-hours remain, a new plan or a copy of an
earlier one with changes, or a sweep (one plan run once for each value of one field, compared on one page).

Each plan is validated as at submission and checked against the award's balance (less what its runs still queued
or running are estimated to take) before anything is queued. What the call lets a team decide alone: the proposal's
own job kind, sampling and the analyses, of the models and datasets the proposal named or the award made, each run
within `team_run_share` of the award. Anything beyond goes to the committee as a change request with a reason,
approved or refused in the portal and recorded in the audit log; an approved request's runs are queued then.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, select

from jobs.config import JobPlanError, estimated_seconds, parse_job_plan
from service.analyses.service import ANALYSIS_KINDS
from service.archive import storage
from service.audit.service import record
from service.errors import Conflict, Forbidden, Invalid, NotFound
from service.ledger.service import award_balance, run_charged
from service.mail import outbox
from service.models import (
    Award,
    Call,
    ChangeRequest,
    ChangeState,
    DatasetVersion,
    ModelVersion,
    Proposal,
    Role,
    Run,
    RunGroup,
    RunState,
    User,
)
from service.proposals.access import is_member
from service.proposals.service import team, validate_job_plan
from service.runs.service import create_run
from service.timeutil import utcnow

REF_FIELDS = ("dataset", "base_model", "model", "with_model", "without_model", "descriptor")
SWEEP_MAX = 20
ALONE_KINDS = ("sample", *ANALYSIS_KINDS)  # beside the proposal's own kind


@dataclass
class Queued:
    runs: list[Run] = field(default_factory=list)
    change: ChangeRequest | None = None
    sweep: RunGroup | None = None


def _award(session: Session, award_id: int) -> tuple[Award, Proposal, Call]:
    award = session.get(Award, award_id)
    if award is None or award.tops_up_award_id is not None:
        raise NotFound(f"no award {award_id} with runs of its own")
    proposal = session.get(Proposal, award.proposal_id)
    return award, proposal, session.get(Call, proposal.call_id)


def visible_award(session: Session, actor: User, award_id: int) -> Award:
    """An award its team and admins may see; 404 to anyone else."""
    award = session.get(Award, award_id)
    if award is None or not (actor.has(Role.admin) or is_member(session, actor, award.proposal_id)):
        raise NotFound(f"no award {award_id}")
    return award


def _variants(plan: dict[str, Any], sweep: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The plan once, or once per value of the sweep's field."""
    if not sweep:
        return [plan]
    name, values = str(sweep.get("field", "")), sweep.get("values")
    if not isinstance(values, list) or not 2 <= len(values) <= SWEEP_MAX:
        raise Invalid(f"sweep.values: a list of 2 to {SWEEP_MAX} values")
    if len({repr(v) for v in values}) != len(values):
        raise Invalid("sweep.values: each value once")
    try:
        known = type(parse_job_plan(plan)).model_fields
    except JobPlanError as exc:
        raise Invalid(str(exc)) from None
    if name not in known or name == "kind":
        raise Invalid(f"sweep.field: {name!r} is not a field of a {plan.get('kind')} plan")
    return [{**plan, name: value} for value in values]


def _pinned(session: Session, actor: User, plans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for number, plan in enumerate(plans, start=1):
        try:
            out.append(validate_job_plan(session, actor, plan).model_dump(mode="json"))
        except Invalid as exc:
            prefix = f"sweep value {number}: " if len(plans) > 1 else ""
            raise Invalid(prefix + exc.message) from None
    return out


def _award_gpus(session: Session, award: Award) -> int:
    """The GPUs each of the award's runs takes: what its first run was given."""
    first = session.exec(select(Run).where(Run.award_id == award.id).order_by(Run.id)).first()
    return first.gpus if first else 1


def _estimate_s(plan: dict[str, Any], gpus: int) -> float:
    return estimated_seconds(parse_job_plan(plan)) * max(gpus, 1)


def known_refs(session: Session, award: Award, proposal: Proposal) -> set[str]:
    """The models and datasets the team may use alone: those the proposal named, and those the award made."""
    refs = {str(proposal.job_plan.get(f)) for f in REF_FIELDS if proposal.job_plan.get(f)}
    run_ids = select(Run.id).where(Run.award_id == award.id)
    refs |= {f"{v.name}@{v.version}" for v in session.exec(select(ModelVersion).where(
        ModelVersion.run_id.in_(run_ids)))}
    refs |= {f"{d.name}@{d.version}" for d in session.exec(select(DatasetVersion).where(
        DatasetVersion.run_id.in_(run_ids)))}
    return refs


def beyond(session: Session, award: Award, proposal: Proposal, call: Call, plans: list[dict[str, Any]],
           gpus: int) -> list[str]:
    """What in these plans the team may not decide alone, in words (empty: nothing)."""
    found: list[str] = []
    kinds = {proposal.job_kind, *ALONE_KINDS}
    known = known_refs(session, award, proposal)
    limit = call.team_run_share * award.gpu_hours * 3600
    for plan in plans:
        if plan["kind"] not in kinds:
            found.append(f"another job kind: {plan['kind']} (the proposal's is {proposal.job_kind})")
        for name in REF_FIELDS:
            ref = plan.get(name)
            if ref and str(ref) not in known:
                found.append(f"{name} {ref}, which the proposal did not name")
        if _estimate_s(plan, gpus) > limit + 1e-6:
            found.append(f"one run estimated at {_estimate_s(plan, gpus) / 3600:.3g} GPU-hours, more than "
                         f"{call.team_run_share:.0%} of the award's {award.gpu_hours:g}")
    return list(dict.fromkeys(found))


def committed_s(session: Session, award: Award) -> float:
    """What the award's runs still queued or running are estimated to take beyond what they were charged."""
    total = 0.0
    for run in session.exec(select(Run).where(Run.award_id == award.id,
                                              Run.state.in_((RunState.queued, RunState.running)))):
        try:
            total += max(_estimate_s({**run.job_plan, "kind": run.job_kind}, run.gpus) - run_charged(session, run.id),
                         0)
        except JobPlanError:
            continue
    return total


def _check_balance(session: Session, award: Award, plans: list[dict[str, Any]], gpus: int) -> None:
    left = award_balance(session, award.id) - committed_s(session, award)
    wanted = sum(_estimate_s(p, gpus) for p in plans)
    if wanted > left + 1e-6:
        raise Conflict(f"the award has {max(left, 0) / 3600:.3g} GPU-hours left beyond the runs it has queued or "
                       f"running; {'these runs are' if len(plans) > 1 else 'this run is'} estimated at "
                       f"{wanted / 3600:.3g}")


def _queue(session: Session, actor: User, award: Award, proposal: Proposal, plans: list[dict[str, Any]],
           sweep: dict[str, Any] | None, gpus: int) -> Queued:
    group = None
    if sweep:
        group = RunGroup(award_id=award.id, proposal_id=proposal.id, kind="sweep", k=len(plans), partition="",
                         dataset=str(plans[0].get("dataset") or ""), field=str(sweep["field"]),
                         values=list(sweep["values"]))
        session.add(group)
        session.flush()
    made: list[Run] = []
    for plan in plans:
        storage.check_room(session, Run(award_id=award.id, proposal_id=proposal.id, job_kind=plan["kind"],
                                        job_plan=plan, gpus=gpus))
        first = create_run(session, award=award, proposal=proposal, gpus=gpus, plan=plan, kind=plan["kind"],
                           requested_by=actor.id, group_id=group.id if group else None)
        # a leave-out twin or a family's runs come with it
        made += list(session.exec(select(Run).where(Run.award_id == award.id, Run.id >= first.id).order_by(Run.id)))
    return Queued(runs=list({r.id: r for r in made}.values()), sweep=group)


def queue_runs(session: Session, actor: User, award_id: int, plan: dict[str, Any], *,
               sweep: dict[str, Any] | None = None, reason: str = "") -> Queued:
    """Queue `plan` (or a sweep of it) on the award, or file it as a change request when it goes beyond what the
    team may decide alone (`reason` then says why it is needed)."""
    award, proposal, call = _award(session, award_id)
    if not is_member(session, actor, proposal.id):
        raise Forbidden("only the proposal's team queues runs on its award")
    if not isinstance(plan, dict) or not plan.get("kind"):
        raise Invalid("job_plan: a plan with its kind (copy an earlier run's plan to start from it)")
    gpus = _award_gpus(session, award)
    pinned = _pinned(session, actor, _variants(plan, sweep))
    if sweep and pinned[0]["kind"] == "train" and (int(pinned[0].get("experts") or 1) > 1 or any(
            p.get("leave_out_authors") or p.get("leave_out_classes") for p in pinned)):
        raise Invalid("sweep: a family of experts or a leave-out twin is queued once, not swept")
    _check_balance(session, award, pinned, gpus)
    needs = beyond(session, award, proposal, call, pinned, gpus)
    if needs:
        if not reason.strip():
            raise Invalid("reason: this goes beyond what the call lets a team decide alone ("
                          + "; ".join(needs) + "); give the committee a reason and it becomes a change request")
        change = ChangeRequest(award_id=award.id, proposal_id=proposal.id, requested_by=actor.id,
                               job_plan=plan, sweep=dict(sweep or {}), beyond=needs, reason=reason.strip()[:5000])
        session.add(change)
        session.flush()
        record(session, actor, "change.request", f"change:{change.id}", award=award.id, beyond=needs)
        return Queued(change=change)
    queued = _queue(session, actor, award, proposal, pinned, sweep, gpus)
    record(session, actor, "phase2.queue", f"award:{award.id}", runs=[r.id for r in queued.runs],
           sweep=queued.sweep.id if queued.sweep else None)
    return queued


def decide_change(session: Session, admin: User, change_id: int, *, approve: bool, note: str = "") -> ChangeRequest:
    """The committee approves a change request (its runs are queued, checked again against the balance) or
    refuses it; either way the team is told and the audit log records it."""
    if not admin.has(Role.admin):
        raise Forbidden("only the committee (admins) decides change requests")
    change = session.get(ChangeRequest, change_id)
    if change is None:
        raise NotFound(f"no change request {change_id}")
    if change.state != ChangeState.pending:
        raise Conflict(f"change request {change_id} was already {change.state}")
    award, proposal, _ = _award(session, change.award_id)
    asker = session.get(User, change.requested_by)
    if approve:
        gpus = _award_gpus(session, award)
        pinned = _pinned(session, asker, _variants(change.job_plan, change.sweep or None))
        _check_balance(session, award, pinned, gpus)
        queued = _queue(session, asker, award, proposal, pinned, change.sweep or None, gpus)
        change.run_ids = [r.id for r in queued.runs]
    change.state = ChangeState.approved if approve else ChangeState.refused
    change.decided_by, change.decided_at, change.note = admin.id, utcnow(), note.strip()[:2000]
    session.add(change)
    record(session, admin, f"change.{'approve' if approve else 'refuse'}", f"change:{change.id}", award=award.id,
           runs=change.run_ids, note=change.note)
    verdict = (f"approved: {len(change.run_ids)} run(s) queued" if approve else "refused")
    outbox.queue_all(session, team(session, proposal.id), f"Change request {verdict}: {proposal.title}",
                     f"The change request on “{proposal.title}” ({'; '.join(change.beyond)}) was {verdict}."
                     + (f"\n\nThe committee's note: {change.note}" if change.note else ""))
    return change


def changes(session: Session, actor: User, *, pending_only: bool = False) -> list[ChangeRequest]:
    """Change requests: every one for admins, a team's own for its members."""
    query = select(ChangeRequest).order_by(ChangeRequest.id.desc())
    if pending_only:
        query = query.where(ChangeRequest.state == ChangeState.pending)
    found = list(session.exec(query))
    return found if actor.has(Role.admin) else [c for c in found if is_member(session, actor, c.proposal_id)]


@dataclass(frozen=True)
class SweepRow:
    value: Any
    run: Run
    charged_s: int
    final_loss: float | None


def sweep_rows(session: Session, group: RunGroup) -> list[SweepRow]:
    """The sweep's runs side by side: the value each ran with, its state, its charge and its last loss."""
    rows = []
    for run in session.exec(select(Run).where(Run.group_id == group.id).order_by(Run.id)):
        curve = (run.progress_detail or {}).get("curve") or []
        rows.append(SweepRow(run.job_plan.get(group.field), run, run_charged(session, run.id),
                             float(curve[-1][1]) if curve else None))
    return rows
