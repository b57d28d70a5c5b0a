"""The archive's catalogue and its search: every data product (a succeeded run's outputs, a model version, a
dataset version) is one row of `archive_products`, written when the product appears, so that a search filters,
counts facets and pages over one indexed table however many products there are.

Metadata is public at once; a product's files follow their own rules (a run's after its award's exclusive period).
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, literal, or_, tuple_
from sqlmodel import Session, select

from jobs.commons.licenses import CC0, CC_BY, CC_BY_SA, PUBLIC_DOMAIN, classify
from service.archive.service import find_artifact
from service.errors import Invalid
from service.models import (
    ArchiveProduct,
    Award,
    Call,
    DatasetVersion,
    ModelVersion,
    Proposal,
    ProposalMember,
    ProposalState,
    Run,
    RunState,
    User,
)
from service.timeutil import utcnow
from service.types import MAX_ID

# From the least to the most demanding: a product's license is the most demanding family among its images.
LICENSE_ORDER = (PUBLIC_DOMAIN, CC0, CC_BY, CC_BY_SA)
MODEL_FIELDS = ("model", "base_model", "with_model", "without_model")
FACETS = ("kind", "job_kind", "cycle_id", "call_id", "license", "dataset", "model")
FACET_VALUES = 20  # the most values a facet lists (the most frequent)
PAGE_MAX = 200


def run_ref(run_id: int) -> str:
    return f"obs:run/{run_id}"


def model_ref(name: str, version: int) -> str:
    return f"obs:model/{name}@{version}"


def dataset_ref(name: str, version: int) -> str:
    return f"obs:dataset/{name}@{version}"


def license_family(licenses: dict[str, int]) -> str:
    """The most demanding license family among a count of images by license ("" when none is known)."""
    found = {classify(name)[0] for name, count in licenses.items() if count}
    ranked = [family for family in LICENSE_ORDER if family in found]
    return ranked[-1] if ranked else ""


def _dataset_of(session: Session, ref: str) -> DatasetVersion | None:
    name, _, number = ref.partition("@")
    if not number.isdigit():
        return None
    return session.exec(select(DatasetVersion).where(DatasetVersion.name == name,
                                                     DatasetVersion.version == int(number))).first()


def _model_of(session: Session, ref: str) -> ModelVersion | None:
    name, _, number = ref.partition("@")
    if not number.isdigit():
        return None
    return session.exec(select(ModelVersion).where(ModelVersion.name == name,
                                                   ModelVersion.version == int(number))).first()


def _words(*parts: Any) -> str:
    return " ".join(str(p) for p in parts if p).lower()[:2000]


def _exists(session: Session, ref: str) -> bool:
    return session.exec(select(ArchiveProduct.id).where(ArchiveProduct.ref == ref)).first() is not None


def add_run(session: Session, run: Run) -> ArchiveProduct | None:
    """Catalogue a succeeded run of an accepted proposal (once); None when it is not a product."""
    proposal = session.get(Proposal, run.proposal_id)
    if run.state != RunState.succeeded or proposal is None or proposal.state != ProposalState.accepted \
            or _exists(session, run_ref(run.id)):
        return None
    plan = run.job_plan or {}
    model = next((str(plan[f]) for f in MODEL_FIELDS if isinstance(plan.get(f), str) and plan.get(f)), "")
    dataset = str(plan.get("dataset") or "")
    version = _model_of(session, model) if model else None
    if not dataset and version is not None:
        dataset = version.dataset
    data = _dataset_of(session, dataset) if dataset else None
    call = session.get(Call, proposal.call_id)
    award = session.get(Award, run.award_id)
    names = session.exec(select(User.name).join(ProposalMember).where(ProposalMember.proposal_id == proposal.id)).all()
    product = ArchiveProduct(
        ref=run_ref(run.id), kind="run", job_kind=run.job_kind, title=proposal.title[:400],
        proposal_id=proposal.id, call_id=call.id if call else None, cycle_id=call.cycle_id if call else None,
        model=model[:120], dataset=dataset[:120], license=license_family(data.licenses) if data else "",
        text=_words(proposal.title, run_ref(run.id), run.job_kind, model, dataset, *names),
        url=f"/archive/runs/{run.id}", run_id=run.id,
        thumbnail=find_artifact(session, run.id, "samples.png") is not None,
        public_from=award.exclusive_until if award else None, made_at=run.finished_at or utcnow())
    session.add(product)
    session.flush()
    return product


def add_model(session: Session, version: ModelVersion) -> ArchiveProduct | None:
    """Catalogue a registered model version (once)."""
    if _exists(session, model_ref(version.name, version.version)):
        return None
    run = session.get(Run, version.run_id)
    proposal = session.get(Proposal, run.proposal_id) if run else None
    call = session.get(Call, proposal.call_id) if proposal else None
    award = session.get(Award, run.award_id) if run else None
    ref = f"{version.name}@{version.version}"
    product = ArchiveProduct(
        ref=model_ref(version.name, version.version), kind="model",
        job_kind="family" if version.family else str(version.config.get("kind", "train")),
        title=f"{ref}{': ' + version.notes if version.notes else ''}"[:400],
        proposal_id=proposal.id if proposal else None, call_id=call.id if call else None,
        cycle_id=call.cycle_id if call else None, model=ref[:120], dataset=version.dataset[:120],
        license=license_family(version.licenses), text=_words(ref, version.notes, version.dataset, "model"),
        url=f"/models/{version.name}/{version.version}", run_id=version.run_id,
        thumbnail=find_artifact(session, version.run_id, "samples.png") is not None,
        public_from=None if version.withdrawn_at or award is None else award.exclusive_until,
        made_at=version.created_at)
    session.add(product)
    session.flush()
    return product


def add_dataset(session: Session, version: DatasetVersion) -> ArchiveProduct | None:
    """Catalogue a dataset version (once)."""
    if _exists(session, dataset_ref(version.name, version.version)):
        return None
    ref = f"{version.name}@{version.version}"
    product = ArchiveProduct(
        ref=dataset_ref(version.name, version.version), kind="dataset", job_kind="",
        title=f"{ref}: {version.images} images from {version.origin}"[:400], dataset=ref[:120],
        license=license_family(version.licenses), text=_words(ref, version.origin, "dataset"),
        url=f"/datasets/{ref}", thumbnail=True, public_from=version.created_at, made_at=version.created_at)
    session.add(product)
    session.flush()
    return product


def withdraw_model(session: Session, version: ModelVersion) -> None:
    """A withdrawn version stays findable (its card says why) but its files are no longer public."""
    product = session.exec(select(ArchiveProduct).where(
        ArchiveProduct.ref == model_ref(version.name, version.version))).first()
    if product is not None:
        product.public_from = None
        session.add(product)


def sync(session: Session) -> int:
    """Catalogue every product that is not yet (a database from before the catalogue, or rows written around the
    hooks); returns how many were added."""
    have = set(session.exec(select(ArchiveProduct.ref)).all())
    added = 0
    runs = session.exec(select(Run).join(Proposal, Proposal.id == Run.proposal_id).where(
        Run.state == RunState.succeeded, Proposal.state == ProposalState.accepted)).all()
    for run in runs:
        if run_ref(run.id) not in have and add_run(session, run):
            added += 1
    for version in session.exec(select(ModelVersion)).all():
        if model_ref(version.name, version.version) not in have and add_model(session, version):
            added += 1
    for version in session.exec(select(DatasetVersion)).all():
        if dataset_ref(version.name, version.version) not in have and add_dataset(session, version):
            added += 1
    return added


@dataclass(frozen=True)
class Query:
    """What a search asks: words, filters (each optional) and where the page starts."""

    q: str = ""
    kind: str | None = None
    job_kind: str | None = None
    proposal_id: int | None = None
    call_id: int | None = None
    cycle_id: int | None = None
    model: str | None = None
    dataset: str | None = None
    license: str | None = None
    since: date | None = None
    until: date | None = None
    public: bool | None = None  # only products whose files are public now (True) or not yet (False)
    after: str | None = None  # the cursor the previous page gave
    limit: int = 25

    def filters(self) -> dict[str, Any]:
        return {k: v for k in ("kind", "job_kind", "proposal_id", "call_id", "cycle_id", "model", "dataset",
                               "license") if (v := getattr(self, k)) not in (None, "")}


@dataclass
class Page:
    items: list[ArchiveProduct]
    total: int
    next_cursor: str | None
    facets: dict[str, list[tuple[Any, int]]] = field(default_factory=dict)


def encode_cursor(product: ArchiveProduct) -> str:
    raw = f"{product.made_at.isoformat()}|{product.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        made, _, ident = raw.partition("|")
        when, number = datetime.fromisoformat(made), int(ident)
        if not 0 < number <= MAX_ID:
            raise ValueError(number)
        return (when if when.tzinfo else when.replace(tzinfo=UTC)), number
    except (ValueError, UnicodeDecodeError, OverflowError):
        raise Invalid("after: not a cursor this archive gave (start again from the first page)") from None


def _conditions(query: Query, now: datetime) -> list[Any]:
    where: list[Any] = [getattr(ArchiveProduct, k) == v for k, v in query.filters().items()]
    for word in query.q.lower().split()[:8]:
        escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        where.append(ArchiveProduct.text.like(f"%{escaped}%", escape="\\"))
    if query.since:
        where.append(ArchiveProduct.made_at >= datetime.combine(query.since, time.min, tzinfo=UTC))
    if query.until:
        where.append(ArchiveProduct.made_at < datetime.combine(query.until + timedelta(days=1), time.min, tzinfo=UTC))
    if query.public is True:
        where.append(ArchiveProduct.public_from <= now)
    elif query.public is False:
        where.append(or_(ArchiveProduct.public_from.is_(None), ArchiveProduct.public_from > now))
    return where


def search(session: Session, query: Query, *, facets: bool = True) -> Page:
    """One page of products, newest first, with the total that match and facet counts over all of them."""
    if not 1 <= query.limit <= PAGE_MAX:
        raise Invalid(f"limit: between 1 and {PAGE_MAX}")
    where = _conditions(query, utcnow())
    statement = select(ArchiveProduct).where(*where)
    if query.after:
        made, ident = decode_cursor(query.after)
        statement = statement.where(tuple_(ArchiveProduct.made_at, ArchiveProduct.id)
                                     < tuple_(literal(made, ArchiveProduct.made_at.type), ident))
    rows = list(session.exec(statement.order_by(ArchiveProduct.made_at.desc(), ArchiveProduct.id.desc())
                             .limit(query.limit + 1)))
    more = len(rows) > query.limit
    items = rows[:query.limit]
    total = session.exec(select(func.count()).select_from(ArchiveProduct).where(*where)).one()
    counted = {name: _facet(session, name, where) for name in FACETS} if facets else {}
    return Page(items=items, total=total, next_cursor=encode_cursor(items[-1]) if more else None, facets=counted)


def _facet(session: Session, name: str, where: list[Any]) -> list[tuple[Any, int]]:
    column = getattr(ArchiveProduct, name)
    counted = func.count()
    present = column.is_not(None) if name.endswith("_id") else column != ""
    rows = session.exec(select(column, counted).where(*where, present)
                        .group_by(column).order_by(counted.desc(), column).limit(FACET_VALUES)).all()
    return [(value, count) for value, count in rows]


def scan(products: Iterable[ArchiveProduct], query: Query, now: datetime | None = None) -> Page:
    """The same search as a plain scan over every product in memory: what `search` is measured against, and a
    check of its answers."""
    now = now or utcnow()
    words = query.q.lower().split()[:8]
    filters = query.filters()
    start = datetime.combine(query.since, time.min, tzinfo=UTC) if query.since else None
    end = datetime.combine(query.until + timedelta(days=1), time.min, tzinfo=UTC) if query.until else None

    def matches(p: ArchiveProduct) -> bool:
        public = p.public_from is not None and p.public_from <= now
        return (all(getattr(p, k) == v for k, v in filters.items()) and all(w in p.text for w in words)
                and (start is None or p.made_at >= start) and (end is None or p.made_at < end)
                and (query.public is None or public == query.public))

    found = sorted((p for p in products if matches(p)), key=lambda p: (p.made_at, p.id), reverse=True)
    facets: dict[str, list[tuple[Any, int]]] = {}
    for name in FACETS:
        counts: dict[Any, int] = {}
        for p in found:
            value = getattr(p, name)
            if value not in (None, ""):
                counts[value] = counts.get(value, 0) + 1
        facets[name] = sorted(counts.items(), key=lambda kv: (-kv[1], str(kv[0])))[:FACET_VALUES]
    rest = found
    if query.after:
        cursor = decode_cursor(query.after)
        rest = [p for p in found if (p.made_at, p.id) < cursor]
    items = rest[:query.limit]
    return Page(items=items, total=len(found), facets=facets,
                next_cursor=encode_cursor(items[-1]) if len(rest) > query.limit else None)
