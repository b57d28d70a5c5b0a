"""The shared model's versions and their cards: public to read, registered by admins from succeeded train runs."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field, model_validator
from sqlmodel import Session

from service.archive.catalog import model_ref
from service.archive.citations import Citation
from service.archive.service import exclusive_until, read_object, store_for
from service.archive.store import ArchiveStore
from service.deps import AdminUser, OptionalUser, SessionDep, SettingsDep
from service.modelcards import families, publishing, results, service
from service.models import ModelVersion, User
from service.timeutil import utcnow
from service.types import IdInt, text

router = APIRouter(tags=["models"])
ModelName = Annotated[str, Path(pattern=service.NAME_PATTERN, max_length=80)]
Number = Annotated[int, Path(ge=1, le=2**31 - 1)]


class ModelRegister(BaseModel):
    run_id: IdInt | None = Field(None, description="A succeeded train run; or give a family.")
    family_id: IdInt | None = Field(None, description="A family of experts whose runs all succeeded.")
    name: str = Field(pattern=service.NAME_PATTERN, max_length=80, description="e.g. commons-model")
    notes: text(5_000) = ""

    @model_validator(mode="after")
    def _one_source(self) -> ModelRegister:
        if (self.run_id is None) == (self.family_id is None):
            raise ValueError("give either run_id (one model) or family_id (a family of experts)")
        return self


class FindingOut(BaseModel):
    run_id: int
    kind: str
    figures: list[tuple[str, str]]
    metrics: list[dict[str, Any]]
    report_url: str | None


class ModelCard(BaseModel):
    ref: str
    name: str
    version: int
    run_id: int
    checkpoint_sha256: str
    attribution_sha256: str
    dataset: str
    dataset_digest: str
    dataset_origin: str
    classes: list[str]
    parent: str | None
    images: int
    licenses: dict[str, int]
    attribution_required: int
    share_alike: int
    terms: list[str]
    config: dict[str, Any]
    steps: int
    gpu_seconds: int
    notes: str
    created_at: datetime
    card_url: str
    # A family of experts: each expert's cluster, run, checkpoint, images, licenses and GPU-seconds, and the
    # router's run, file and held-out accuracy by noise level; None for one model.
    family: dict[str, Any] | None = None
    # Withdrawn: it trained on images since withdrawn; its weights are served to admins alone.
    withdrawn_at: datetime | None = None
    withdrawn_reason: str = ""
    replaced_by: str | None = None  # name@version of the version that replaced it
    identifier: str = ""  # obs:model/NAME@N
    # The weights are its run's files: to its team until the award's exclusive period ends, then to anyone (never
    # again once withdrawn); the card itself is public at once.
    weights_public: bool = False
    weights_public_from: datetime | None = None
    doi: str = ""
    attribution_url: str = ""  # every training image with its author and license (public)
    # On one version's card (not in the listing): its citation, what the analyses found (those whose results the
    # caller may read), how many more are still exclusive, and the card as a README.md with its sha256.
    citation: Citation | None = None
    analyses: list[FindingOut] = []
    analyses_exclusive: int = 0
    readme_url: str | None = None
    readme_sha256: str | None = None
    readme_size: int | None = None


def card(session: Session, version: ModelVersion) -> ModelCard:
    ref = f"{version.name}@{version.version}"
    replacement = session.get(ModelVersion, version.replaced_by_id) if version.replaced_by_id else None
    public_from = exclusive_until(session, version.run_id)
    return ModelCard(ref=ref, terms=service.terms(version), card_url=f"/models/{version.name}/{version.version}",
                     identifier=model_ref(version.name, version.version),
                     weights_public_from=None if version.withdrawn_at else public_from,
                     weights_public=not version.withdrawn_at and public_from is not None
                     and public_from <= utcnow(),
                     attribution_url=publishing.attribution_url(version),
                     replaced_by=f"{replacement.name}@{replacement.version}" if replacement else None,
                     **asdict(service.lineage(session, version)),
                     **version.model_dump(exclude={"id", "parent_id", "created_by", "replaced_by_id"}))


@router.get("/models", response_model=list[ModelCard])
def list_models(session: SessionDep) -> list[ModelCard]:
    """Every registered version of the shared model, with its card. Public."""
    return [card(session, v) for v in service.listing(session)]


def full_card(session: Session, store: ArchiveStore, version: ModelVersion, actor: User | None,
              base_url: str) -> ModelCard:
    """One version's card with its citation, the analyses' findings the actor may read, and its README."""
    found = results.findings(session, store, version, actor)
    cited = publishing.model_citation(session, store, version, base_url)
    readme, sha = publishing.readme_file(session, store, version, base_url, cited)
    return card(session, version).model_copy(update={
        "citation": cited,
        "analyses": [FindingOut(**asdict(f)) for f in found.shown], "analyses_exclusive": found.exclusive,
        "readme_url": publishing.readme_url(version), "readme_sha256": sha, "readme_size": len(readme)})


@router.get("/models/{name}/{version}", response_model=ModelCard)
def get_model(name: ModelName, version: Number, request: Request, user: OptionalUser, session: SessionDep,
              settings: SettingsDep) -> ModelCard:
    """One version's card: training data, licenses and what they ask, configuration, compute, what the analyses
    found, and how to cite it. Public."""
    return full_card(session, store_for(settings), service.find(session, name, version), user,
                     str(request.base_url))


@router.get("/models/{name}/{version}/README.md", response_class=PlainTextResponse)
def get_model_readme(name: ModelName, version: Number, request: Request, session: SessionDep,
                     settings: SettingsDep) -> PlainTextResponse:
    """The card as a Hugging Face-style README.md (YAML front matter: license, datasets, model-index). Public."""
    data, sha = publishing.readme_file(session, store_for(settings), service.find(session, name, version),
                                       str(request.base_url))
    return PlainTextResponse(data, media_type="text/markdown; charset=utf-8", headers={
        "X-Content-SHA256": sha, "Content-Disposition": 'attachment; filename="README.md"'})


@router.get("/models/{name}/{version}/attribution.json")
def get_model_attribution(name: ModelName, version: Number, session: SessionDep, settings: SettingsDep) -> Response:
    """Every image the version trained on, with its author and license (public, withdrawn versions too)."""
    found = service.find(session, name, version)
    data = read_object(store_for(settings), found.attribution_sha256)
    return Response(data, media_type="application/json", headers={"X-Content-SHA256": found.attribution_sha256})


@router.post("/models", response_model=ModelCard, status_code=201)
def register_model(data: ModelRegister, admin: AdminUser, session: SessionDep, settings: SettingsDep) -> ModelCard:
    """Register a new version of a model from a succeeded train run, or from a family of experts whose runs all
    succeeded (admins)."""
    if data.family_id is not None:
        version = families.register_family(session, store_for(settings), actor=admin, group_id=data.family_id,
                                           name=data.name, notes=data.notes)
    else:
        version = service.register(session, store_for(settings), actor=admin, run_id=data.run_id, name=data.name,
                                   notes=data.notes)
    session.commit()
    return card(session, version)
