"""Outcomes: the papers, preprints, datasets and software that came of an award, recorded by its team (a DOI or a
URL each) and public with the accepted proposal, on its runs' landing pages and in the cycle's report."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel, Field, field_validator, model_validator
from sqlmodel import Session, select

from service.audit.service import record
from service.errors import Conflict, NotFound
from service.models import Outcome, OutcomeKind, Proposal, ProposalState, Role, User
from service.proposals.access import is_member
from service.types import doi_name

MAX_PER_PROPOSAL = 200


class OutcomeCreate(BaseModel):
    kind: OutcomeKind
    title: str = Field(min_length=1, max_length=300, pattern=r"^[^\x00-\x1f\x7f]*$")
    doi: str = Field("", max_length=200, description="10.NNNN/suffix (a doi.org link is taken too).")
    url: str = Field("", max_length=500, description="An http(s) address, where there is no DOI.")
    year: int | None = Field(None, ge=1900, le=2200)

    @field_validator("doi")
    @classmethod
    def _doi(cls, value: str) -> str:
        return doi_name(value)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        value = value.strip()
        if value and not re.match(r"^https?://[^\s<>\"]+$", value):
            raise ValueError("give an http(s) address")
        return value

    @model_validator(mode="after")
    def _somewhere(self) -> OutcomeCreate:
        if not self.doi and not self.url:
            raise ValueError("give a DOI or a URL where it can be read")
        return self


class OutcomePublic(BaseModel):
    id: int
    proposal_id: int
    kind: OutcomeKind
    title: str
    doi: str
    url: str
    year: int | None
    created_at: datetime
    link: str  # where to read it: the DOI's resolver, or the URL


def to_public(outcome: Outcome) -> OutcomePublic:
    link = f"https://doi.org/{outcome.doi}" if outcome.doi else outcome.url
    return OutcomePublic(**outcome.model_dump(exclude={"added_by"}), link=link)


def _accepted(session: Session, proposal_id: int) -> Proposal:
    proposal = session.get(Proposal, proposal_id)
    if proposal is None or proposal.state != ProposalState.accepted:
        raise NotFound(f"no accepted proposal {proposal_id}")
    return proposal


def add(session: Session, actor: User, proposal_id: int, data: OutcomeCreate) -> Outcome:
    """A member of an awarded proposal's team records an outcome of it."""
    proposal = session.get(Proposal, proposal_id)
    if proposal is None or not is_member(session, actor, proposal_id):
        raise NotFound(f"no proposal {proposal_id} of your team")
    if proposal.state != ProposalState.accepted:
        raise Conflict(f"proposal {proposal_id} is {proposal.state}: outcomes are recorded for an award")
    if len(listed(session, proposal_id)) >= MAX_PER_PROPOSAL:
        raise Conflict(f"proposal {proposal_id} has {MAX_PER_PROPOSAL} outcomes, the most kept")
    outcome = Outcome(proposal_id=proposal_id, kind=data.kind, title=data.title.strip(), doi=data.doi,
                      url=data.url, year=data.year, added_by=actor.id)
    session.add(outcome)
    session.flush()
    record(session, actor, "outcome-added", f"proposal:{proposal_id}", outcome=outcome.id, kind=str(data.kind))
    return outcome


def listed(session: Session, proposal_id: int) -> list[Outcome]:
    return list(session.exec(select(Outcome).where(Outcome.proposal_id == proposal_id)
                             .order_by(Outcome.year.desc(), Outcome.id.desc())))


def public(session: Session, proposal_id: int) -> list[OutcomePublic]:
    """An accepted proposal's outcomes, as anyone may read them."""
    _accepted(session, proposal_id)
    return [to_public(o) for o in listed(session, proposal_id)]


def remove(session: Session, actor: User, outcome_id: int) -> None:
    """A team member (or an admin) takes an outcome back off the record."""
    outcome = session.get(Outcome, outcome_id)
    if outcome is None or not (is_member(session, actor, outcome.proposal_id) or actor.has(Role.admin)):
        raise NotFound(f"no outcome {outcome_id} of your team")
    record(session, actor, "outcome-removed", f"proposal:{outcome.proposal_id}", outcome=outcome.id)
    session.delete(outcome)
