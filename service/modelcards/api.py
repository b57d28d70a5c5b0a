"""The shared model's versions and their cards: public to read, registered by admins from succeeded train runs."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field, model_validator
from sqlmodel import Session

from service.archive.service import store_for
from service.deps import AdminUser, SessionDep, SettingsDep
from service.modelcards import families, service
from service.models import ModelVersion
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


def card(session: Session, version: ModelVersion) -> ModelCard:
    ref = f"{version.name}@{version.version}"
    replacement = session.get(ModelVersion, version.replaced_by_id) if version.replaced_by_id else None
    return ModelCard(ref=ref, terms=service.terms(version), card_url=f"/models/{version.name}/{version.version}",
                     replaced_by=f"{replacement.name}@{replacement.version}" if replacement else None,
                     **asdict(service.lineage(session, version)),
                     **version.model_dump(exclude={"id", "parent_id", "created_by", "replaced_by_id"}))


@router.get("/models", response_model=list[ModelCard])
def list_models(session: SessionDep) -> list[ModelCard]:
    """Every registered version of the shared model, with its card. Public."""
    return [card(session, v) for v in service.listing(session)]


@router.get("/models/{name}/{version}", response_model=ModelCard)
def get_model(name: ModelName, version: Number, session: SessionDep) -> ModelCard:
    """One version's card: training data, licenses and what they ask, configuration, compute. Public."""
    return card(session, service.find(session, name, version))


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
