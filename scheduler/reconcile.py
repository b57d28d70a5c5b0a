"""Reconcile, in phases, for each live attempt of this scheduler's pool: a short read, Ray's view with no
transaction open, then one write: charge what ran, ask a job to stop, or end the attempt and move its run.

Ending is one transaction with no irreversible step before its commit (objects in the archive are content-addressed
and written idempotently), so a tick that dies half-way is simply done again by the next one. An outage of the
observatory's own (the archive or the database away) is waited out, however long: the run says so and is never
failed for it. Any other error in recording an end is counted on the attempt, once per tick interval however many
schedulers meet it, and fails the run after `max_finish_failures` of them.
"""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from jobs.kinds import RESUME_STATE, job_kind
from scheduler import accounting
from scheduler.outcome import Outcome, Verdict, judge
from scheduler.ray_backend import JobSnapshot, JobState, RayBackend
from service.archive import service as archive
from service.archive.store import ArchiveStore
from service.attempts.service import attempts_of, live_attempts, live_attempts_of, log_tail, read_log, tail_of
from service.config import Settings
from service.datasets import service as datasets
from service.errors import Busy, Conflict, DomainError
from service.modelcards import families
from service.models import AttemptState, Run, RunAttempt, RunState
from service.rounds.service import in_rounds, plan_of
from service.runs.state import FINAL as FINAL_RUN
from service.runs.state import STOP_BUDGET, STOP_MOVE, move_attempt, transition
from service.timeutil import utcnow

log = logging.getLogger("observatory.scheduler")
ATTEMPT_STATE = {Outcome.succeeded: AttemptState.succeeded, Outcome.failed: AttemptState.failed,
                 Outcome.stopped: AttemptState.stopped, Outcome.lost: AttemptState.lost,
                 Outcome.killed: AttemptState.lost}
MAX_LOST = 10  # node losses a run survives; each costs nothing, but a pool that loses everything must not loop
QUIET_S = 30  # a job asked to stop that has not called in this long is stopped through Ray instead


class Reconciler:
    def __init__(self, engine: Engine, settings: Settings, backend: RayBackend, store: ArchiveStore) -> None:
        self.engine, self.settings, self.backend, self.store = engine, settings, backend, store

    def reconcile(self, ray_nodes: list[dict[str, Any]] | None = None) -> int:
        """Follow every running attempt; `ray_nodes` is the pool as Ray reported it this tick (asked now if None)."""
        with Session(self.engine, expire_on_commit=False) as session:
            ids = [a.id for a in live_attempts(session, self.settings.pool_name) if a.state == AttemptState.running]
        if not ids:
            return 0
        alive = self._alive_nodes(ray_nodes)
        finished = 0
        for attempt_id in ids:
            try:
                finished += self._reconcile_one(attempt_id, alive)
            except (Busy, OperationalError) as exc:
                log.warning("reconciling attempt %s waits for the observatory: %s", attempt_id, exc)
                self._note_outage(attempt_id, exc)
            except Exception as exc:
                log.exception("reconciling attempt %s failed; retrying next tick", attempt_id)
                self._count_failure(attempt_id, exc)
        return finished

    def _alive_nodes(self, ray_nodes: list[dict[str, Any]] | None) -> set[str] | None:
        try:
            nodes = self.backend.nodes() if ray_nodes is None else ray_nodes
        except Exception:
            return None  # unknown: judge by Ray's job states alone
        return {n["node_id"] for n in nodes if n.get("state") == "ALIVE"}

    def _reconcile_one(self, attempt_id: int, alive: set[str] | None) -> int:
        with Session(self.engine, expire_on_commit=False) as session:
            attempt = session.get(RunAttempt, attempt_id)
            submission, reported = attempt.submission_id, attempt.exit_code is not None
            run = session.get(Run, attempt.run_id)
            package = archive.find_artifact(session, run.id, "dataset.tar") if attempt.exit_code == 0 \
                and job_kind(run.job_kind).makes_dataset else None
        # Ray is asked with no transaction open: its view, and the log it kept of a job that never reported.
        snapshot = self.backend.snapshot(submission)
        node_alive = None if alive is None or not snapshot.node_id else snapshot.node_id in alive
        going = snapshot.state in (JobState.pending, JobState.running)
        ray_log = "" if reported or going else self._ray_log(submission)
        # A finished ingest's package is checked here too, however big, with no transaction (nor SQLite's write
        # lock) held: registering it below is then a few rows.
        checked = self._check_package(run, package.sha256) if package is not None and not going else None
        stop = False
        with Session(self.engine, expire_on_commit=False) as session:
            attempt = session.get(RunAttempt, attempt_id)
            if attempt.state != AttemptState.running:
                return 0  # another scheduler got there first
            run = session.get(Run, attempt.run_id)
            if snapshot.node_id and attempt.node_id != snapshot.node_id:
                attempt.node_id = snapshot.node_id
                session.add(attempt)
            # A job that never reported its end may have said why on its node: Ray's log has the runner's words too.
            tail = tail_of(ray_log) if ray_log else log_tail(session, attempt.id)
            verdict = judge(snapshot, exit_code=attempt.exit_code, reported=attempt.reported, node_alive=node_alive,
                            log_tail=tail)
            if verdict is None:
                stop = self._still_going(session, attempt, run, snapshot)
                session.commit()
            else:
                try:
                    self._end(session, attempt, run, verdict, snapshot, ray_log, checked)
                except Conflict:
                    session.rollback()
                    return 0
                session.commit()
                return 1
        if stop:  # after the commit: no transaction waits on Ray
            self.backend.stop(submission)
        return 0

    def _ray_log(self, submission: str) -> str:
        try:
            return self.backend.logs(submission)
        except Exception:
            return ""  # the node, and the log with it, may be gone

    # ---- a job still going ---------------------------------------------------------------------------------

    def _still_going(self, session: Session, attempt: RunAttempt, run: Run, snapshot: JobSnapshot) -> bool:
        """Charge what ran; returns whether the job must be stopped through Ray (it was asked and is silent)."""
        if snapshot.state == JobState.running:
            if run.message.startswith("submitted to the pool"):
                run.message = "running on the pool"
                session.add(run)
            _, used_up = accounting.charge_running(session, attempt, run,
                                                   interval_s=self.settings.charge_interval_s)
            if used_up and run.stop_reason != STOP_BUDGET:
                session.execute(update(Run).where(Run.id == run.id).values(
                    stop_reason=STOP_BUDGET, message="stopping: the award's GPU-hours are used up; saving a checkpoint")
                    .execution_options(synchronize_session=False))
        session.refresh(run)
        if not (run.cancel_requested or run.stop_reason or attempt.stop_reason):
            return False
        quiet = attempt.last_heard_at is None or (utcnow() - attempt.last_heard_at).total_seconds() > QUIET_S
        return snapshot.state == JobState.pending or quiet

    # ---- an attempt that ended ------------------------------------------------------------------------------

    def _check_package(self, run: Run, sha256: str) -> datasets.CheckedPackage | DomainError:
        try:
            return datasets.check_run_package(self.store, run, sha256)
        except DomainError as exc:
            return exc

    def _end(self, session: Session, attempt: RunAttempt, run: Run, verdict: Verdict, snapshot: JobSnapshot,
             ray_log: str, checked: datasets.CheckedPackage | DomainError | None = None) -> None:
        ended_at = snapshot.ended_at or utcnow()
        keeps_work = verdict.outcome not in (Outcome.lost, Outcome.killed)
        move_attempt(session, attempt, ATTEMPT_STATE[verdict.outcome], verdict.reason,
                     extra={"ended_at": min(ended_at, utcnow())})
        accounting.settle(session, attempt, run, ended_at=accounting.work_ended_at(attempt, ended_at),
                          keeps_work=keeps_work)
        self._archive_log(session, run, attempt, ray_log)
        if in_rounds(run) and self._worker_ended(session, run, attempt, verdict):
            return
        target, message, extra = self._next_state(session, run, attempt, verdict, checked)
        transition(session, run, target, message, extra=extra)
        if target != RunState.queued:
            self._archive_run_log(session, run)
            archive.write_manifest(session, store=self.store, run=run)
        if target == RunState.succeeded and run.group_id is not None:
            self._finish_rebuild(session, run.group_id)

    def _worker_ended(self, session: Session, run: Run, attempt: RunAttempt, verdict: Verdict) -> bool:
        """One worker of a run in rounds ended while the run goes on (other workers live, and it did not make the
        outputs), or after the run ended: the run does not move. Returns whether that is so."""
        others = [a for a in live_attempts_of(session, run.id) if a.id != attempt.id]
        if RunState(run.state) in FINAL_RUN:
            return True
        if not others or verdict.outcome == Outcome.succeeded:
            return False
        ended = [a for a in attempts_of(session, run.id) if a.state in (AttemptState.failed, AttemptState.lost)]
        if len(ended) > max(MAX_LOST, 2 * plan_of(run).workers):  # workers keep failing or vanishing: stop trying
            transition(session, run, RunState.failed, f"its workers failed or were lost {len(ended)} times; the "
                                                      f"last: {verdict.reason[-300:]}")
            self._archive_run_log(session, run)
            archive.write_manifest(session, store=self.store, run=run)
            return True
        if verdict.outcome in (Outcome.lost, Outcome.killed, Outcome.failed):
            session.execute(update(Run).where(Run.id == run.id).values(
                message=f"worker {attempt.worker} ended ({verdict.reason[:300]}); training goes on with "
                        f"{len(others)} worker{'s' if len(others) > 1 else ''}").execution_options(
                synchronize_session=False))
        return True

    def _finish_rebuild(self, session: Session, group_id: int) -> None:
        """The last run of a family's rebuild registers the new version (and withdraws the old one). A refusal
        leaves the runs succeeded and says why in the log; an admin can register the family by hand."""
        try:
            with session.begin_nested():
                version = families.finish_rebuild(session, self.store, group_id)
        except DomainError as exc:
            log.warning("family %s was rebuilt, but its new version was not registered: %s", group_id, exc.message)
            return
        if version is not None:
            log.info("family %s rebuilt as %s@%s", group_id, version.name, version.version)

    def _next_state(self, session: Session, run: Run, attempt: RunAttempt, verdict: Verdict,
                    checked: datasets.CheckedPackage | DomainError | None = None,
                    ) -> tuple[RunState, str, dict[str, Any]]:
        kind = job_kind(run.job_kind)
        if verdict.outcome == Outcome.succeeded:
            missing = archive.missing_outputs(session, run, kind)
            if missing:
                return RunState.failed, f"the job ended, but outputs are missing: {', '.join(missing)}", {}
            registered = ""
            if kind.makes_dataset:
                try:
                    if isinstance(checked, DomainError):
                        raise checked
                    version = datasets.register_from_run(session, self.store, run, checked)
                except DomainError as exc:
                    return RunState.failed, f"the job ended, but its dataset was refused: {exc.message}", {}
                registered = f"; registered as dataset {version.name}@{version.version}"
            return RunState.succeeded, f"finished; outputs are in the archive{registered}", {
                "progress": 1.0, "progress_detail": {**run.progress_detail, "fraction": 1.0}}
        if verdict.outcome == Outcome.failed and not (run.cancel_requested or run.stop_reason == STOP_BUDGET):
            return RunState.failed, f"the job failed: {verdict.reason}", {}
        if verdict.outcome == Outcome.stopped and in_rounds(run) and not (run.cancel_requested or run.stop_reason):
            why = "its last worker's machine left" if attempt.stop_reason else "its workers finished the rounds"
            return RunState.queued, f"{why}; queued to go on from its global weights at step {run.resume_step}", {}
        if run.stop_reason == STOP_MOVE and not run.cancel_requested:
            resume = f"from its checkpoint at step {run.resume_step}" if run.resume_sha256 else "from the start"
            return RunState.queued, f"moved off its machine; queued to resume {resume} on another", {
                "stop_reason": None}
        if verdict.outcome == Outcome.stopped or run.cancel_requested or run.stop_reason:
            kept = self._keep_resume_state(session, run)
            if run.cancel_requested:
                why = "cancelled on request"
            elif run.stop_reason == STOP_BUDGET:
                why = "stopped: the award's GPU-hours are used up"
            else:
                why = f"stopped ({verdict.reason})"
            if verdict.outcome == Outcome.failed:  # asked to stop, it ended badly: stopped all the same, and said
                kept += f"; the job ended with an error on the way: {verdict.reason[-300:]}"
            return RunState.cancelled, why + kept, {}
        retries = run.retries_used + (verdict.outcome == Outcome.killed)
        losses = sum(a.state == AttemptState.lost for a in attempts_of(session, run.id))
        if verdict.outcome == Outcome.killed and retries > self.settings.max_retries:
            kept = self._keep_resume_state(session, run)
            return RunState.failed, f"{verdict.reason}; it was retried {self.settings.max_retries} times{kept}", {}
        if losses > MAX_LOST:
            kept = self._keep_resume_state(session, run)
            return RunState.failed, f"its node was lost {losses} times; the pool is too unstable for it{kept}", {}
        resume = f"from the checkpoint at step {run.resume_step}" if run.resume_sha256 else "from the start"
        retry = f" (retry {retries} of {self.settings.max_retries})" if verdict.outcome == Outcome.killed else ""
        return RunState.queued, f"{verdict.reason}; queued to resume {resume}{retry}", {"retries_used": retries}

    def _keep_resume_state(self, session: Session, run: Run) -> str:
        """A run that stops before it finishes keeps its last checkpoint as an output."""
        if not run.resume_sha256 or not job_kind(run.job_kind).resumable:
            return ""
        archive.record(session, run, RESUME_STATE, run.resume_sha256, self.store.size(run.resume_sha256))
        return f"; its checkpoint at step {run.resume_step} is kept as {RESUME_STATE.name}"

    def _archive_log(self, session: Session, run: Run, attempt: RunAttempt, ray_log: str) -> None:
        text = read_log(session, attempt.id) or ray_log  # the job never reported: what Ray kept, if anything
        header = f"# attempt {attempt.number} on {attempt.node_name or attempt.node_id or 'an unknown node'}: " \
                 f"{attempt.state} ({attempt.message})\n"
        archive.ingest_bytes(session, store=self.store, run=run, name=f"attempt-{attempt.number}.log",
                             data=(header + text).encode())

    def _archive_run_log(self, session: Session, run: Run) -> None:
        parts = []
        for attempt in attempts_of(session, run.id):
            parts.append(f"# attempt {attempt.number}: {attempt.state}\n{read_log(session, attempt.id)}")
        archive.ingest_bytes(session, store=self.store, run=run, name="job.log", data="\n".join(parts).encode())

    # ---- outages waited out, other failures counted -------------------------------------------------------

    def _note_outage(self, attempt_id: int, exc: Exception) -> None:
        """Say on the run that its end waits for the observatory; nothing is counted against it."""
        reason = exc.message if isinstance(exc, DomainError) else "the database is unavailable"
        message = f"waiting for the observatory to record this run's end: {reason}"[:2000]
        try:
            with Session(self.engine) as session:
                attempt = session.get(RunAttempt, attempt_id)
                session.execute(update(Run).where(Run.id == attempt.run_id, Run.state == RunState.running,
                                                  Run.message != message)
                                .values(message=message).execution_options(synchronize_session=False))
                session.commit()
        except Exception:
            log.warning("could not note the outage on attempt %s's run", attempt_id)

    def _count_failure(self, attempt_id: int, exc: Exception) -> None:
        """Count a failure to record this attempt's end, at most once per tick interval whoever meets it (several
        schedulers may tick on one pool); fail the run once the attempt has `max_finish_failures`."""
        spacing = timedelta(seconds=0.9 * self.settings.scheduler_interval_s)
        try:
            with Session(self.engine, expire_on_commit=False) as session:
                now = utcnow()
                counted = session.execute(
                    update(RunAttempt).where(RunAttempt.id == attempt_id, RunAttempt.state == AttemptState.running,
                                             or_(RunAttempt.finish_failed_at.is_(None),
                                                 RunAttempt.finish_failed_at <= now - spacing))
                    .values(finish_failures=RunAttempt.finish_failures + 1, finish_failed_at=now)
                    .execution_options(synchronize_session=False)).rowcount
                attempt = session.get(RunAttempt, attempt_id)
                run = session.get(Run, attempt.run_id)
                if counted and run.state == RunState.running \
                        and attempt.finish_failures >= self.settings.max_finish_failures:
                    reason = f"{exc.__class__.__name__}: {exc}"[:500]
                    move_attempt(session, attempt, AttemptState.failed, reason)
                    transition(session, run, RunState.failed,
                               f"the observatory could not record this run's end ({reason}); "
                               f"tried {attempt.finish_failures} times")
                session.commit()
        except Exception:
            log.exception("could not record the failure of attempt %s", attempt_id)
