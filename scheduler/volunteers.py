"""Volunteers' units, followed each tick: attempts their agents ended or abandoned, then validation.

No Ray job stands behind a volunteer's attempt: its agent reports the end over the job channel, and an agent that
stays quiet past `volunteer_quiet_s` has lost its copy (another volunteer gets one). Once a unit has the results it
needs, they are compared (service.volunteers.agreement), BOINC's way:
- the largest group of results that agree with one another decides once it has two members (`Run.replicas`, the
  copies made, is 1 only for a volunteer with a long record, whose single result counts; spot checks copy even
  those);
- its first result becomes the run's outputs; the award is charged for that attempt's time alone (copies made to
  check it are the project's cost); each agreeing volunteer's trust grows by one, and its machine is credited with
  the result's GPU-seconds scaled by its GPU class (service.volunteers.credit);
- a result the group outvotes is proven wrong: nothing of it is published or charged, and its machine's trust falls
  to zero;
- results that do not agree ask for one more copy (up to MAX_REPLICAS), which decides.
A training goes out as one copy and is validated by re-running segments of it instead (service.volunteers.segments):
two volunteers of other owners re-run each chosen segment, their reports are judged as above, and the training
counts once every segment lands where it said; a segment that does not land proves it wrong (trust zeroed, nothing
of it kept), and another volunteer trains the unit afresh.
Nothing from a volunteer is an output, charged, or done before this.
"""

from __future__ import annotations

import functools
import json
import logging
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.orm.attributes import flag_modified
from sqlmodel import Session, select

from jobs.kinds import job_kind
from scheduler import accounting
from service.archive import service as archive
from service.archive.store import ArchiveStore
from service.attempts.service import attempts_of, live_attempts, log_tail, read_log
from service.config import Settings
from service.errors import Conflict
from service.models import AttemptState, Machine, Run, RunAttempt, RunState
from service.runs.state import FINAL, LIVE_ATTEMPT, move_attempt, transition
from service.timeutil import utcnow
from service.volunteers import agreement, credit, segments, units

log = logging.getLogger("observatory.scheduler")
MAX_READ = 64 << 20  # outputs larger than this are compared by digest alone
MAX_FAILURES = 3  # failed copies of one unit before it fails


def settle_volunteers(engine: Engine, settings: Settings, store: ArchiveStore) -> int:
    """End the attempts agents finished or abandoned, then judge the units that have their results; returns how
    many runs finished."""
    with Session(engine, expire_on_commit=False) as session:
        attempt_ids = [a.id for a in live_attempts(session, units.VOLUNTEER_POOL)]
    for attempt_id in attempt_ids:
        with Session(engine, expire_on_commit=False) as session:
            try:
                _end_if_over(session, settings, session.get(RunAttempt, attempt_id))
                session.commit()
            except Conflict:
                session.rollback()
    with Session(engine, expire_on_commit=False) as session:
        run_ids = session.exec(select(Run.id).where(Run.state == RunState.running,
                                                    Run.pool == units.VOLUNTEER_POOL)).all()
    finished = 0
    for run_id in run_ids:
        with Session(engine, expire_on_commit=False) as session:
            try:
                finished += judge(session, store, session.get(Run, run_id))
                session.commit()
            except Conflict:
                session.rollback()
            except Exception:
                session.rollback()
                log.exception("judging volunteers' results for run %s failed; trying again next tick", run_id)
    return finished


def _end_if_over(session: Session, settings: Settings, attempt: RunAttempt) -> None:
    run = session.get(Run, attempt.run_id)
    if RunState(run.state) in FINAL and (attempt.exit_code is not None or _quiet(settings, attempt, 30)):
        attempt.verdict = "unneeded"  # a copy still out when the unit was decided: nothing of it counts
        session.add(attempt)
        move_attempt(session, attempt, AttemptState.stopped, f"not needed: the run is {run.state}")
        return
    if attempt.exit_code is not None:
        kind = segments.attempt_kind(run.job_kind, attempt)
        missing = [spec.name for spec in kind.outputs if spec.required and spec.name not in attempt.held_outputs]
        problems = list(attempt.reported.get("problems") or [])
        if attempt.reported.get("stopped"):
            move_attempt(session, attempt, AttemptState.stopped, "stopped on request")
        elif attempt.exit_code == 0 and not missing and not problems:
            move_attempt(session, attempt, AttemptState.succeeded, "its result waits for validation")
        else:
            why = (f"the job exited with {attempt.exit_code}" if attempt.exit_code else
                   f"outputs missing: {', '.join(missing)}" if missing else "; ".join(problems)[:300])
            tail = log_tail(session, attempt.id)
            move_attempt(session, attempt, AttemptState.failed, f"{why}{': ' + tail if tail else ''}")
        return
    if _quiet(settings, attempt):
        move_attempt(session, attempt, AttemptState.lost, f"its agent was quiet for over "
                                                          f"{settings.volunteer_quiet_s:.0f} s; another volunteer "
                                                          "gets a copy")


def _quiet(settings: Settings, attempt: RunAttempt, limit_s: float | None = None) -> bool:
    heard = attempt.last_heard_at or attempt.created_at
    return utcnow() - heard > timedelta(seconds=settings.volunteer_quiet_s if limit_s is None else limit_s)


def _groups(store: ArchiveStore, kind_name: str, results: list[RunAttempt]) -> list[list[RunAttempt]]:
    """Results grouped by agreement with each group's first."""
    groups: list[list[RunAttempt]] = []
    for result in results:
        for group in groups:
            if differs(store, kind_name, group[0], result) is None:
                group.append(result)
                break
        else:
            groups.append([result])
    return groups


def differs(store: ArchiveStore, kind_name: str, a: RunAttempt, b: RunAttempt) -> str | None:
    """None when two results agree; otherwise the first difference found."""
    kind = job_kind(kind_name)
    for name in sorted(set(a.held_outputs) | set(b.held_outputs)):
        if name not in a.held_outputs or name not in b.held_outputs:
            return f"{name} was sent with one result only"
        sha_a, sha_b = a.held_outputs[name]["sha256"], b.held_outputs[name]["sha256"]
        if sha_a != sha_b:
            spec = kind.spec(name)
            why = _objects_differ(store, name, spec.media_type if spec else "", sha_a, sha_b)
            if why:
                return why
    return None


@functools.lru_cache(maxsize=4096)
def _objects_differ(store: ArchiveStore, name: str, media_type: str, sha_a: str, sha_b: str) -> str | None:
    """Two stored objects compared (the answer depends on their digests alone, so a unit waiting for another copy
    is not read again every tick)."""
    if max(store.size(sha_a), store.size(sha_b)) > MAX_READ:
        return f"{name}: the bytes differ"
    return agreement.compare(name, media_type, b"".join(store.open_range(sha_a)), b"".join(store.open_range(sha_b)))


def judge(session: Session, store: ArchiveStore, run: Run) -> int:
    """Decide a unit out with volunteers once its results allow; returns 1 when the run finished."""
    attempts = attempts_of(session, run.id)
    live = [a for a in attempts if a.state in LIVE_ATTEMPT]
    if run.cancel_requested:
        if not live:
            transition(session, run, RunState.cancelled, "cancelled on request")
            _archive_logs(session, store, run, attempts)
            return 1
        return 0
    if job_kind(run.job_kind).validated_by == "segments":
        return _judge_training(session, store, run, attempts)
    results = [a for a in attempts if a.state == AttemptState.succeeded and a.verdict == ""]
    groups = _groups(store, run.job_kind, results)
    best = max(groups, key=len, default=[])
    needed = 1 if run.replicas <= 1 else 2  # a trusted volunteer's single copy, or two that agree
    if best and len(best) >= needed:
        return _accept(session, store, run, best, [a for a in results if a not in best], attempts)
    if _hopeless(session, store, run, attempts, results):
        return 1
    if len(groups) > 1 and not live:  # they disagree: one more copy decides
        if len(results) + 1 > units.MAX_REPLICAS:
            transition(session, run, RunState.failed, f"{len(results)} volunteers' results did not agree; "
                                                      "nothing of them is published")
            _archive_logs(session, store, run, attempts)
            return 1
        wanted = max(run.replicas, len(results) + 1)
        if wanted != run.replicas:
            session.execute(update(Run).where(Run.id == run.id).values(
                replicas=wanted, message=f"with volunteers: {len(results)} results do not agree; a copy for one "
                                         "more volunteer decides").execution_options(synchronize_session=False))
    return 0


def _hopeless(session: Session, store: ArchiveStore, run: Run, attempts: list[RunAttempt],
              results: list[RunAttempt]) -> bool:
    """Fail the run when volunteers cannot run it: copies that failed, were lost, or were proven wrong too often."""
    failed = [a for a in attempts if a.state == AttemptState.failed]
    lost = [a for a in attempts if a.state == AttemptState.lost]
    wrong = [a for a in attempts if a.verdict == "wrong"]
    why = (failed[-1].message if len(failed) >= MAX_FAILURES and not results
           else "its copies were lost more than 10 times" if len(lost) > 10
           else f"{len(wrong)} of their results were proven wrong" if len(wrong) >= MAX_FAILURES else None)
    if why is None:
        return False
    transition(session, run, RunState.failed, f"volunteers could not run it: {why}"[:2000])
    _archive_logs(session, store, run, attempts)
    return True


def _judge_training(session: Session, store: ArchiveStore, run: Run, attempts: list[RunAttempt]) -> int:
    """A volunteer's training counts once every segment chosen from it, re-run by other volunteers, lands where it
    said (service.volunteers.segments); a segment that does not proves it wrong, and the unit goes out again."""
    trainings = [a for a in attempts if not a.segment_check]
    wrong = {a.number for a in trainings if a.verdict == "wrong"}
    for attempt in attempts:  # re-runs that ended after the training they checked was proven wrong are moot
        if attempt.segment_check.get("of") in wrong and attempt.verdict == "" and attempt.state not in LIVE_ATTEMPT:
            attempt.verdict = "unneeded"
            session.add(attempt)
    trained = next((a for a in trainings if a.state == AttemptState.succeeded and a.verdict == ""), None)
    if trained is None:
        _hopeless(session, store, run, trainings, [])
        return int(RunState(run.state) in FINAL)
    if not trained.segments:
        trained.segments = segments.choose(trained, int(run.job_plan["steps"]))
        session.add(trained)
        chosen = "; ".join(segments.describe(segment) for segment in trained.segments)
        session.execute(update(Run).where(Run.id == run.id).values(
            message=f"trained by a volunteer; validating: {len(trained.segments)} segments of it are re-run by "
                    f"other volunteers ({chosen})"[:2000]).execution_options(synchronize_session=False))
        return 0
    decided = [_decide_segment(session, store, run, trained, index, attempts)
               for index in range(len(trained.segments))]
    flag_modified(trained, "segments")  # its segments' dicts were changed in place
    session.add(trained)
    wrong = next((segment for segment in trained.segments if segment.get("lands") is False), None)
    if wrong is not None:
        _prove_wrong(session, run, trained, wrong, attempts)
        return int(_hopeless(session, store, run, trainings, []))
    if all(decided):
        lands = "; ".join(segments.describe(segment) for segment in trained.segments)
        return _accept(session, store, run, [trained], [], attempts,
                       how=f"{len(trained.segments)} segments of its training re-run by other volunteers landed "
                           f"where it said ({lands})")
    return 0


def _decide_segment(session: Session, store: ArchiveStore, run: Run, trained: RunAttempt, index: int,
                    attempts: list[RunAttempt]) -> bool:
    """Whether segment `index` of the training is decided (its `lands` set), deciding it when two re-runs agree;
    re-runs that disagree ask for one more."""
    segment = trained.segments[index]
    if "lands" in segment:
        return True
    checks = [a for a in attempts if a.segment_check.get("of") == trained.number
              and a.segment_check.get("segment") == index]
    results = [a for a in checks if a.state == AttemptState.succeeded and a.verdict == ""]
    failed = [a for a in checks if a.state == AttemptState.failed]
    groups = _groups(store, segments.SEGMENT_CHECK.name, results)
    best = max(groups, key=len, default=[])
    if len(best) >= 2:
        report = json.loads(b"".join(store.open_range(best[0].held_outputs["segment.json"]["sha256"])))
        segment.update(lands=bool(report.get("lands")), off_share=report.get("off_share"))
        for attempt in best:
            _agreed(session, attempt)
        for attempt in results:
            if attempt not in best:
                _outvoted(session, attempt, len(best))
        return True
    if len(failed) >= MAX_FAILURES and not results:  # nobody could re-run from what it shipped
        segment.update(lands=False, off_share=None, why=f"{len(failed)} re-runs failed: {failed[-1].message}"[:300])
        return True
    if len(groups) > 1 and not any(a.state in LIVE_ATTEMPT for a in checks):
        if len(results) + 1 > units.MAX_REPLICAS:
            segment.update(lands=False, off_share=None, why=f"{len(results)} re-runs did not agree")
            return True
        segment["copies"] = max(int(segment["copies"]), len(results) + 1)
    return False


def _prove_wrong(session: Session, run: Run, trained: RunAttempt, segment: dict, attempts: list[RunAttempt]) -> None:
    """A training whose segment did not land: nothing of it counts, its machine's trust is zeroed, and another
    volunteer trains the unit afresh (scheduler placement, through units.copies_wanted)."""
    off = segment.get("off_share")
    how = (f"{segment['why']}" if segment.get("why") else
           f"re-run by other volunteers it lands {'far' if off is None else f'{off:.3g} of the distance moved'} "
           f"away from what it shipped (tolerance {segments.SEGMENT_TOLERANCE})")
    trained.verdict = "wrong"
    trained.message = f"{trained.message}; proven wrong: {segments.describe(segment)}: {how}"[:2000]
    session.add(trained)
    _trust(session, trained.machine_id, agreed=False)
    session.execute(update(Run).where(Run.id == run.id).values(
        message=f"with volunteers: attempt {trained.number}'s training was proven wrong ({segments.describe(segment)}"
                f" does not land where it said); another volunteer trains it afresh")
        .execution_options(synchronize_session=False))
    log.info("run %s: attempt %s's training proven wrong at %s", run.id, trained.number, segments.describe(segment))


def _agreed(session: Session, attempt: RunAttempt) -> None:
    """A result validated: its machine's trust grows, and it is credited with the GPU-seconds it gave."""
    attempt.verdict = "agreed"
    session.add(attempt)
    _trust(session, attempt.machine_id, agreed=True)
    machine = session.get(Machine, attempt.machine_id) if attempt.machine_id is not None else None
    if machine is not None:  # each agreeing result earns its machine credit, the copies made to check it included
        credit.record(session, attempt, machine, seconds=credit.seconds_of(attempt), factor=attempt.charge_factor)


def _outvoted(session: Session, attempt: RunAttempt, agreeing: int) -> None:
    attempt.verdict = "wrong"
    attempt.message = (f"{attempt.message}; proven wrong: {agreeing} other results agree with one another "
                       "and not with it")[:2000]
    session.add(attempt)
    _trust(session, attempt.machine_id, agreed=False)


def _accept(session: Session, store: ArchiveStore, run: Run, agreed: list[RunAttempt], outvoted: list[RunAttempt],
            attempts: list[RunAttempt], how: str | None = None) -> int:
    kind = job_kind(run.job_kind)
    chosen = min(agreed, key=lambda a: a.number)
    for name, held in chosen.held_outputs.items():
        archive.record(session, run, kind.spec(name), held["sha256"], int(held["size"]), chosen.number)
    for attempt in agreed:
        _agreed(session, attempt)
    for attempt in outvoted:
        _outvoted(session, attempt, len(agreed))
    accounting.settle(session, chosen, run, ended_at=accounting.work_ended_at(chosen, chosen.ended_at or utcnow()),
                      keeps_work=True)
    copies = how or ("a trusted volunteer's result" if len(agreed) == 1
                     else f"{len(agreed)} volunteers' results agreed")
    transition(session, run, RunState.succeeded, f"finished and validated ({copies}); outputs are in the archive",
               extra={"progress": 1.0, "progress_detail": {**run.progress_detail, "fraction": 1.0}})
    _archive_logs(session, store, run, attempts)
    log.info("run %s validated: %s", run.id, copies)
    return 1


def _trust(session: Session, machine_id: int | None, *, agreed: bool) -> None:
    if machine_id is None:
        return
    values = {"trust": Machine.trust + 1} if agreed else {"trust": 0, "wrong_results": Machine.wrong_results + 1}
    session.execute(update(Machine).where(Machine.id == machine_id).values(**values)
                    .execution_options(synchronize_session=False))


def _archive_logs(session: Session, store: ArchiveStore, run: Run, attempts: list[RunAttempt]) -> None:
    session.refresh(run)
    parts = []
    for attempt in attempts:
        session.refresh(attempt)
        # A result proven wrong leaves nothing of its own in the run's files, its log included.
        text = read_log(session, attempt.id) if attempt.verdict != "wrong" else "(its log is not kept)\n"
        where = f"volunteer machine {attempt.machine_id}" if attempt.machine_id else "an unknown node"
        header = f"# attempt {attempt.number} on {where}: {attempt.state}" \
                 f"{' (' + attempt.verdict + ')' if attempt.verdict else ''} ({attempt.message})\n"
        archive.ingest_bytes(session, store=store, run=run, name=f"attempt-{attempt.number}.log",
                             data=(header + text).encode())
        parts.append(header + text)
    archive.ingest_bytes(session, store=store, run=run, name="job.log", data="\n".join(parts).encode())
    if RunState(run.state) in FINAL:
        archive.write_manifest(session, store=store, run=run)
