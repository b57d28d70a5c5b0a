"""A run's landing page as a data product of the archive: its stable identifier (`obs:run/ID`, and a DOI an
operator may register), its provenance, what is public and from when, and how to cite it.

Metadata is public as soon as the run has succeeded (its proposal's title and team are public on `/accepted` from
the award on); its files only once the award's exclusive period is over, as everywhere else (archive.can_download).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlmodel import Session, select

from service.archive.citations import Citation, Cited, cite
from service.archive.service import can_download, list_artifacts
from service.errors import Forbidden, Invalid, NotFound
from service.ledger.service import run_charged
from service.models import Award, Call, Cycle, Proposal, ProposalState, Role, Run, RunAttempt, RunState, User
from service.proposals.outcomes import OutcomePublic, to_public
from service.proposals.outcomes import listed as outcomes_of
from service.proposals.service import team
from service.types import doi_name

THUMBNAIL = "samples.png"


class ProductFile(BaseModel):
    name: str
    size: int
    sha256: str
    media_type: str
    url: str | None  # None while the files are exclusive to the team


class RunLanding(BaseModel):
    identifier: str
    doi: str
    landing_url: str
    title: str
    team: list[str]
    call: str
    cycle: str
    job_kind: str
    plan: dict[str, Any]
    dataset: str | None
    dataset_digest: str | None
    model_inputs: dict[str, str]  # the archived weights it started from or analysed, by field
    code_version: str
    gpu_hours: float
    finished_at: datetime | None
    public_from: datetime | None
    files_public: bool
    files: list[ProductFile]
    thumbnail_url: str | None
    citation: Citation
    outcomes: list[OutcomePublic] = []  # what came of the award it ran under


def identifier(run_id: int) -> str:
    return f"obs:run/{run_id}"


def _product(session: Session, run_id: int) -> tuple[Run, Proposal]:
    run = session.get(Run, run_id)
    proposal = session.get(Proposal, run.proposal_id) if run is not None else None
    if run is None or run.state != RunState.succeeded or proposal is None \
            or proposal.state != ProposalState.accepted:
        raise NotFound(f"no data product {identifier(run_id)}: only a run that succeeded is one")
    return run, proposal


def run_landing(session: Session, run_id: int, actor: User | None, base_url: str = "") -> RunLanding:
    """The landing page's contents, as anyone may see them (files linked only where `actor` may download)."""
    run, proposal = _product(session, run_id)
    award = session.get(Award, run.award_id)
    call = session.get(Call, proposal.call_id)
    cycle = session.get(Cycle, call.cycle_id)
    names = [u.name for u in sorted(team(session, proposal.id), key=lambda u: (u.id != proposal.pi_id, u.id))]
    public = can_download(session, actor, run.id)
    files = [ProductFile(name=a.name, size=a.size, sha256=a.sha256, media_type=a.media_type,
                         url=f"/api/runs/{run.id}/artifacts/{a.name}" if public else None)
             for a in list_artifacts(session, run.id)]
    kept = session.exec(select(RunAttempt.worker_version).where(
        RunAttempt.run_id == run.id, RunAttempt.state == "succeeded").order_by(RunAttempt.number)).first()
    plan = run.job_plan
    models = {field: str(value) for field, value in plan.items()
              if field.endswith("checkpoint_sha256") and isinstance(value, str) and value}
    landing_url = f"{base_url.rstrip('/')}/archive/runs/{run.id}"
    landing = RunLanding(
        identifier=identifier(run.id), doi=run.doi, landing_url=landing_url, title=proposal.title, team=names,
        call=call.title, cycle=cycle.name if cycle else "", job_kind=run.job_kind, plan=plan,
        dataset=plan.get("dataset"), dataset_digest=plan.get("dataset_digest"), model_inputs=models,
        code_version=kept or "", gpu_hours=round(run_charged(session, run.id) / 3600, 4),
        finished_at=run.finished_at, public_from=award.exclusive_until, files_public=public, files=files,
        thumbnail_url=next((f.url for f in files if f.name == THUMBNAIL and f.url), None),
        citation=Citation(text="", bibtex="", cff=""),
        outcomes=[to_public(o) for o in outcomes_of(session, proposal.id)])
    landing.citation = citation(landing)
    return landing


def citation(landing: RunLanding) -> Citation:
    """The run's outputs cited: the team, the facility, the identifier (and DOI)."""
    title = f"{landing.title}: run {landing.identifier.rsplit('/', 1)[1]} ({landing.job_kind})"
    return cite(Cited(authors=landing.team, title=title, identifier=landing.identifier, doi=landing.doi,
                      landing_url=landing.landing_url, released=landing.finished_at))


def set_doi(session: Session, actor: User, run_id: int, doi: str) -> Run:
    """An operator records the DOI registered for a run's outputs ("" removes it)."""
    if not actor.has(Role.admin):
        raise Forbidden("only an operator (admin) records a DOI")
    run, _ = _product(session, run_id)
    try:
        run.doi = doi_name(doi)
    except ValueError as exc:
        raise Invalid(f"doi: {exc}") from None
    session.add(run)
    return run
