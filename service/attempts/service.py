"""Run attempts: one try at a run on one node, with the credential its job uses to talk to the observatory.

The scheduler writes an attempt (and its token) before it submits the job, so a job that starts while the
scheduler dies can still report. The job's log arrives in chunks by offset and is read back the same way.
"""

from __future__ import annotations

import hashlib
import secrets

from sqlmodel import Session, select

from service.errors import Conflict, NotFound
from service.models import AttemptLogChunk, Run, RunAttempt
from service.runs.state import LIVE_ATTEMPT

TOKEN_PREFIX = "att_"


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_attempt(session: Session, run: Run, *, pool: str, charge_factor: float = 1.0, node_id: str | None = None,
                machine_id: int | None = None, worker: int = 0) -> tuple[RunAttempt, str]:
    """A fresh attempt for the run (number = the run's last + 1) on the node chosen for it, and its token, shown
    here once. `worker`: which of the run's workers it is, for a run several nodes train together."""
    number = run.attempt + 1
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    attempt = RunAttempt(run_id=run.id, number=number, pool=pool, gpus=run.gpus, charge_factor=charge_factor,
                         node_id=node_id, machine_id=machine_id, worker=worker,
                         submission_id=f"observatory-run-{run.id}-{run.key}-{number}", token_hash=token_hash(token),
                         resume_sha256=run.resume_sha256, resume_step=run.resume_step)
    session.add(attempt)
    run.attempt, run.submission_id = number, attempt.submission_id
    session.add(run)
    session.flush()
    return attempt, token


def claim_for_machine(session: Session, machine_id: int, submission_id: str) -> tuple[RunAttempt, str]:
    """The token of a live attempt placed on this machine, made afresh for the runner that asks with the machine's
    own credential (any earlier one stops working): the token never travels through Ray, where every member of
    the pool could read it."""
    attempt = session.exec(select(RunAttempt).where(RunAttempt.submission_id == submission_id[:100])).first()
    if attempt is None or attempt.machine_id != machine_id or attempt.state not in LIVE_ATTEMPT:
        raise NotFound("no live attempt with that submission id is placed on this machine")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    attempt.token_hash = token_hash(token)
    session.add(attempt)
    session.flush()
    return attempt, token


def attempt_for_token(session: Session, token: str) -> RunAttempt | None:
    """The live attempt this token belongs to; None once the attempt has ended or for any other string."""
    if not token.startswith(TOKEN_PREFIX):
        return None
    attempt = session.exec(select(RunAttempt).where(RunAttempt.token_hash == token_hash(token))).first()
    return attempt if attempt is not None and attempt.state in LIVE_ATTEMPT else None


def current_attempt(session: Session, run: Run) -> RunAttempt | None:
    return session.exec(select(RunAttempt).where(RunAttempt.run_id == run.id, RunAttempt.number == run.attempt)
                        ).first()


def attempts_of(session: Session, run_id: int) -> list[RunAttempt]:
    return list(session.exec(select(RunAttempt).where(RunAttempt.run_id == run_id).order_by(RunAttempt.number)))


def live_attempts(session: Session, pool: str) -> list[RunAttempt]:
    return list(session.exec(select(RunAttempt).where(RunAttempt.pool == pool,
                                                      RunAttempt.state.in_(list(LIVE_ATTEMPT)))
                             .order_by(RunAttempt.id)))


def live_attempts_of(session: Session, run_id: int) -> list[RunAttempt]:
    """The run's attempts still starting or running (several, for a run trained by several nodes)."""
    return list(session.exec(select(RunAttempt).where(RunAttempt.run_id == run_id,
                                                      RunAttempt.state.in_(list(LIVE_ATTEMPT)))))


def latest_attempt(session: Session, run_id: int) -> RunAttempt | None:
    return session.exec(select(RunAttempt).where(RunAttempt.run_id == run_id)
                        .order_by(RunAttempt.number.desc())).first()


def append_log(session: Session, attempt: RunAttempt, *, offset: int, text: str, max_bytes: int) -> int:
    """Append the text the job sends from `offset` on; a resend of what is already here is ignored. Returns how
    far the log now reaches; past `max_bytes` the rest is dropped with a note."""
    if offset > attempt.log_bytes:
        raise Conflict(f"the log reaches {attempt.log_bytes}; send from there, not from {offset}")
    data = text.encode()[attempt.log_bytes - offset:] if offset < attempt.log_bytes else text.encode()
    if not data:
        return attempt.log_bytes
    room = max_bytes - attempt.log_bytes
    if room <= 0:
        return attempt.log_bytes
    if len(data) > room:
        data = data[:room] + b"\n[the rest of this log was dropped: it passed the observatory's limit]\n"
    chunk = data.decode(errors="replace")
    session.add(AttemptLogChunk(attempt_id=attempt.id, offset=attempt.log_bytes, text=chunk))
    attempt.log_bytes += len(data)
    session.add(attempt)
    session.flush()
    return attempt.log_bytes


def read_log(session: Session, attempt_id: int, since: int = 0) -> str:
    """The log from byte `since` on (chunk boundaries: a chunk that starts before `since` is left out)."""
    chunks = session.exec(select(AttemptLogChunk.text).where(AttemptLogChunk.attempt_id == attempt_id,
                                                             AttemptLogChunk.offset >= since)
                          .order_by(AttemptLogChunk.offset)).all()
    return "".join(chunks)


def shown_lines(text: str) -> list[str]:
    """A log's lines worth showing a person: no blank lines, no progress records."""
    return [line for line in text.splitlines() if line.strip() and not line.startswith("@@")]


def tail_of(text: str, lines: int = 3) -> str:
    """The last lines of a log worth showing, joined by ' | '."""
    return " | ".join(shown_lines(text)[-lines:])[-1500:]


def last_lines(session: Session, attempt_id: int, lines: int = 40, chunks: int = 16, *,
               most_chunks: int = 512) -> list[str]:
    """The last lines worth showing of the log the job sent: read back from the end, `chunks` at a time, until
    there are enough (progress records, which a job sends often, are not shown; at most `most_chunks` are read)."""
    return log_since(session, attempt_id, lines=lines, chunks=chunks, most_chunks=most_chunks)[0]


def log_end(session: Session, attempt_id: int) -> int:
    """The offset just past what the job has sent so far."""
    last = session.exec(select(AttemptLogChunk.offset, AttemptLogChunk.text)
                        .where(AttemptLogChunk.attempt_id == attempt_id)
                        .order_by(AttemptLogChunk.offset.desc()).limit(1)).first()
    return last[0] + len(last[1].encode()) if last else 0


def log_since(session: Session, attempt_id: int, after: int = 0, *, lines: int = 40, chunks: int = 16,
              most_chunks: int = 512) -> tuple[list[str], int]:
    """The lines worth showing sent at or after offset `after` (the last `lines` of them), and the offset a reader
    asks from next time: a page follows the log as the channel receives it."""
    found: list[str] = []
    texts: list[str] = []
    before: int | None = None
    end = log_end(session, attempt_id)
    read = 0
    while len(found) < lines and read < most_chunks:
        query = select(AttemptLogChunk.offset, AttemptLogChunk.text).where(
            AttemptLogChunk.attempt_id == attempt_id, AttemptLogChunk.offset >= after)
        if before is not None:
            query = query.where(AttemptLogChunk.offset < before)
        page = session.exec(query.order_by(AttemptLogChunk.offset.desc()).limit(chunks)).all()
        if not page:
            break
        read += len(page)
        before = page[-1][0]
        texts = [text for _, text in reversed(page)] + texts
        found = shown_lines("".join(texts))
    return found[-lines:], end


def log_tail(session: Session, attempt_id: int, lines: int = 3) -> str:
    """The tail of the log the job sent, joined by ' | '."""
    return " | ".join(last_lines(session, attempt_id, lines, chunks=8))[-1500:]

