"""Withdrawn training images (admins): record one, list them with the model versions that trained on them, and
rebuild a family version without them."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field, model_validator
from sqlmodel import select

from service.archive.service import store_for
from service.datasets import withdrawals
from service.deps import AdminUser, SessionDep, SettingsDep
from service.modelcards import families
from service.modelcards import service as models
from service.modelcards.api import ModelName, Number
from service.models import Withdrawal, WithdrawalReason
from service.types import text

router = APIRouter(tags=["withdrawals"])


class WithdrawalIn(BaseModel):
    image_sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$", description="The image, by its sha256.")
    page_id: int | None = Field(None, ge=1, le=2**31 - 1, description="Or its Commons page id.")
    reason: WithdrawalReason
    note: text(2_000) = ""

    @model_validator(mode="after")
    def _one_image(self) -> WithdrawalIn:
        if (self.image_sha256 is None) == (self.page_id is None):
            raise ValueError("name the image by image_sha256 or by page_id")
        return self


class AffectedVersion(BaseModel):
    model: str  # name@version
    images: int  # withdrawn images it trained on
    clusters: list[int]  # for a family: the clusters that held them (the experts a rebuild trains again)


class WithdrawalPublic(BaseModel):
    id: int
    image_sha256: str
    page_id: int | None
    title: str
    reason: WithdrawalReason
    note: str
    created_at: datetime


class WithdrawalsOut(BaseModel):
    withdrawals: list[WithdrawalPublic]
    affected: list[AffectedVersion]


class RebuildOut(BaseModel):
    family_id: int
    family_url: str


def _listing(session: SessionDep, settings: SettingsDep) -> WithdrawalsOut:
    found = session.exec(select(Withdrawal).order_by(Withdrawal.id)).all()
    affected = [AffectedVersion(model=f"{a.version.name}@{a.version.version}", images=len(a.images),
                                clusters=sorted(a.clusters))
                for a in withdrawals.affected_versions(session, store_for(settings))]
    return WithdrawalsOut(withdrawals=[WithdrawalPublic.model_validate(w, from_attributes=True) for w in found],
                          affected=affected)


@router.get("/withdrawals", response_model=WithdrawalsOut)
def list_withdrawals(admin: AdminUser, session: SessionDep, settings: SettingsDep) -> WithdrawalsOut:
    """Every withdrawn image, and the model versions not yet withdrawn that trained on one (admins)."""
    return _listing(session, settings)


@router.post("/withdrawals", response_model=WithdrawalsOut, status_code=201)
def record_withdrawal(data: WithdrawalIn, admin: AdminUser, session: SessionDep,
                      settings: SettingsDep) -> WithdrawalsOut:
    """Withdraw a training image (admins): by its sha256 or Commons page id, with the reason."""
    withdrawals.withdraw(session, store_for(settings), actor=admin, reason=data.reason, sha256=data.image_sha256,
                         page_id=data.page_id, note=data.note)
    session.commit()
    return _listing(session, settings)


@router.post("/models/{name}/{version}/rebuild", response_model=RebuildOut, status_code=202)
def rebuild(name: ModelName, version: Number, admin: AdminUser, session: SessionDep,
            settings: SettingsDep) -> RebuildOut:
    """Rebuild a family version without the withdrawn images it trained on (admins): only the experts whose
    clusters held them and the router train again; the next version of the name is registered when they are
    done, and this one is withdrawn."""
    found = models.find(session, name, version)
    group = families.rebuild_family(session, store_for(settings), actor=admin, version_id=found.id)
    session.commit()
    return RebuildOut(family_id=group.id, family_url=f"/families/{group.id}")
