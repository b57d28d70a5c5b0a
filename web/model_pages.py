"""The portal's model pages: every registered version of the shared model and its card (public), and the admins'
forms that register a version from a succeeded train run or a finished family of experts."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter, Request

from service.archive.service import store_for
from service.deps import AdminUser, OptionalUser, SessionDep, SettingsDep
from service.errors import DomainError
from service.modelcards import families, service
from service.modelcards.api import full_card
from service.models import ModelVersion, Run
from service.types import IdPath, parse, text
from web.confirm import confirmation, confirmed
from web.render import flash, form_fields, redirect, render

router = APIRouter(include_in_schema=False)
Notes = text(5_000)


@router.get("/models")
def models_page(request: Request, session: SessionDep):
    return render(request, "models.html", {"versions": service.listing(session)})


@router.get("/models/{name}/{version}")
def model_card_page(name: str, version: IdPath, request: Request, user: OptionalUser, session: SessionDep,
                    settings: SettingsDep):
    found = service.find(session, name[:80], version)
    replaced = session.get(ModelVersion, found.replaced_by_id) if found.replaced_by_id else None
    published = full_card(session, store_for(settings), found, user, str(request.base_url))
    return render(request, "model.html", {"m": found, "terms": service.terms(found), "replaced": replaced,
                                          "lineage": service.lineage(session, found), "card": published})


@router.post("/runs/{run_id}/register-model")
async def register_model(run_id: IdPath, request: Request, admin: AdminUser, session: SessionDep,
                         settings: SettingsDep):
    return await _register(request, session, f"/runs/{run_id}", lambda name, notes: service.register(
        session, store_for(settings), actor=admin, run_id=run_id, name=name, notes=notes))


@router.post("/families/{group_id}/register-model")
async def register_family(group_id: IdPath, request: Request, admin: AdminUser, session: SessionDep,
                          settings: SettingsDep):
    return await _register(request, session, f"/families/{group_id}", lambda name, notes: families.register_family(
        session, store_for(settings), actor=admin, group_id=group_id, name=name, notes=notes))


async def _register(request: Request, session: SessionDep, back: str,
                    make: Callable[[str, str], ModelVersion]):  # type: ignore[no-untyped-def]
    """The registration form's answer: the new card, or the page it came from with the reason it was refused."""
    form = await form_fields(request)
    if not confirmed(form):
        return _confirm_registration(request, session, back, form)
    try:
        version = make(form.get("name", "").strip(), parse(Notes, form.get("notes", ""), "notes"))
    except DomainError as exc:
        session.rollback()
        flash(request, exc.message, "error")
        return redirect(back)
    session.commit()
    flash(request, f"Registered {version.name}@{version.version}.")
    return redirect(f"/models/{version.name}/{version.version}")


def _confirm_registration(request: Request, session: SessionDep, back: str, form: dict[str, str]):  # type: ignore[no-untyped-def]
    """What registering publishes, before it does: the name and number, and what the card shows to anyone."""
    name = form.get("name", "").strip()
    if not name:
        flash(request, "Name the model version: lower-case letters, digits and dashes (e.g. commons-model).",
              "error")
        return redirect(back)
    number = service.next_number(session, name)
    source = back.strip("/").replace("s/", " ", 1)
    points = [f"{name}@{number} is published from {source}: its model card is public, with every training image's "
              "author and license, and researchers can name it as a base model.",
              "A registered version stays: a later one can replace it, but its card remains."]
    warnings = [f"{name} already has {number - 1} version{'s' if number > 2 else ''}: this becomes the newest, "
                f"the one “{name}” means from now on."] if number > 1 else []
    run_id = int(back.rsplit("/", 1)[1]) if back.startswith("/runs/") else None
    run = session.get(Run, run_id) if run_id else None
    if run is not None and run.job_plan.get("steps"):
        points.insert(1, f"Run {run.id} trained {run.job_plan['steps']} steps on {run.job_plan.get('dataset')}.")
    return confirmation(request, title=f"Publish {name}@{number}", action=f"{back}/register-model", back=back,
                        button=f"Yes, publish {name}@{number}", points=points, warnings=warnings, fields=form)
