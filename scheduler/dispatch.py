"""Dispatch, in phases: read the whole queue, the awards' standing and the pool's nodes; decide where each run
goes (a pure policy, scheduler.policy); claim what was chosen; then for each run write its attempt, submit it to
Ray pinned to its node with no transaction open, and record the outcome guarded by the claim.

An attempt (with its token) is committed before its job is submitted, so a job that starts while the scheduler
dies can still report; once the run's claim expires, any scheduler of the pool finds the attempt
(`recover_stranded`): adopted if Ray has its job, retired if not, so that it no longer holds its node.
"""

from __future__ import annotations

import importlib.util
import logging
import secrets
import shlex
import sys
from pathlib import Path
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from jobs.kinds import job_kind
from scheduler.local_ray import JOB_STOP_WAIT_S
from scheduler.placement import PoolFacts, VramCache, read_facts, run_needs
from scheduler.policy import decide
from scheduler.ray_backend import NODE_ID_LABEL, JobRequest, JobState, RayBackend
from service.archive.store import ArchiveStore
from service.attempts.service import new_attempt
from service.config import Settings
from service.datasets.pinning import run_inputs
from service.errors import Conflict, DomainError
from service.models import AttemptState, Machine, Run, RunAttempt, RunState
from service.runs import service as runs
from service.runs.state import move_attempt, transition
from service.timeutil import utcnow
from service.volunteers import segments, units

log = logging.getLogger("observatory.scheduler")
SUBMITTED = "submitted to the pool; starting on its node"
MAX_PER_TICK = 32  # runs started per tick: the rest wait for the next, so a tick stays short


def job_code_folder() -> str:
    """The `jobs` package folder, which Ray ships to whichever node runs the job."""
    spec = importlib.util.find_spec("jobs")
    return str(Path(next(iter(spec.submodule_search_locations))).resolve())


class Dispatcher:
    def __init__(self, engine: Engine, settings: Settings, backend: RayBackend, store: ArchiveStore,
                 vram: VramCache | None = None) -> None:
        self.engine, self.settings, self.backend, self.store = engine, settings, backend, store
        self.vram = vram or VramCache()

    def request(self, run: Run, attempt: RunAttempt, token: str) -> JobRequest:
        python = shlex.quote(self.settings.job_python or sys.executable)
        env = {"OBSERVATORY_JOB_URL": self.settings.resolved_job_api_url, "RAY_JOB_STOP_WAIT_TIME_S": JOB_STOP_WAIT_S,
               "OBSERVATORY_JOB_PATIENCE_S": str(self.settings.job_patience_s)}
        if attempt.machine_id is None:  # the head: the operator's own machine
            env["OBSERVATORY_JOB_TOKEN"] = token
        else:  # an owner's machine: its runner claims the token with the machine's credential (never through Ray)
            env["OBSERVATORY_JOB_SUBMISSION"] = attempt.submission_id
        if run.job_kind == "ingest":  # where Commons is, and whom Wikimedia may write to about these requests
            env |= {"OBSERVATORY_COMMONS_API_URL": self.settings.commons_api_url,
                    "OBSERVATORY_COMMONS_CONTACT": self.settings.commons_contact or "",
                    "OBSERVATORY_COMMONS_MIN_INTERVAL_S": str(self.settings.commons_min_interval_s),
                    "OBSERVATORY_COMMONS_FILE_HOSTS": ",".join(self.settings.commons_file_hosts)}
        gpus, cpus = run_needs(self.settings, run.job_kind)
        return JobRequest(
            submission_id=attempt.submission_id, entrypoint=f"{python} -m jobs.runner",
            num_cpus=cpus, num_gpus=gpus, env=env, py_modules=[job_code_folder()],
            label_selector={NODE_ID_LABEL: attempt.node_id} if attempt.node_id else {},
            metadata={"run_id": str(run.id), "proposal_id": str(run.proposal_id), "attempt": str(attempt.number),
                      "pool": self.settings.pool_name})

    def recover_stranded(self) -> int:
        """Settle the attempts a scheduler wrote and then died before recording their submission: once their run's
        claim has expired, an attempt whose job Ray has is adopted, and one whose job Ray does not know is retired,
        so that it stops holding its node and the run is placed again. Returns how many were adopted."""
        now = utcnow()
        with Session(self.engine, expire_on_commit=False) as session:
            stranded = session.exec(
                select(RunAttempt.id, Run.id).join(Run, Run.id == RunAttempt.run_id)
                .where(RunAttempt.pool == self.settings.pool_name, RunAttempt.state == AttemptState.starting,
                       Run.state == RunState.queued, or_(Run.claim_token.is_(None), Run.claim_expires_at < now))
            ).all()
        return sum(self._recover(attempt_id, run_id) for attempt_id, run_id in stranded)

    def _recover(self, attempt_id: int, run_id: int) -> int:
        with Session(self.engine, expire_on_commit=False) as session:
            token, claimed = runs.claim_queued(session, limit=1, ttl_s=self.settings.claim_ttl_s, ids=[run_id])
            submission = session.get(RunAttempt, attempt_id).submission_id
        if not claimed:
            return 0  # another scheduler holds it now
        on_pool = self.backend.snapshot(submission).state != JobState.unknown  # asked with no transaction open
        with Session(self.engine, expire_on_commit=False) as session:
            run, attempt = session.get(Run, run_id), session.get(RunAttempt, attempt_id)
            if run.claim_token != token or attempt.state != AttemptState.starting:
                return 0
            if on_pool:
                log.info("adopting run %s's job %s, submitted by a scheduler that died", run_id, submission)
                return self._started(session, run, attempt, token)
            move_attempt(session, attempt, AttemptState.failed,
                         "never reached the pool: its scheduler stopped before submitting it")
            run.claim_token, run.claim_expires_at = None, None
            session.add(run)
            session.commit()
            log.info("retired run %s's attempt %s, which never reached the pool", run_id, attempt.number)
            return 0

    def dispatch(self, ray_nodes: list[dict[str, Any]] | None = None) -> int:
        """Place and start what fits on `ray_nodes` (the pool's nodes as Ray reports them; asked now if None)."""
        if ray_nodes is None:
            try:
                ray_nodes = self.backend.nodes()
            except Exception:
                log.exception("reading the pool's nodes failed; nothing is dispatched this tick")
                return 0
        with Session(self.engine, expire_on_commit=False) as session:
            facts = read_facts(session, self.settings, ray_nodes, self.vram)
        if facts.held:
            with Session(self.engine) as session:
                self._note_waiting(session, facts.held)
                session.commit()
        if not facts.queue:
            return 0
        decision = decide(facts.queue, facts.nodes, facts.shares)
        placed = dict(list(decision.place.items())[:MAX_PER_TICK])
        copies = {r.run_id for r in facts.queue if r.replica} & set(placed)
        with Session(self.engine, expire_on_commit=False) as session:
            self._note_waiting(session, {k: v for k, v in decision.wait.items() if k not in copies})
            token, claimed = runs.claim_queued(session, limit=len(placed) + len(decision.refuse),
                                               ttl_s=self.settings.claim_ttl_s,
                                               ids=[*(set(placed) - copies), *decision.refuse])
            for run in claimed:
                if run.id in decision.refuse:
                    self._guarded(session, run, RunState.failed, decision.refuse[run.id], token)
            session.commit()
        started = sum(self._give_copy(run_id, placed[run_id], facts) for run_id in copies)
        return started + sum(self._dispatch_one(run.id, token, placed[run.id], facts) for run in claimed
                             if run.id in placed)

    def _note_waiting(self, session: Session, wait: dict[int, str]) -> None:
        """Say on each waiting run why it waits, writing only the runs whose reason changed."""
        by_reason: dict[str, list[int]] = {}
        for run_id, why in wait.items():
            by_reason.setdefault(why, []).append(run_id)
        for why, ids in by_reason.items():
            session.execute(update(Run).where(Run.id.in_(ids), Run.state == RunState.queued, Run.message != why)
                            .values(message=why).execution_options(synchronize_session=False))

    def _guarded(self, session: Session, run: Run, target: RunState, reason: str, token: str) -> bool:
        try:
            transition(session, run, target, reason, claim_token=token)
            return True
        except Conflict:
            return False

    def _release(self, run_id: int, token: str) -> None:
        with Session(self.engine) as session:
            run = session.get(Run, run_id)
            if run.claim_token == token:
                run.claim_token, run.claim_expires_at = None, None
                session.add(run)
                session.commit()

    def _dispatch_one(self, run_id: int, token: str, node_id: str, facts: PoolFacts) -> int:
        # Phase 0, reads and I/O with no transaction open: the run's inputs in the store, and whether Ray has the
        # job of an attempt that a scheduler killed mid-dispatch left behind.
        with Session(self.engine, expire_on_commit=False) as session:
            run = session.get(Run, run_id)
            leftover = session.exec(select(RunAttempt).where(RunAttempt.run_id == run_id,
                                                             RunAttempt.state == AttemptState.starting)).first()
            problem = self._missing_inputs(session, run)
        on_pool = leftover is not None and self.backend.snapshot(leftover.submission_id).state != JobState.unknown
        # Phase 1, a short write guarded by the claim: cancel, fail, adopt the leftover, or write a new attempt.
        with Session(self.engine, expire_on_commit=False) as session:
            run = session.get(Run, run_id)
            if run is None or run.claim_token != token or run.state != RunState.queued:
                return 0
            if run.cancel_requested:
                self._guarded(session, run, RunState.cancelled, "cancelled before it started", token)
                session.commit()
                return 0
            if problem:
                self._guarded(session, run, RunState.failed, f"could not start: {problem}", token)
                session.commit()
                return 0
            if units.machine_of_agent_node(node_id) is not None:  # a volunteer's agent pulls it: no Ray job
                return self._give_to_agent(session, run, node_id, facts, claim_token=token)
            if leftover is not None:
                leftover = session.get(RunAttempt, leftover.id)
                if on_pool:
                    return self._started(session, run, leftover, token)
                move_attempt(session, leftover, AttemptState.failed, "never reached the pool")
            attempt, attempt_token = new_attempt(
                session, run, pool=self.settings.pool_name, node_id=node_id, machine_id=facts.machine_of.get(node_id),
                charge_factor=self._charge_factor(facts, node_id))
            session.commit()
            request = self.request(run, attempt, attempt_token)
        # Phase 2, no transaction open: hand the job to Ray. Its submission id makes a retry find the first try.
        try:
            self.backend.submit(request)
        except Exception:
            log.exception("submitting run %s failed; it stays queued", run_id)
            self._release(run_id, token)
            return 0
        # Phase 3, a short write guarded by the claim; a cancel that came meanwhile stops the job again.
        with Session(self.engine, expire_on_commit=False) as session:
            return self._started(session, session.get(Run, run_id), session.get(RunAttempt, attempt.id), token)

    # ---- volunteers' agents: the attempt is written, and the agent takes it when it next asks for work

    def _charge_factor(self, facts: PoolFacts, node_id: str) -> float:
        """GPU-seconds per second on this node: the cheaper of its GPU models where it reported two."""
        return min(self.settings.charge_factor(m) for m in facts.gpu_model_of.get(node_id, [None]))

    def _give_to_agent(self, session: Session, run: Run, node_id: str, facts: PoolFacts, *,
                       claim_token: str | None) -> int:
        """Place the unit (or, with no `claim_token`, one more copy of it, or a check of its training) on a
        volunteer's agent."""
        machine = session.get(Machine, units.machine_of_agent_node(node_id))
        attempt, _ = new_attempt(session, run, pool=units.VOLUNTEER_POOL, node_id=node_id, machine_id=machine.id,
                                 charge_factor=self._charge_factor(facts, node_id))
        check = facts.checks.get(run.id) if claim_token is None else None
        what = "given to a volunteer's agent"
        if check is not None:
            attempt.segment_check = check
            what = f"a check of attempt {check['of']}: re-runs {segments.describe(check)}; given to a volunteer's agent"
        move_attempt(session, attempt, AttemptState.running, f"{what}, which takes it when it next asks for work")
        if claim_token is not None:
            segmented = job_kind(run.job_kind).validated_by == "segments"
            wanted = 1 if segmented else units.copies_needed(machine)
            copies = ("segments of its training re-run by other volunteers land where it said" if segmented
                      else "a single copy (a volunteer with a long record)" if wanted == 1
                      else f"{wanted} copies that agree")
            transition(session, run, RunState.running, f"with volunteers: it counts once {copies}",
                       claim_token=claim_token, extra={"pool": units.VOLUNTEER_POOL, "replicas": wanted})
        session.commit()
        log.info("run %s: attempt %s given to volunteer machine %s", run.id, attempt.number, machine.id)
        return 1

    def _give_copy(self, run_id: int, node_id: str, facts: PoolFacts) -> int:
        token = secrets.token_hex(16)
        with Session(self.engine, expire_on_commit=False) as session:
            if not units.claim_copy(session, run_id, token, self.settings.claim_ttl_s):
                return 0
            run = session.get(Run, run_id)
            try:
                placed = self._give_to_agent(session, run, node_id, facts, claim_token=None)
            finally:
                units.release_copy(session, run_id, token)
                session.commit()
            return placed

    def _started(self, session: Session, run: Run, attempt: RunAttempt, token: str) -> int:
        move_attempt(session, attempt, AttemptState.running, "submitted to the pool")
        try:
            transition(session, run, RunState.running, SUBMITTED, claim_token=token,
                       extra={"pool": self.settings.pool_name})
        except Conflict:
            session.rollback()
            session.refresh(run)
            log.info("run %s changed while it was submitted (%s); stopping its job", run.id, run.state)
            try:
                self.backend.stop(attempt.submission_id)
            except Exception:
                log.exception("stopping the job of run %s failed", run.id)
            attempt = session.get(RunAttempt, attempt.id)
            move_attempt(session, attempt, AttemptState.failed, "the run was cancelled while it was submitted")
            if run.state == RunState.queued and run.claim_token == token:
                self._guarded(session, run, RunState.cancelled, "cancelled before it started", token)
            session.commit()
            return 0
        session.commit()
        log.info("run %s submitted as %s", run.id, attempt.submission_id)
        return 1

    def _missing_inputs(self, session: Session, run: Run) -> str | None:
        try:
            digests = run_inputs(session, run)
        except (ValueError, DomainError) as exc:
            return getattr(exc, "message", str(exc))
        missing = [field for field, sha in digests.items() if not self.store.exists(sha)]
        return f"inputs not in the archive: {', '.join(missing)}" if missing else None
