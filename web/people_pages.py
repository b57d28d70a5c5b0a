"""The portal's account pages: your own name and institution, and (admins) everyone's roles."""

from __future__ import annotations

from fastapi import APIRouter, Request
from sqlmodel import select

from service.auth import service as auth
from service.deps import AdminUser, CurrentUser, SessionDep
from service.errors import DomainError
from service.models import Role, User
from service.types import Keywords, Name, parse, text
from web.forms import comma_list
from web.render import act, flash, form_fields, redirect, render

router = APIRouter(include_in_schema=False)
Institution = text(200)


@router.get("/account")
def account_page(request: Request, user: CurrentUser):
    return render(request, "account.html", {})


@router.post("/account")
async def account_submit(request: Request, user: CurrentUser, session: SessionDep):
    form = await form_fields(request)
    try:
        name = parse(Name, form.get("name", ""), "name")
        institution = parse(Institution, form.get("institution", ""), "institution")
        expertise = parse(Keywords, comma_list(form.get("expertise", "")), "expertise")
    except DomainError as exc:
        flash(request, exc.message, "error")
        return redirect("/account")
    return act(request, session, "/account", "Saved.", lambda: auth.update_profile(
        session, user, name=name, institution=institution, expertise=expertise))


@router.get("/people")
def people_page(request: Request, admin: AdminUser, session: SessionDep):
    people = list(session.exec(select(User).order_by(User.name)))
    return render(request, "people.html", {"people": people, "roles": list(Role)})


@router.post("/people/{user_id}/roles")
async def people_roles(user_id: int, request: Request, admin: AdminUser, session: SessionDep):
    form = await request.form()
    chosen = [str(v) for v in form.getlist("role") if str(v) in {r.value for r in Role}]
    return act(request, session, "/people", "Roles saved (and recorded in the audit log).",
               lambda: auth.set_roles(session, actor=admin, user_id=user_id, roles=[Role(r) for r in chosen]))
