"""The shared model's versions and their cards: public to read, registered by admins from succeeded train runs."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel, Field
from sqlmodel import Session

from service.archive.service import store_for
from service.deps import AdminUser, SessionDep, SettingsDep
from service.modelcards import service
from service.models import ModelVersion
from service.types import IdInt, text

router = APIRouter(tags=["models"])
ModelName = Annotated[str, Path(pattern=service.NAME_PATTERN, max_length=80)]
Number = Annotated[int, Path(ge=1, le=2**31 - 1)]


class ModelRegister(BaseModel):
    run_id: IdInt = Field(description="A succeeded train run.")
    name: str = Field(pattern=service.NAME_PATTERN, max_length=80, description="e.g. commons-model")
    notes: text(5_000) = ""


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


def card(session: Session, version: ModelVersion) -> ModelCard:
    ref = f"{version.name}@{version.version}"
    return ModelCard(ref=ref, terms=service.terms(version), card_url=f"/models/{version.name}/{version.version}",
                     **asdict(service.lineage(session, version)),
                     **version.model_dump(exclude={"id", "parent_id", "created_by"}))


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
    """Register a new version of a model from a succeeded train run (admins)."""
    version = service.register(session, store_for(settings), actor=admin, run_id=data.run_id, name=data.name,
                               notes=data.notes)
    session.commit()
    return card(session, version)
