"""The coordinator of runs that several nodes train together (DiLoCo), behind the job channel.

The observatory itself coordinates: each worker (an attempt of the run on its own node) sends its contribution for
the open round over its attempt's channel, and the round closes when every live worker has sent one (and at least
`min_workers` did), or once `sync_timeout_s` has passed since the first arrived, whichever comes first: nobody
waits on the slowest home link for longer than that. Closing a round averages the pseudo-gradients (weighted by the
samples each worker trained on), takes the outer Nesterov step (jobs.diloco) and writes the next global weights and
the outer momentum to the archive, so no pool node holds anything the run needs: a worker lost, or the node that
would have coordinated, costs at most its own round. A contribution for a round that has closed is dropped (and
said so on the round); its worker continues from the newest global weights.

A lost worker keeps, in the ledger, its time up to the contribution it sent that a round took: its attempt's
checkpoint time is set to that contribution's arrival when the round closes.
"""

from __future__ import annotations

import io
import time
from datetime import datetime
from typing import BinaryIO

from pydantic import BaseModel
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import aliased
from sqlmodel import Session, select

import jobs.diloco as diloco
from jobs.config import TrainConfig
from service.archive.service import read_object
from service.archive.store import ArchiveStore
from service.errors import Busy, Conflict, Invalid
from service.models import AttemptState, RoundContribution, Run, RunAttempt, TrainingRound
from service.timeutil import utcnow

MAX_WAIT_S = 20.0  # the longest one call waits for a round to close
POLL_S = 0.25


def in_rounds(run: Run) -> bool:
    """Whether several nodes train this run together."""
    return run.job_kind == "train" and int((run.job_plan or {}).get("workers") or 1) > 1


def plan_of(run: Run) -> TrainConfig:
    return TrainConfig.model_validate(run.job_plan)


class RoundView(BaseModel):
    """What a worker learns from the coordinator: the open round, the global weights it starts from, and, once the
    last round has closed, that training is over and whether this worker makes the run's outputs."""

    round: int
    step: int
    global_sha256: str | None
    finished: bool
    finisher: bool
    worker: int
    workers: int
    # When the global weights travel down as int8 updates: the update that makes them from the previous global
    # weights (a worker holding those applies it and checks the result against the digest the update carries).
    update_sha256: str | None = None
    update_from_sha256: str | None = None


class Taken(BaseModel):
    """Whether a contribution was taken into its round (false: the round had closed without it)."""

    accepted: bool
    round: int
    reason: str = ""


def rounds_of(session: Session, run_id: int) -> list[TrainingRound]:
    return list(session.exec(select(TrainingRound).where(TrainingRound.run_id == run_id)
                             .order_by(TrainingRound.number)))


def _latest(session: Session, run_id: int) -> TrainingRound | None:
    return session.exec(select(TrainingRound).where(TrainingRound.run_id == run_id)
                        .order_by(TrainingRound.number.desc())).first()


def _live(session: Session, run_id: int) -> list[RunAttempt]:
    return list(session.exec(select(RunAttempt).where(RunAttempt.run_id == run_id,
                                                      RunAttempt.state == AttemptState.running)))


def _require(run: Run) -> TrainConfig:
    if not in_rounds(run):
        raise Conflict("this run is trained by one node: it has no rounds")
    return plan_of(run)


def view(session: Session, store: ArchiveStore, attempt: RunAttempt, *, after: int | None = None,
         wait_s: float = 0) -> RoundView:
    """The coordinator's word for this worker; with `after`, waits (up to `wait_s`) for a round later than it."""
    deadline = time.monotonic() + min(max(wait_s, 0.0), MAX_WAIT_S)
    while True:
        run = session.get(Run, attempt.run_id, populate_existing=True)
        cfg = _require(run)
        close_if_due(session, store, run)
        latest = _latest(session, run.id)
        finished = latest is not None and latest.state == "closed"
        if after is None or latest is None or finished or latest.number > after or time.monotonic() >= deadline:
            break
        session.rollback()  # nothing held while waiting
        time.sleep(POLL_S)
    if latest is None:
        return RoundView(round=0, step=0, global_sha256=None, finished=False, finisher=False, worker=attempt.worker,
                         workers=cfg.workers)
    if not finished:
        previous = session.exec(select(TrainingRound).where(TrainingRound.run_id == run.id,
                                                            TrainingRound.number == latest.number - 1)).first()
        return RoundView(round=latest.number, step=latest.step, global_sha256=latest.base_sha256, finished=False,
                         finisher=False, worker=attempt.worker, workers=cfg.workers,
                         **_update_of(previous))
    return RoundView(round=latest.number + 1, step=latest.step + latest.steps, global_sha256=latest.result_sha256,
                     finished=True, finisher=_finisher(session, latest, attempt), worker=attempt.worker,
                     workers=cfg.workers, **_update_of(latest))


def _update_of(closed: TrainingRound | None) -> dict[str, str | None]:
    """The int8 update a closed round sent down, and the weights it applies to."""
    if closed is None or not closed.update_sha256:
        return {}
    return {"update_sha256": closed.update_sha256, "update_from_sha256": closed.base_sha256}


def _finisher(session: Session, last: TrainingRound, attempt: RunAttempt) -> bool:
    """Whether this attempt makes the outputs: the first live worker to ask, or the next one to ask once that
    one is no longer live."""
    if last.finisher_attempt_id == attempt.id:
        return True
    holder = session.get(RunAttempt, last.finisher_attempt_id) if last.finisher_attempt_id else None
    if holder is not None and holder.state in (AttemptState.running, AttemptState.succeeded):
        return False  # it makes (or made) the outputs; only a lost or failed one hands the task on
    taken = session.execute(update(TrainingRound).where(
        TrainingRound.id == last.id, TrainingRound.finisher_attempt_id.is_(None) if holder is None
        else TrainingRound.finisher_attempt_id == holder.id).values(finisher_attempt_id=attempt.id)
        .execution_options(synchronize_session=False))
    session.commit()
    return taken.rowcount == 1


def _put(store: ArchiveStore, data: bytes) -> str:
    try:
        sha, _ = store.put(io.BytesIO(data))
    except OSError as exc:
        raise Busy(f"the archive could not store the round's weights ({exc.strerror or exc}); try again later") \
            from None
    return sha


def _stored(store: ArchiveStore, stream: BinaryIO, sha256: str, limit: int) -> bytes:
    try:
        sha, size = store.put(stream, limit=limit)
    except ValueError as exc:
        raise Conflict(str(exc)) from None
    except OSError as exc:
        raise Busy(f"the archive could not store it ({exc.strerror or exc}); try again later") from None
    if sha != sha256:
        raise Conflict(f"the bytes hash to {sha}, not the declared {sha256}")
    return read_object(store, sha, limit=size + 1)


def begin(session: Session, store: ArchiveStore, attempt: RunAttempt, stream: BinaryIO, sha256: str,
          limit: int) -> RoundView:
    """The first worker's initial weights become round 0's global weights; refused once the run has rounds."""
    run = session.get(Run, attempt.run_id)
    _require(run)
    if _latest(session, run.id) is not None:
        raise Conflict("the run already has global weights: fetch them instead")
    session.rollback()
    data = _stored(store, stream, sha256, limit)
    try:
        diloco.unpack_weights(data)
    except diloco.PayloadError as exc:
        raise Invalid(f"initial weights: {exc}") from None
    session.add(TrainingRound(run_id=run.id, number=0, step=0, base_sha256=sha256))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise Conflict("another worker set the run's initial weights first: fetch them instead") from None
    run = session.get(Run, attempt.run_id, populate_existing=True)
    run.resume_sha256, run.resume_step = sha256, 0
    session.add(run)
    session.commit()
    return view(session, store, attempt)


def contribute(session: Session, store: ArchiveStore, attempt: RunAttempt, *, number: int, stream: BinaryIO,
               sha256: str, samples: int, steps: int, loss: float | None, limit: int) -> Taken:
    """Take a worker's contribution for round `number`; a round that has closed drops it (accepted: false)."""
    run = session.get(Run, attempt.run_id)
    _require(run)
    latest = _latest(session, run.id)
    if latest is None or latest.number != number or latest.state != "open":
        return _late(session, run.id, attempt, number)
    known = session.exec(select(RoundContribution).where(RoundContribution.run_id == run.id,
                                                         RoundContribution.round == number,
                                                         RoundContribution.attempt_id == attempt.id)).first()
    if known is not None:
        return Taken(accepted=True, round=number, reason="already taken")
    base_sha = latest.base_sha256
    session.rollback()  # nothing locked while the bytes arrive and are checked
    data = _stored(store, stream, sha256, limit)
    try:
        diloco.decode(data, diloco.unpack_weights(read_object(store, base_sha, limit=1 << 40))[0])
    except diloco.PayloadError as exc:
        raise Invalid(f"round {number}: {exc}") from None
    now = utcnow()
    session.add(RoundContribution(run_id=run.id, round=number, attempt_id=attempt.id, attempt=attempt.number,
                                  worker=attempt.worker, sha256=sha256, size=len(data), samples=samples, steps=steps,
                                  loss=loss, received_at=now))
    session.execute(update(TrainingRound).where(TrainingRound.run_id == run.id, TrainingRound.number == number,
                                                TrainingRound.first_at.is_(None)).values(first_at=now)
                    .execution_options(synchronize_session=False))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        return Taken(accepted=True, round=number, reason="already taken")
    close_if_due(session, store, session.get(Run, run.id, populate_existing=True))
    closed = session.exec(select(TrainingRound).where(TrainingRound.run_id == run.id,
                                                      TrainingRound.number == number)).one()
    if closed.state == "closed" and attempt.id not in {c.get("attempt_id") for c in closed.contributors}:
        return _late(session, run.id, attempt, number)
    return Taken(accepted=True, round=number)


def _late(session: Session, run_id: int, attempt: RunAttempt, number: int) -> Taken:
    row = session.exec(select(TrainingRound).where(TrainingRound.run_id == run_id,
                                                   TrainingRound.number == number)).first()
    if row is not None and row.state == "closed":
        row.late = [*row.late, {"attempt": attempt.number, "worker": attempt.worker, "at": utcnow().isoformat()}]
        session.add(row)
        session.commit()
    return Taken(accepted=False, round=number,
                 reason=f"round {number} has closed without it: continue from the newest global weights")


def close_if_due(session: Session, store: ArchiveStore, run: Run, now: datetime | None = None) -> bool:
    """Close the open round when it is due; True when this call closed it."""
    cfg = plan_of(run)
    current = session.exec(select(TrainingRound).where(TrainingRound.run_id == run.id,
                                                       TrainingRound.state == "open")).first()
    if current is None:
        return False
    taken = list(session.exec(select(RoundContribution).where(RoundContribution.run_id == run.id,
                                                              RoundContribution.round == current.number)))
    if not taken:
        return False
    live = _live(session, run.id)
    now = now or utcnow()
    everyone = {a.id for a in live} <= {c.attempt_id for c in taken}
    timed_out = current.first_at is not None and (now - current.first_at).total_seconds() >= cfg.sync_timeout_s
    if not (timed_out or (everyone and len(taken) >= cfg.min_workers)):
        return False
    round_id, number, step = current.id, current.number, current.step
    base_sha, momentum_sha = current.base_sha256, current.base_momentum_sha256
    session.rollback()  # the arithmetic and the archive, with no transaction open
    base, _, _ = diloco.unpack_weights(read_object(store, base_sha, limit=1 << 40))
    momentum, master = diloco.unpack_outer(read_object(store, momentum_sha, limit=1 << 40)) if momentum_sha \
        else (None, None)
    deltas = [(diloco.decode(read_object(store, c.sha256, limit=c.size + 1), base), max(c.samples, 1))
              for c in taken]
    # The workers trained from `base`; the outer step moves the exact weights (the master, when the workers' copy
    # comes by int8 updates).
    weights, momentum = diloco.outer_step(master if master is not None else base, momentum,
                                          diloco.average(deltas), diloco.Outer(cfg.outer_lr, cfg.outer_momentum))
    steps = min(cfg.sync_every, cfg.steps - step)
    new_step = step + steps
    update_sha, sent_down = None, None
    if cfg.sync_down_dtype == "int8" and new_step < cfg.steps:  # the final weights go down whole, exact
        down_payload, shipped = diloco.pack_update(base, weights, round_number=number + 1, step=new_step)
        update_sha, sent_down = _put(store, down_payload), len(down_payload)
        master, weights = weights, shipped
    packed = diloco.pack_weights(weights, round_number=number + 1, step=new_step)
    result_sha = _put(store, packed)
    new_momentum_sha = _put(store, diloco.pack_outer(momentum, master if update_sha else None,
                                                     round_number=number + 1, step=new_step))
    samples = sum(c.samples for c in taken)
    losses = [(c.loss, c.samples) for c in taken if c.loss is not None]
    loss = sum(v * n for v, n in losses) / max(sum(n for _, n in losses), 1) if losses else None
    contributors = [{"attempt_id": c.attempt_id, "attempt": c.attempt, "worker": c.worker, "samples": c.samples,
                     "bytes": c.size, "loss": c.loss, "at": c.received_at.isoformat()} for c in taken]
    closed = session.execute(update(TrainingRound).where(TrainingRound.id == round_id, TrainingRound.state == "open")
                             .values(state="closed", closed_at=utcnow(), result_sha256=result_sha,
                                     momentum_sha256=new_momentum_sha, update_sha256=update_sha, steps=steps,
                                     samples=samples, bytes_in=sum(c.size for c in taken),
                                     bytes_out=(sent_down or len(packed)) * len(taken),
                                     loss=loss, live_workers=len(live), contributors=contributors)
                             .execution_options(synchronize_session=False))
    if closed.rowcount != 1:
        session.rollback()
        return False  # another call closed it
    if new_step < cfg.steps:
        session.add(TrainingRound(run_id=run.id, number=number + 1, step=new_step, base_sha256=result_sha,
                                  base_momentum_sha256=new_momentum_sha))
    session.execute(update(Run).where(Run.id == run.id).values(resume_sha256=result_sha, resume_step=new_step)
                    .execution_options(synchronize_session=False))
    for c in taken:  # what a lost worker keeps in the ledger: its time up to the contribution a round took
        session.execute(update(RunAttempt).where(RunAttempt.id == c.attempt_id)
                        .values(checkpoint_at=c.received_at, checkpoint_step=new_step)
                        .execution_options(synchronize_session=False))
    session.commit()
    return True


def is_global_weights(session: Session, run_id: int, sha256: str) -> bool:
    """Whether these are the global weights of one of the run's rounds, or an update of them."""
    return session.exec(select(TrainingRound.id).where(
        TrainingRound.run_id == run_id,
        (TrainingRound.base_sha256 == sha256) | (TrainingRound.result_sha256 == sha256)
        | (TrainingRound.update_sha256 == sha256))).first() is not None


def referenced(session: Session) -> set[str]:
    """The archive objects rounds still need: each open round's global weights and momentum, and what was sent
    for it (closed rounds' files are history; the newest global weights are the run's resume state)."""
    found: set[str] = set()
    for base, momentum in session.exec(select(TrainingRound.base_sha256, TrainingRound.base_momentum_sha256)
                                       .where(TrainingRound.state == "open")).all():
        found.update(sha for sha in (base, momentum) if sha)
    found.update(session.exec(select(RoundContribution.sha256).join(
        TrainingRound, (TrainingRound.run_id == RoundContribution.run_id)
        & (TrainingRound.number == RoundContribution.round)).where(TrainingRound.state == "open")).all())
    before = aliased(TrainingRound)  # the update that made each open round's weights, which workers still fetch
    found.update(sha for sha in session.exec(select(before.update_sha256).join(
        TrainingRound, (TrainingRound.run_id == before.run_id) & (TrainingRound.number == before.number + 1))
        .where(TrainingRound.state == "open")).all() if sha)
    return found
