"""The portal's model pages: every registered version of the shared model and its card (public), and the admins'
forms that register a version from a succeeded train run or a finished family of experts."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.archive.service import store_for
from service.deps import AdminUser, SessionDep, SettingsDep
from service.errors import DomainError
from service.modelcards import families, service
from service.types import IdPath, parse, text
from web.render import flash, form_fields, redirect, render

router = APIRouter(include_in_schema=False)
Notes = text(5_000)


@router.get("/models")
def models_page(request: Request, session: SessionDep):
    return render(request, "models.html", {"versions": service.listing(session)})


@router.get("/models/{name}/{version}")
def model_card_page(name: str, version: IdPath, request: Request, session: SessionDep):
    found = service.find(session, name[:80], version)
    replaced = session.get(type(found), found.replaced_by_id) if found.replaced_by_id else None
    return render(request, "model.html", {"m": found, "terms": service.terms(found), "replaced": replaced,
                                          "lineage": service.lineage(session, found)})


@router.post("/runs/{run_id}/register-model")
async def register_model(run_id: IdPath, request: Request, admin: AdminUser, session: SessionDep,
                         settings: SettingsDep):
    form = await form_fields(request)
    try:
        version = service.register(session, store_for(settings), actor=admin, run_id=run_id,
                                   name=form.get("name", "").strip(),
                                   notes=parse(Notes, form.get("notes", ""), "notes"))
    except DomainError as exc:
        session.rollback()
        flash(request, exc.message, "error")
        return redirect(f"/runs/{run_id}")
    session.commit()
    flash(request, f"Registered {version.name}@{version.version}.")
    return redirect(f"/models/{version.name}/{version.version}")


@router.post("/families/{group_id}/register-model")
async def register_family(group_id: IdPath, request: Request, admin: AdminUser, session: SessionDep,
                          settings: SettingsDep):
    form = await form_fields(request)
    try:
        version = families.register_family(session, store_for(settings), actor=admin, group_id=group_id,
                                           name=form.get("name", "").strip(),
                                           notes=parse(Notes, form.get("notes", ""), "notes"))
    except DomainError as exc:
        session.rollback()
        flash(request, exc.message, "error")
        return redirect(f"/families/{group_id}")
    session.commit()
    flash(request, f"Registered {version.name}@{version.version}.")
    return redirect(f"/models/{version.name}/{version.version}")
