"""Runs: created from an award, claimed and driven by the scheduler, watched and cancelled by members."""

from __future__ import annotations

import math
import secrets
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import Session, select

from jobs.config import RouterConfig
from service.attempts.service import attempts_of
from service.errors import Conflict, Forbidden, NotFound
from service.ledger.service import entries_for_run, refunded_by_attempt, run_charged
from service.models import Award, Proposal, ProposalMember, Role, Run, RunGroup, RunState, User
from service.proposals.access import is_member
from service.runs import status
from service.runs.schemas import AttemptPublic, ChargePublic, RunPublic
from service.runs.state import FINAL, transition
from service.timeutil import utcnow
from service.volunteers import segments
from service.volunteers.units import VOLUNTEER_POOL


def create_run(session: Session, *, award: Award, proposal: Proposal, gpus: int = 1,
               plan: dict[str, Any] | None = None, kind: str | None = None, requested_by: int | None = None,
               group_id: int | None = None) -> Run:
    """The award's run of the proposal's plan (or of `plan` of `kind`, a further run a team member queued, in a
    sweep's group); returned first of two for a train plan that asks for a leave-out twin (`leave_out_authors`,
    `leave_out_classes`): the same plan, once as it is and once without those authors' and classes' images too;
    and first of K + 1 for a family (`experts`: K), see `create_family`."""
    plan = dict(proposal.job_plan if plan is None else plan)
    kind = kind or proposal.job_kind
    if kind == "train" and int(plan.get("experts") or 1) > 1 and plan.get("cluster") is None:
        return create_family(session, award=award, proposal=proposal, gpus=gpus, plan=plan)[0]
    plans = [plan]
    authors, classes = (list(plan.get(key) or []) if kind == "train" else []
                        for key in ("leave_out_authors", "leave_out_classes"))
    if authors or classes:
        alike = {**plan, "leave_out_authors": [], "leave_out_classes": []}
        plans = [alike, {**alike, "exclude_authors": [*plan.get("exclude_authors", []), *authors],
                         "exclude_classes": [*plan.get("exclude_classes", []), *classes]}]
    runs = [Run(award_id=award.id, proposal_id=proposal.id, job_kind=kind, job_plan=plan, gpus=gpus,
                requested_by=requested_by, group_id=group_id) for plan in plans]
    for run in runs:
        session.add(run)
        session.flush()
    return runs[0]


def create_family(session: Session, *, award: Award, proposal: Proposal, gpus: int = 1,
                  plan: dict[str, Any] | None = None) -> list[Run]:
    """A family's runs, one group: an expert per cluster of the plan's partition (the plan with `cluster` set),
    then the router (a `router` run on the whole dataset, with the experts' resolution and noise schedule). Every
    one is an ordinary run of the award: placed, resumed and charged on its own."""
    plan = dict(proposal.job_plan if plan is None else plan)
    group = RunGroup(award_id=award.id, proposal_id=proposal.id, k=int(plan["experts"]),
                     partition=str(plan["partition"]), dataset=str(plan["dataset"]))
    session.add(group)
    session.flush()
    return family_runs(session, group, plan, list(range(group.k)), gpus=gpus)


def family_runs(session: Session, group: RunGroup, plan: dict[str, Any], clusters: list[int],
                withdrawn: list[str] | None = None, gpus: int = 1) -> list[Run]:
    """The group's expert runs for `clusters` (the family's plan with `cluster` set), then its router run; both
    leave out the images the plan was pinned to leave out, and the `withdrawn` ones a rebuild names."""
    leave_out = sorted(set(withdrawn or []) | set(plan.get("withdrawn_images") or []))
    router = RouterConfig(dataset=plan["dataset"], dataset_digest=plan.get("dataset_digest"),
                          partition=plan["partition"], partition_sha256=plan.get("partition_sha256"),
                          resolution=plan["resolution"], num_train_timesteps=plan["num_train_timesteps"],
                          seed=plan["seed"], withdrawn_images=leave_out)
    runs = [Run(award_id=group.award_id, proposal_id=group.proposal_id, group_id=group.id, job_kind="train",
                job_plan={**plan, "cluster": cluster, "withdrawn_images": leave_out}, gpus=gpus)
            for cluster in clusters]
    runs.append(Run(award_id=group.award_id, proposal_id=group.proposal_id, group_id=group.id, job_kind="router",
                    job_plan=router.model_dump(mode="json"), gpus=gpus))
    for run in runs:
        session.add(run)
        session.flush()
    return runs


def get_visible(session: Session, *, actor: User, run_id: int) -> Run:
    """A run its proposal's members and admins may watch; 404 to anyone else."""
    run = session.get(Run, run_id)
    if run is None or not (actor.has(Role.admin) or is_member(session, actor, run.proposal_id)):
        raise NotFound(f"no run {run_id}")
    return run


def list_visible(session: Session, *, actor: User, limit: int = 200) -> list[Run]:
    """The runs `actor` may watch, newest first: every run for admins, their proposals' runs for the rest."""
    query = select(Run)
    if not actor.has(Role.admin):
        query = query.join(ProposalMember, ProposalMember.proposal_id == Run.proposal_id).where(
            ProposalMember.user_id == actor.id)
    return list(session.exec(query.order_by(Run.id.desc()).limit(limit)))


def runs_by_proposal(session: Session, proposal_ids: list[int]) -> dict[int, list[Run]]:
    """Each proposal's runs, oldest first, in one query (for lists that show how each proposal's work stands)."""
    found: dict[int, list[Run]] = {pid: [] for pid in proposal_ids}
    for run in session.exec(select(Run).where(Run.proposal_id.in_(proposal_ids)).order_by(Run.id)):
        found[run.proposal_id].append(run)
    return found


def list_for_proposal(session: Session, proposal_id: int) -> list[Run]:
    return list(session.exec(select(Run).where(Run.proposal_id == proposal_id).order_by(Run.id)))


def request_cancel(session: Session, *, actor: User, run_id: int) -> Run:
    """A queued run nobody has claimed is cancelled at once; otherwise the cancel is recorded and the scheduler
    acts on it: a claimed run is not started, a running one is asked to stop (its checkpoint is kept).

    Both steps are conditional updates, so a cancel racing a scheduler's claim either cancels the run before the
    claim or lands as a request that the claim's own conditional move to `running` refuses.
    """
    run = get_visible(session, actor=actor, run_id=run_id)
    proposal = session.get(Proposal, run.proposal_id)
    if not actor.has(Role.admin) and proposal.pi_id != actor.id:
        raise Forbidden("only the PI or an admin cancels a run")
    session.refresh(run)
    if run.state in FINAL:
        return run
    who = f"cancelled by {actor.email}"
    if run.state == RunState.queued and run.claim_token is None:
        try:
            return transition(session, run, RunState.cancelled, who, actor=actor.email,
                              extra={"cancel_requested": True})
        except Conflict:
            session.refresh(run)  # claimed meanwhile: fall through to a request
    session.execute(update(Run).where(Run.id == run_id, Run.state.in_([RunState.queued, RunState.running]))
                    .values(cancel_requested=True, message=f"cancel requested by {actor.email}")
                    .execution_options(synchronize_session=False))
    session.flush()
    session.refresh(run)
    return run


# ---- scheduler side ----------------------------------------------------------------------------------------


def claim_queued(session: Session, *, limit: int, ttl_s: int, now: datetime | None = None,
                 ids: list[int] | None = None) -> tuple[str, list[Run]]:
    """Claim up to `limit` queued runs (of `ids`, when given) for this scheduler and commit the claim.

    On PostgreSQL the candidates are locked with FOR UPDATE SKIP LOCKED, so racing schedulers take disjoint
    rows; the conditional UPDATE also makes the claim safe on SQLite, whose writes are serialised.
    """
    now = now or utcnow()
    token = secrets.token_hex(16)
    claimable = (Run.state == RunState.queued) & or_(Run.claim_token.is_(None), Run.claim_expires_at < now)
    if ids is not None:
        claimable = claimable & Run.id.in_(ids)
    candidates = session.exec(
        select(Run.id).where(claimable).order_by(Run.id).limit(limit).with_for_update(skip_locked=True)
    ).all()
    if candidates:
        session.exec(
            update(Run).where(Run.id.in_(candidates), claimable)
            .values(claim_token=token, claim_expires_at=now + timedelta(seconds=ttl_s))
        )
    session.commit()
    runs = list(session.exec(select(Run).where(Run.claim_token == token).order_by(Run.id)))
    return token, runs


CURVE_POINTS = 200  # the live loss curve keeps at most this many (step, loss) points, evenly spaced


def _finite(value: Any) -> Any:
    """The value with every NaN and infinity left out, however deep."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items() if not (isinstance(v, float) and not math.isfinite(v))}
    if isinstance(value, list):
        return [_finite(v) for v in value if not (isinstance(v, float) and not math.isfinite(v))]
    return value


def bounded_progress(run: Run, detail: dict[str, Any]) -> dict[str, Any]:
    """A progress line as the job sent it, held to what the run can be: steps within the plan's (or, without one,
    within the line's own total), no negative counts, and no NaN or infinite numbers (which JSON cannot store)."""
    planned = run.job_plan.get("steps") if isinstance(run.job_plan.get("steps"), int) else None
    out = _finite(detail)
    counts = {key: out[key] for key in ("step", "loss_step", "total")
              if isinstance(out.get(key), int) and not isinstance(out.get(key), bool)}
    cap = planned if planned is not None else counts.get("total")
    for key, value in counts.items():
        out[key] = max(0, min(value, cap)) if cap is not None and cap >= 0 else max(0, value)
    return out


def record_progress(run: Run, detail: dict[str, Any]) -> None:
    """The job's latest progress line, and the run's loss curve so far: a reported (step, loss) is kept when its
    step is a multiple of `curve_every`, which doubles (dropping the points between) whenever the curve is full."""
    detail = bounded_progress(run, detail)
    previous = run.progress_detail or {}
    curve = [p for p in previous.get("curve", []) if isinstance(p, list) and len(p) == 2]
    every = int(previous.get("curve_every", 1))
    step, loss = detail.get("loss_step", detail.get("step")), detail.get("loss")  # a loss may lag its line
    if isinstance(step, int) and isinstance(loss, int | float) and step % every == 0 \
            and (not curve or step > curve[-1][0]):
        curve.append([step, loss])
        while len(curve) > CURVE_POINTS:
            every *= 2
            curve = [p for p in curve if p[0] % every == 0]
    kept = {"curve": curve, "curve_every": every} if curve else {}
    run.progress_detail = {**{k: v for k, v in detail.items() if k not in ("curve", "curve_every")}, **kept}
    fraction = detail.get("fraction")
    if isinstance(fraction, int | float):
        run.progress = max(0.0, min(1.0, float(fraction)))


def describe(session: Session, run: Run) -> RunPublic:
    """The run as its members see it: state, progress, its attempts, and what each charged the award."""
    public = RunPublic.model_validate(run, from_attributes=True)
    public.gpu_seconds = run_charged(session, run.id)
    refunds = refunded_by_attempt(session, run.id)
    public.attempts = [
        AttemptPublic.model_validate(a, from_attributes=True).model_copy(update={
            "charged": run_charged(session, run.id, a.number), "refunded": refunds.get(a.number, 0),
            "validation": segments.validation(a),
            # A volunteer's machine is not named by the host name it reported (it may name a person).
            **({"node_name": "a volunteer's machine"} if a.pool == VOLUNTEER_POOL else {})})
        for a in attempts_of(session, run.id)
    ]
    latest = public.attempts[-1] if public.attempts else None
    public.waiting = status.word(run.state, latest is not None and latest.started_at is not None) == status.WAITING
    public.began_at = next((a.started_at for a in public.attempts if a.started_at), None)
    return public


def ledger_of(session: Session, run: Run) -> list[ChargePublic]:
    """Every ledger entry of the run, oldest first: debits as positive GPU-seconds, refunds as negative."""
    return [ChargePublic(attempt=e.attempt, kind=str(e.kind), gpu_seconds=-e.amount, note=e.note, at=e.created_at)
            for e in entries_for_run(session, run.id)]
