"""What a job may do over its attempt's channel: say hello, fetch its inputs, send its log, checkpoints and outputs,
and report its end. Each call is scoped to one live attempt; the run's state is the scheduler's to change."""

from __future__ import annotations

from datetime import timedelta
from typing import BinaryIO

from sqlalchemy import update
from sqlmodel import Session

from jobs.kinds import RESUME_INPUT, JobKind
from jobs.version import installed_version
from service.archive import service as archive
from service.archive.store import ArchiveStore
from service.attempts import service as attempts
from service.attempts.schemas import Control, JobEnd, JobHello, JobInput, JobPlanOut, LogChunk, Received
from service.config import Settings
from service.datasets import pinning
from service.errors import Busy, Conflict, NotFound, TooManyRequests
from service.models import Run, RunAttempt
from service.rounds.service import in_rounds, is_global_weights
from service.runs.service import record_progress
from service.runs.state import FINAL
from service.timeutil import utcnow
from service.volunteers import segments
from service.volunteers.units import VOLUNTEER_POOL


def required_version(settings: Settings) -> str:
    return settings.required_worker_version or installed_version()


def _heard(session: Session, attempt: RunAttempt) -> Run:
    now = utcnow()
    attempt.last_heard_at = now
    attempt.started_at = attempt.started_at or now
    session.add(attempt)
    return session.get(Run, attempt.run_id)


def stop_request(run: Run, attempt: RunAttempt | None = None) -> str | None:
    """Why the job must stop now (None: it goes on): the run's cancel or stop, or this attempt's own (a worker of a
    run trained by several nodes whose machine is leaving)."""
    if run.cancel_requested:
        return "cancel"
    if run.state in FINAL:  # a worker of a run in rounds still going when another finished the run
        return "finished"
    return run.stop_reason or (attempt.stop_reason if attempt is not None else None)


def hello(session: Session, settings: Settings, store: ArchiveStore, attempt: RunAttempt,
          data: JobHello) -> JobPlanOut:
    """The job's first call: the node's release is checked, and the job learns its plan and inputs."""
    wanted = required_version(settings)
    if data.worker_version != wanted:
        message = (f"node {data.node_name} runs commons-observatory {data.worker_version}, but this observatory "
                   f"needs {wanted}: install release {wanted} on that node (or run its image) and restart its Ray")
        attempt.reported = {"refused": message}
        session.add(attempt)
        session.commit()
        raise Conflict(message)
    run = _heard(session, attempt)
    attempt.node_name, attempt.worker_version = data.node_name, data.worker_version[:40]
    kind = segments.attempt_kind(run.job_kind, attempt)
    wanted_inputs = pinning.run_inputs(session, run)
    config = pinning.job_config(session, run)
    if attempt.segment_check:  # a check of another volunteer's training: that training's inputs, and its states
        wanted_inputs.update(segments.check_inputs(attempt.segment_check))
        config = segments.check_plan(config, attempt.segment_check)
    elif attempt.resume_sha256 and not in_rounds(run):  # a worker in rounds fetches the global weights itself
        wanted_inputs[RESUME_INPUT] = attempt.resume_sha256
    inputs = [JobInput(field=field, sha256=sha, size=store.size(sha)) for field, sha in wanted_inputs.items()
              if store.exists(sha)]
    missing = set(wanted_inputs) - {i.field for i in inputs}
    if missing:
        raise NotFound(f"inputs not in the archive: {', '.join(sorted(missing))}")
    return JobPlanOut(run_id=run.id, attempt=attempt.number, kind=kind.name, module=kind.module,
                      config=config, inputs=inputs, resume_sha256=attempt.resume_sha256,
                      resume_step=attempt.resume_step, checkpoint_interval_s=settings.checkpoint_ship_interval_s,
                      max_output_bytes=settings.max_output_bytes)


def allowed_input(session: Session, attempt: RunAttempt, sha256: str) -> bool:
    run = session.get(Run, attempt.run_id)
    # The run's newest resume state too: for a run trained in rounds, its global weights as they move on (and those
    # of any of its rounds, for a worker on a slow link that asked just before the next round closed).
    allowed = set(pinning.run_inputs(session, run).values()) | {attempt.resume_sha256, run.resume_sha256}
    allowed |= set(segments.check_inputs(attempt.segment_check).values()) if attempt.segment_check else set()
    return sha256 in allowed or (in_rounds(run) and is_global_weights(session, run.id, sha256))


def append_log(session: Session, settings: Settings, attempt: RunAttempt, chunk: LogChunk) -> Control:
    run = _heard(session, attempt)
    offset = attempts.append_log(session, attempt, offset=chunk.offset, text=chunk.text.replace("\x00", " "),
                                 max_bytes=settings.max_log_bytes)
    if chunk.progress and not attempt.segment_check and (attempt.number == run.attempt or in_rounds(run)):
        record_progress(run, chunk.progress)
        session.add(run)
    return Control(offset=offset, stop=stop_request(run, attempt))


SENDS_PER_OUTPUT = 3  # each output a kind declares may be sent this often by one attempt (a retry, a resend)


def _count_upload(session: Session, attempt: RunAttempt, size: int, *, output: bool) -> None:
    values = {"uploaded_bytes": RunAttempt.uploaded_bytes + size}
    if output:
        values["output_sends"] = RunAttempt.output_sends + 1
    session.execute(update(RunAttempt).where(RunAttempt.id == attempt.id).values(**values)
                    .execution_options(synchronize_session=False))


def accept_checkpoint(session: Session, settings: Settings, store: ArchiveStore, attempt: RunAttempt, *,
                      step: int, stream: BinaryIO, sha256: str) -> Control:
    """Keep a resumable checkpoint: the run's next attempt starts from the latest one shipped. A checkpoint comes
    at most twice per ship interval (the runner sends one per interval); the ones it supersedes are swept from
    the archive."""
    kind = segments.attempt_kind(session.get(Run, attempt.run_id).job_kind, attempt)
    if not kind.resumable:
        raise Conflict(f"a {kind.name} job has no checkpoint to send")
    spacing = settings.checkpoint_ship_interval_s / 2
    if attempt.checkpoint_at is not None and (utcnow() - attempt.checkpoint_at).total_seconds() < spacing:
        raise TooManyRequests(f"a checkpoint was taken less than {spacing:.0f} s ago; send the next one later",
                              retry_after_s=max(1, round(spacing)))
    session.rollback()  # no transaction (nor SQLite's write lock) is held while the bytes arrive
    try:
        sha, size = store.put(stream, limit=settings.max_output_bytes)
    except ValueError as exc:
        raise Conflict(f"checkpoint: {exc}") from None
    except OSError as exc:
        raise Busy(f"the archive could not store the checkpoint ({exc.strerror or exc}); try again later") from None
    if sha != sha256:
        raise Conflict(f"the checkpoint's bytes hash to {sha}, not the declared {sha256}")
    attempt = session.get(RunAttempt, attempt.id, populate_existing=True)
    run = _heard(session, attempt)
    _count_upload(session, attempt, size, output=False)
    if attempt.pool == VOLUNTEER_POOL:  # held to check the training by; never a resume point for anyone
        segments.hold(attempt, step, sha, size)
        attempt.checkpoint_step, attempt.checkpoint_at = max(step, attempt.checkpoint_step), utcnow()
        session.add(attempt)
        return Control(offset=attempt.log_bytes, stop=stop_request(run, attempt))
    if step >= attempt.checkpoint_step:
        attempt.checkpoint_sha256, attempt.checkpoint_step, attempt.checkpoint_at = sha, step, utcnow()
        attempt.checkpoint_size = size
        session.add(attempt)
    if step >= run.resume_step:
        run.resume_sha256, run.resume_step = sha, step
        session.add(run)
    return Control(offset=attempt.log_bytes, stop=stop_request(run, attempt))


def accept_output(session: Session, settings: Settings, store: ArchiveStore, attempt: RunAttempt, *, name: str,
                  stream: BinaryIO, sha256: str) -> Received:
    """Take one declared output. An attempt sends at most SENDS_PER_OUTPUT times as many outputs as its kind
    declares; an output sent again replaces the one before, which the archive's sweep then deletes."""
    run = session.get(Run, attempt.run_id)
    kind: JobKind = segments.attempt_kind(run.job_kind, attempt)
    allowed = SENDS_PER_OUTPUT * len(kind.outputs)
    if attempt.output_sends >= allowed:
        raise Conflict(f"this attempt has sent {attempt.output_sends} outputs, the most a {kind.name} job may "
                       f"send ({SENDS_PER_OUTPUT} times each of its {len(kind.outputs)})")
    session.rollback()  # as for checkpoints: nothing is locked while the bytes arrive
    held = attempt.pool == VOLUNTEER_POOL  # a volunteer's output waits on its attempt until it is validated
    try:
        if held:
            sha, size = archive.accept_object(store=store, kind=kind, name=name, stream=stream, sha256=sha256,
                                              limit=settings.max_output_bytes)
        else:
            artifact = archive.accept_output(session, store=store, run=run, attempt=attempt.number, kind=kind,
                                             name=name, stream=stream, sha256=sha256, limit=settings.max_output_bytes)
            sha, size = artifact.sha256, artifact.size
    except OSError as exc:
        raise Busy(f"the archive could not store {name} ({exc.strerror or exc}); try again later") from None
    attempt = session.get(RunAttempt, attempt.id, populate_existing=True)
    _heard(session, attempt)
    if held:
        attempt.held_outputs = {**attempt.held_outputs, name: {"sha256": sha, "size": size}}
        session.add(attempt)
    _count_upload(session, attempt, size, output=True)
    return Received(name=name, sha256=sha, size=size)


def report_end(session: Session, attempt: RunAttempt, end: JobEnd) -> None:
    """The job's own account of how it ended; the scheduler turns it into the attempt's and run's outcome."""
    _heard(session, attempt)
    now = utcnow()
    job_ended = max(now - timedelta(seconds=end.ended_s_ago), attempt.started_at or now)
    attempt.exit_code = end.exit_code
    attempt.reported = {"stopped": end.stopped, "problems": list(end.problems), "at": now.isoformat(),
                        "job_ended_at": job_ended.isoformat()}
    session.add(attempt)

