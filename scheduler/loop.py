"""The scheduler loop: claim queued runs, dispatch them to Ray, reconcile running ones, charge GPU-seconds.

One tick is: dispatch() then reconcile(). Several schedulers may run at once: claims are row locks with an
expiry (see service.runs.service.claim_queued), Ray submission ids are idempotency keys, and charges advance a
per-run watermark under a row lock, so nothing starts or is charged twice.
"""

from __future__ import annotations

import json
import logging
import shlex
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from jobs.kinds import job_kind
from jobs.progress import latest
from scheduler.policy import QueuedRun, decide
from scheduler.ray_backend import JobRequest, JobState, RayBackend
from service.allocations.usage import remaining_gpu_seconds
from service.archive import service as archive
from service.config import Settings
from service.db import writer
from service.files import private_dir
from service.models import Run, RunState
from service.pool.schemas import NodeSeen
from service.pool.service import record_nodes
from service.runs import service as runs
from service.runs.state import move
from service.timeutil import utcnow

log = logging.getLogger("observatory.scheduler")
SUBMITTED = "submitted to the pool; waiting for a free GPU"


@dataclass
class TickReport:
    dispatched: int = 0
    finished: int = 0


class Scheduler:
    def __init__(self, engine: Engine, settings: Settings, backend: RayBackend) -> None:
        self.engine = writer(engine)  # every tick reads, then writes: its transactions are serialised on SQLite
        self.settings = settings
        self.backend = backend
        self.archive_dir = settings.resolved_archive_dir
        self._ticks = 0

    # ---- dispatch -----------------------------------------------------------------------------------------

    def staging_dir(self, run: Run) -> Path:
        return self.archive_dir / "staging" / f"run-{run.id}"

    def entrypoint(self, run: Run) -> str:
        python = shlex.quote(self.settings.job_python or sys.executable)
        config = shlex.quote(json.dumps(run.job_plan))
        output = shlex.quote(str(self.staging_dir(run)))
        if run.job_kind == "train":
            return f"{python} -m jobs.train --config {config} --output {output}"
        if run.job_kind == "sample":
            checkpoint = archive.object_path(self.archive_dir, run.job_plan["checkpoint_sha256"])
            if not checkpoint.exists():
                raise FileNotFoundError(f"checkpoint {run.job_plan['checkpoint_sha256']} is not in the archive")
            return f"{python} -m jobs.sample --config {config} --checkpoint {shlex.quote(str(checkpoint))} " \
                   f"--output {output}"
        raise ValueError(f"no job for kind {run.job_kind!r}")

    def dispatch(self) -> int:
        with Session(self.engine, expire_on_commit=False) as session:
            _, claimed = runs.claim_queued(session, limit=8, ttl_s=self.settings.claim_ttl_s)
            if not claimed:
                return 0
            remaining = {r.award_id: remaining_gpu_seconds(session, r.award_id) for r in claimed}
            decision = decide([QueuedRun(r.id, r.award_id, r.gpus) for r in claimed], remaining, None)
            by_id = {r.id: r for r in claimed}
            for run_id, reason in decision.refuse.items():
                move(by_id[run_id], RunState.failed, reason)
            dispatched = 0
            for run_id in decision.dispatch:
                run = by_id[run_id]
                try:
                    self._submit(run)
                    dispatched += 1
                except (FileNotFoundError, ValueError) as exc:
                    move(run, RunState.failed, f"could not start: {exc}")
                except Exception:  # Ray unreachable: leave it queued for the next tick
                    log.exception("submitting run %s failed; it stays queued", run.id)
                    run.claim_token, run.claim_expires_at = None, None
                session.add(run)
            for run in claimed:
                if run.id not in decision.dispatch and run.id not in decision.refuse:
                    run.claim_token, run.claim_expires_at = None, None
                    session.add(run)
            session.commit()
            return dispatched

    def _submit(self, run: Run) -> None:
        # The attempt is kept only once Ray has the job: a submission that failed half-way is retried under the
        # same id, which Ray recognises, so it can never start twice.
        attempt = run.attempt + 1
        submission_id = f"observatory-run-{run.id}-{run.key}-{attempt}"
        request = JobRequest(
            submission_id=submission_id, entrypoint=self.entrypoint(run),
            num_cpus=0 if self.settings.gpus_per_run else self.settings.cpus_per_run,
            num_gpus=self.settings.gpus_per_run, metadata={"run_id": str(run.id), "proposal_id": str(run.proposal_id)},
        )
        private_dir(self.staging_dir(run))
        self.backend.submit(request)
        run.attempt, run.submission_id = attempt, submission_id
        move(run, RunState.running, SUBMITTED)
        log.info("run %s submitted as %s", run.id, submission_id)

    # ---- reconcile ----------------------------------------------------------------------------------------

    def reconcile(self) -> int:
        finished = 0
        with Session(self.engine, expire_on_commit=False) as session:
            ids = [r.id for r in runs.active_runs(session)]
        for run_id in ids:
            with Session(self.engine, expire_on_commit=False) as session:
                run = session.exec(
                    select(Run).where(Run.id == run_id, Run.state == RunState.running)
                    .with_for_update(skip_locked=True)
                ).first()
                if run is None:
                    continue
                try:
                    finished += self._reconcile_one(session, run)
                except Exception:
                    log.exception("reconciling run %s failed; retrying next tick", run_id)
                    session.rollback()
                    continue
                session.add(run)
                session.commit()
        return finished

    def _reconcile_one(self, session: Session, run: Run) -> int:
        snapshot = self.backend.snapshot(run.submission_id)
        state, now = snapshot.state, utcnow()
        if state == JobState.unknown:
            move(run, RunState.queued, "the pool lost this run; it is queued to resume")
            return 0
        logs = self.backend.logs(run.submission_id)
        record = latest(logs)
        if record:
            runs.record_progress(run, record)
        if state == JobState.pending:
            run.charged_until = now  # waiting for a free GPU is not charged
            return 0
        # A finished job is charged up to the moment Ray saw it end, not up to this tick.
        runs.charge(run, min(now, snapshot.ended_at) if snapshot.ended_at else now)
        if state == JobState.running:
            if run.message == SUBMITTED:
                run.message = "running on the pool"
            if run.cancel_requested:
                self.backend.stop(run.submission_id)
            elif remaining_gpu_seconds(session, run.award_id) <= 0:
                self.backend.stop(run.submission_id)
                run.message = "stopping: the award's GPU-hours are used up"
            return 0
        if state == JobState.succeeded:
            problems = self._archive_outputs(session, run, logs)
            if problems:
                move(run, RunState.failed, "the job ended but its outputs were refused: " + "; ".join(problems))
            else:
                runs.record_progress(run, {**run.progress_detail, "fraction": 1.0})
                move(run, RunState.succeeded, "finished; outputs are in the archive")
        elif state == JobState.stopped:
            self._archive_log(session, run, logs)
            reason = "cancelled on request" if run.cancel_requested else run.message or "stopped"
            move(run, RunState.cancelled, reason)
        else:
            self._archive_log(session, run, logs)
            move(run, RunState.failed, f"the job failed: {self._failure_summary(snapshot.message, logs)}")
        shutil.rmtree(self.staging_dir(run), ignore_errors=True)
        return 1

    @staticmethod
    def _failure_summary(message: str, logs: str) -> str:
        tail = [line for line in logs.strip().splitlines() if line.strip()][-3:]
        return (" | ".join(tail) or message)[-1500:]

    def _archive_log(self, session: Session, run: Run, logs: str) -> None:
        archive.ingest_bytes(session, archive_dir=self.archive_dir, run=run, name="job.log", data=logs.encode())
        archive.write_manifest(session, archive_dir=self.archive_dir, run=run)

    def _archive_outputs(self, session: Session, run: Run, logs: str) -> list[str]:
        """Take the outputs the job declared (and nothing else); returns what was wrong with them, if anything."""
        problems = archive.accept_outputs(session, archive_dir=self.archive_dir, run=run,
                                          staging=self.staging_dir(run), kind=job_kind(run.job_kind))
        self._archive_log(session, run, logs)
        return problems

    # ---- the loop -----------------------------------------------------------------------------------------

    # ---- nodes -------------------------------------------------------------------------------------------

    def watch_nodes(self) -> int:
        """Record the pool as Ray sees it; returns the number of nodes alive."""
        seen = [
            NodeSeen(node_id=n["node_id"], address=n.get("node_ip", ""), is_head=bool(n.get("is_head_node")),
                     alive=n.get("state") == "ALIVE", resources=n.get("resources_total") or {},
                     labels=n.get("labels") or {})
            for n in self.backend.nodes()
        ]
        with Session(self.engine) as session:
            record_nodes(session, seen)
            session.commit()
        return sum(node.alive for node in seen)

    def tick(self) -> TickReport:
        report = TickReport(dispatched=self.dispatch(), finished=self.reconcile())
        self._ticks += 1
        if self._ticks % 5 == 1:
            try:
                self.watch_nodes()
            except Exception:
                log.exception("reading the pool's nodes failed")
        return report

    def run_forever(self, stop: threading.Event) -> None:
        log.info("scheduler started")
        while not stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("scheduler tick failed")
            stop.wait(self.settings.scheduler_interval_s)
