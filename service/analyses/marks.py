"""People's judgement beside the automatic one: members of an analysis run's proposal, the reviewers who reviewed
it, and admins mark each shown pair "copy" or "not a copy"; the agreement between their marks and the automatic
verdict is counted.

The run's outputs are its team's during the exclusive period, then public; marks stay with those who may mark (a
member of the public reads the numbers, not marks them). Reviewers see the pairs, never who marked what."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from service.archive.service import find_artifact, open_artifact, read_object
from service.archive.store import ArchiveStore
from service.errors import Conflict, DomainError, Invalid, NotFound
from service.models import Artifact, AssignmentState, PairMark, ReviewAssignment, Role, Run, RunState, User, Verdict
from service.proposals.access import is_member
from service.timeutil import utcnow

MARKED_KINDS = ("replication",)


@dataclass
class Pair:
    row: int  # its row in pairs.png
    seed: int
    nearest: dict[str, Any]  # the training image: title, author, license, image_sha256, distance
    ratio: float
    automatic: Verdict
    mine: Verdict | None = None
    marks: dict[str, int] = field(default_factory=dict)  # verdict -> how many people gave it


@dataclass
class Agreement:
    marked: int  # pairs with at least one mark
    agree: int  # of those, pairs whose majority mark is the automatic verdict
    missed: int  # people say copy, the threshold did not
    over: int  # the threshold says copy, people did not

    @property
    def fraction(self) -> float | None:
        return self.agree / self.marked if self.marked else None


def may_mark(session: Session, actor: User | None, run: Run) -> bool:
    """The run's team and admins; and the reviewers who reviewed its proposal (their assignment accepted)."""
    if actor is None:
        return False
    if actor.has(Role.admin) or is_member(session, actor, run.proposal_id):
        return True
    return actor.has(Role.reviewer) and session.exec(select(ReviewAssignment.id).where(
        ReviewAssignment.proposal_id == run.proposal_id, ReviewAssignment.reviewer_id == actor.id,
        ReviewAssignment.state.in_([AssignmentState.accepted, AssignmentState.submitted]))).first() is not None


def marking_run(session: Session, actor: User, run_id: int) -> Run:
    """A succeeded analysis run whose pairs `actor` may mark: 404 to anyone who may not."""
    run = session.get(Run, run_id)
    if run is None or not may_mark(session, actor, run):
        raise NotFound(f"no run {run_id}")
    if run.job_kind not in MARKED_KINDS:
        raise Conflict(f"run {run_id} is a {run.job_kind} run; only a replication search shows pairs to mark")
    if run.state != RunState.succeeded:
        raise Conflict(f"run {run_id} is {run.state}; its pairs can be marked once it has succeeded")
    return run


def pairs_sheet(session: Session, store: ArchiveStore, actor: User | None, run_id: int) -> Artifact:
    """The run's pairs.png: for those who may mark its pairs, and for whoever may download its outputs."""
    run = session.get(Run, run_id)
    if run is None or not may_mark(session, actor, run):
        return open_artifact(session, actor=actor, store=store, run_id=run_id, name="pairs.png")
    artifact = find_artifact(session, run_id, "pairs.png")
    if artifact is None or not store.exists(artifact.sha256):
        raise NotFound(f"run {run_id} has no pairs picture in the archive")
    return artifact


def results_of(session: Session, store: ArchiveStore, run_id: int) -> dict[str, Any]:
    """An analysis run's results.json (callers check who may read it)."""
    artifact = find_artifact(session, run_id, "results.json")
    if artifact is None or not store.exists(artifact.sha256):
        raise NotFound(f"run {run_id} has no results in the archive")
    try:
        results = json.loads(read_object(store, artifact.sha256))
    except ValueError:
        raise Conflict(f"run {run_id}'s results.json is not JSON") from None
    return results if isinstance(results, dict) else {}


def pairs(session: Session, store: ArchiveStore, actor: User, run_id: int) -> tuple[list[Pair], Agreement]:
    """The shown pairs with the automatic verdict, the actor's own mark and everyone's, and the agreement."""
    run = marking_run(session, actor, run_id)
    results = results_of(session, store, run.id)
    marks = session.exec(select(PairMark).where(PairMark.run_id == run.id)).all()
    shown = []
    for row, index in enumerate(results.get("shown", [])):
        sample = results["samples"][index]
        pair = Pair(row=row, seed=sample["seed"], nearest=sample["tiled_l2"][0], ratio=sample["ratio"],
                    automatic=Verdict.copy if sample["copy"] else Verdict.not_copy)
        for mark in marks:
            if mark.seed == pair.seed:
                pair.marks[mark.verdict] = pair.marks.get(mark.verdict, 0) + 1
                if mark.user_id == actor.id:
                    pair.mine = mark.verdict
        shown.append(pair)
    return shown, agreement(shown)


def agreement(shown: list[Pair]) -> Agreement:
    """How the automatic verdict agrees with people's: per marked pair, its majority mark (a tie counts as
    disagreement either way)."""
    marked = agree = missed = over = 0
    for pair in shown:
        copy, not_copy = pair.marks.get(Verdict.copy, 0), pair.marks.get(Verdict.not_copy, 0)
        if not copy and not not_copy:
            continue
        marked += 1
        people = Verdict.copy if copy > not_copy else Verdict.not_copy if not_copy > copy else None
        if people == pair.automatic:
            agree += 1
        elif pair.automatic == Verdict.not_copy and copy >= not_copy:
            missed += 1
        else:
            over += 1
    return Agreement(marked, agree, missed, over)


@dataclass(frozen=True)
class Suggestion:
    """The ratio threshold that best agrees with people's majority marks on a search's pairs."""

    ratio: float
    agree: int  # marked pairs on which it agrees with the majority
    pairs: int  # marked pairs with a majority (ties left out)
    marks: int  # the marks it rests on


def suggest(marked: list[tuple[float, int, int]]) -> Suggestion | None:
    """From (ratio, copy marks, not-copy marks) per pair: the threshold t (a pair is a copy when its ratio < t)
    that agrees with the most majorities, the middle one of those that agree as often; None without a majority."""
    labelled = sorted((ratio, copy > not_copy) for ratio, copy, not_copy in marked if copy != not_copy)
    if not labelled:
        return None
    ratios = sorted({ratio for ratio, _ in labelled})
    candidates = [ratios[0] / 2, *((a + b) / 2 for a, b in zip(ratios, ratios[1:], strict=False)), ratios[-1] * 1.5]

    def agree(t: float) -> int:
        return sum((ratio < t) == copy for ratio, copy in labelled)

    best = max(agree(t) for t in candidates)
    winners = [t for t in candidates if agree(t) == best]
    return Suggestion(round(winners[len(winners) // 2], 6), best, len(labelled),
                      sum(c + n for _, c, n in marked))


def suggestion_for_run(session: Session, run_id: int) -> Suggestion | None:
    """What the marks on a search's pairs suggest (from the ratios recorded with them)."""
    per: dict[int, list[Any]] = {}
    for mark_ in session.exec(select(PairMark).where(PairMark.run_id == run_id, PairMark.ratio.is_not(None))):
        row = per.setdefault(mark_.seed, [mark_.ratio, 0, 0])
        row[1 if mark_.verdict == Verdict.copy else 2] += 1
    return suggest([(r, c, n) for r, c, n in per.values()])


def suggestion_from(shown: list[Pair]) -> Suggestion | None:
    return suggest([(p.ratio, p.marks.get(Verdict.copy, 0), p.marks.get(Verdict.not_copy, 0)) for p in shown])


def latest_marked(session: Session, model: str) -> tuple[Run, Suggestion] | None:
    """The newest succeeded search of model version `model` with marks that suggest a threshold."""
    for run in session.exec(select(Run).where(Run.job_kind == "replication", Run.state == RunState.succeeded)
                            .order_by(Run.id.desc())):
        if run.job_plan.get("model") == model:
            found = suggestion_for_run(session, run.id)
            if found is not None:
                return run, found
    return None


def mark(session: Session, store: ArchiveStore, actor: User, run_id: int, seed: int, verdict: Verdict) -> PairMark:
    """Record (or change) the actor's mark on the shown pair of sample `seed`."""
    run = marking_run(session, actor, run_id)
    if not isinstance(verdict, Verdict):
        raise Invalid("verdict: copy or not_copy")
    results = results_of(session, store, run.id)
    shown = {results["samples"][i]["seed"]: results["samples"][i] for i in results.get("shown", [])}
    if seed not in shown:
        raise Invalid(f"seed: sample {seed} is not among the pairs shown for marking")
    existing = session.exec(select(PairMark).where(PairMark.run_id == run.id, PairMark.seed == seed,
                                                   PairMark.user_id == actor.id)).first()
    if existing is None:
        existing = PairMark(run_id=run.id, seed=seed, user_id=actor.id, verdict=verdict,
                            training_sha256=str(shown[seed]["tiled_l2"][0].get("image_sha256") or "")[:64],
                            ratio=float(shown[seed]["ratio"]))
    existing.verdict, existing.updated_at = verdict, utcnow()
    session.add(existing)
    try:
        session.flush()
    except IntegrityError:  # the same person's mark, sent twice at once: the other one is kept
        session.rollback()
        raise Conflict("this pair was just marked by you from elsewhere; reload to see the mark") from None
    return existing


def agreement_for(session: Session, store: ArchiveStore, actor: User, run: Run) -> Agreement | None:
    """How the automatic verdict of a succeeded replication run agrees with people's marks, for those who may
    mark them; None otherwise (marking_run says why not)."""
    if run.job_kind not in MARKED_KINDS:
        return None
    try:
        return pairs(session, store, actor, run.id)[1]
    except DomainError:
        return None
