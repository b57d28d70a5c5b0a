""""Analyse this run": a team asks for an analysis of its own finished training run, run on the same award.

The analysis is a run of the award like the training was: charged to the award's account, and refused once the
award has no GPU-seconds left. Its plan names the run (`run`), pinned to the run's checkpoint and training set
as any analysis plan is; the training run's page then lists it with its report."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session

from service.archive import storage
from service.errors import Conflict, Forbidden, Invalid
from service.ledger.service import award_balance
from service.models import Award, Run, RunState, User
from service.proposals.access import is_member
from service.proposals.service import validate_job_plan
from service.runs.service import get_visible

FOLLOW_UP_KINDS = ("replication", "extraction", "quality")  # the analyses of one model against its training set


def offered(session: Session, actor: User, run: Run) -> bool:
    """Whether `actor` may ask for an analysis of `run`: a finished training run of the actor's own team."""
    return run.job_kind == "train" and run.state == RunState.succeeded and is_member(session, actor, run.proposal_id)


def request(session: Session, actor: User, run_id: int, plan: dict[str, Any]) -> Run:
    """Queue `plan` (an analysis, its `run` set to `run_id`) on the award of the training run `run_id`."""
    run = get_visible(session, actor=actor, run_id=run_id)
    if not offered(session, actor, run):  # say which condition fails
        if not is_member(session, actor, run.proposal_id):
            raise Forbidden("only the proposal's team may spend its award on an analysis")
        raise Conflict(f"run {run_id} is not a finished training run: only those are analysed")
    if plan.get("kind") not in FOLLOW_UP_KINDS:
        raise Invalid(f"job_plan.kind: a follow-up is one of {', '.join(FOLLOW_UP_KINDS)}")
    if plan.get("model") is not None or plan.get("run", run_id) != run_id:
        raise Invalid(f"job_plan: a follow-up analyses run {run_id}; name no other model or run")
    award = session.get(Award, run.award_id)
    if award is None:
        raise Conflict(f"run {run_id} has no award to run an analysis on")
    if award_balance(session, award.id) <= 0:
        raise Conflict(f"award {award.id} has no GPU-hours left for an analysis")
    pinned = validate_job_plan(session, actor, {**plan, "run": run_id})
    analysis = Run(award_id=award.id, proposal_id=run.proposal_id, job_kind=pinned.kind,
                   job_plan=pinned.model_dump(mode="json"), gpus=run.gpus)
    storage.check_room(session, analysis)
    session.add(analysis)
    session.flush()
    return analysis
