"""The archive's search over every data product (public: metadata is public at once), and the DOI an operator
records for a model or dataset version."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field
from sqlmodel import Session, select

from jobs.commons.licenses import FAMILIES
from service.archive import catalog
from service.audit.service import record
from service.deps import AdminUser, SessionDep
from service.errors import Invalid, NotFound
from service.models import ArchiveProduct, Call, Cycle, DatasetVersion, ModelVersion
from service.timeutil import utcnow
from service.types import MAX_ID, doi_name

router = APIRouter(tags=["archive"])
Words = Annotated[str, Query(max_length=200, description="Words every product found contains.")]
Ref = Annotated[str | None, Query(max_length=120)]
Id = Annotated[int | None, Query(ge=1, le=MAX_ID)]


KINDS = ("run", "model", "dataset")
Choice = Annotated[str | None, Query(max_length=40)]
Day = Annotated[str | None, Query(max_length=10, description="YYYY-MM-DD")]


def _one_of(field: str, value: str | None, allowed: tuple[str, ...]) -> str | None:
    if not value:  # an empty form field asks for nothing
        return None
    if value not in allowed:
        raise Invalid(f"{field}: choose one of {', '.join(allowed)} (not {value[:40]!r})")
    return value


def _printable(value: str | None) -> str | None:
    """Words without control characters (a NUL cannot even reach PostgreSQL)."""
    return None if value is None else re.sub(r"[\x00-\x1f\x7f]", " ", value)


def _day(field: str, value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise Invalid(f"{field}: a date as YYYY-MM-DD (not {value!r})") from None


def archive_query(q: Words = "", kind: Choice = None, job_kind: Choice = None, proposal: Id = None,
                  call: Id = None, cycle: Id = None, model: Ref = None, dataset: Ref = None, license: Choice = None,
                  since: Day = None, until: Day = None,
                  public: Annotated[bool | None, Query(description="Only products whose files are public now "
                                                                   "(true) or not yet (false).")] = None,
                  after: Annotated[str | None, Query(max_length=200, description="The cursor of the page before.")]
                  = None,
                  limit: Annotated[int, Query(ge=1, le=catalog.PAGE_MAX)] = 25) -> catalog.Query:
    """A search as the query string gives it (the API and the page read it alike; an empty field is no filter)."""
    q, job_kind, model, dataset = (_printable(v) for v in (q, job_kind, model, dataset))
    return catalog.Query(q=q or "", kind=_one_of("kind", kind, KINDS), job_kind=job_kind or None,
                         proposal_id=proposal, call_id=call, cycle_id=cycle, model=model or None,
                         dataset=dataset or None,
                         license=_one_of("license", license, FAMILIES), since=_day("since", since),
                         until=_day("until", until), public=public, after=after or None, limit=limit)


ArchiveQuery = Annotated[catalog.Query, Depends(archive_query)]


class ProductOut(BaseModel):
    ref: str
    kind: str
    job_kind: str
    title: str
    proposal_id: int | None
    call_id: int | None
    cycle_id: int | None
    model: str
    dataset: str
    license: str
    url: str
    thumbnail_url: str | None
    files_public: bool
    public_from: datetime | None
    made_at: datetime


class FacetValue(BaseModel):
    value: Any
    label: str
    count: int


class ArchivePage(BaseModel):
    total: int
    items: list[ProductOut]
    next: str | None = Field(description="Pass as `after` for the next page; null on the last.")
    facets: dict[str, list[FacetValue]]


def thumbnail_url(product: ArchiveProduct, public: bool) -> str | None:
    if not product.thumbnail or not public:
        return None
    if product.kind == "dataset":
        return f"{product.url}/sheet.png"
    return f"/api/runs/{product.run_id}/artifacts/samples.png" if product.run_id else None


def product_out(product: ArchiveProduct, now: datetime) -> ProductOut:
    public = product.public_from is not None and product.public_from <= now
    return ProductOut(**product.model_dump(exclude={"id", "text", "thumbnail", "run_id"}), files_public=public,
                      thumbnail_url=thumbnail_url(product, public))


def labels(session: Session, facets: dict[str, list[tuple[Any, int]]]) -> dict[str, list[FacetValue]]:
    """Facet counts with what people read: the cycle's and the call's names rather than their ids."""
    names: dict[str, dict[Any, str]] = {
        "cycle_id": dict(session.exec(select(Cycle.id, Cycle.name).where(
            Cycle.id.in_([v for v, _ in facets.get("cycle_id", [])]))).all()),
        "call_id": dict(session.exec(select(Call.id, Call.title).where(
            Call.id.in_([v for v, _ in facets.get("call_id", [])]))).all())}
    return {facet: [FacetValue(value=v, label=names.get(facet, {}).get(v, str(v)), count=n) for v, n in values]
            for facet, values in facets.items()}


def page_out(session: Session, query: catalog.Query) -> ArchivePage:
    found = catalog.search(session, query)
    now = utcnow()
    return ArchivePage(total=found.total, items=[product_out(p, now) for p in found.items], next=found.next_cursor,
                       facets=labels(session, found.facets))


@router.get("/archive", response_model=ArchivePage)
def search_archive(query: ArchiveQuery, session: SessionDep) -> ArchivePage:
    """Search the archive's data products (runs' outputs, model versions, dataset versions), newest first, with
    facet counts over everything that matches; page on with `after`. Public."""
    return page_out(session, query)


class DoiRecord(BaseModel):
    ref: str = Field(max_length=220, description="obs:model/NAME@N or obs:dataset/NAME@N (runs: PUT "
                                                 "/api/archive/runs/ID/doi)")
    doi: str = Field(max_length=200, description="10.NNNN/suffix, or a doi.org link; empty removes it.")


class DoiOut(BaseModel):
    ref: str
    doi: str


def _version(session: Session, ref: str) -> ModelVersion | DatasetVersion:
    kind, _, named = ref.partition("/")
    name, _, number = named.partition("@")
    table = {"obs:model": ModelVersion, "obs:dataset": DatasetVersion}.get(kind)
    if table is None or not number.isdigit():
        raise Invalid(f"ref: {ref!r} is not obs:model/NAME@N or obs:dataset/NAME@N")
    found = session.exec(select(table).where(table.name == name, table.version == int(number))).first()
    if found is None:
        raise NotFound(f"no data product {ref}")
    return found


@router.put("/archive/doi", response_model=DoiOut)
def set_version_doi(data: DoiRecord, admin: AdminUser, session: SessionDep) -> DoiOut:
    """Record the DOI registered for a model or dataset version (admins)."""
    version = _version(session, data.ref)
    try:
        version.doi = doi_name(data.doi)
    except ValueError as exc:
        raise Invalid(f"doi: {exc}") from None
    session.add(version)
    record(session, admin, "archive.doi", data.ref, doi=version.doi)
    session.commit()
    return DoiOut(ref=data.ref, doi=version.doi)
