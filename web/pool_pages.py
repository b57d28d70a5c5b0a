"""The pool's pages: the public recruitment page, owners' machines and their controls, and the admins' views."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import ValidationError

from service.auth import service as auth
from service.deps import AdminUser, CurrentUser, SessionDep, SettingsDep
from service.errors import DomainError, Invalid
from service.models import MachineState, Role
from service.pool import machines, service, standing
from service.pool.api import join_command
from service.pool.reach import pool_reach
from service.pool.schemas import MachineControls, MachineCreate, MachineDecision
from service.types import IdPath
from service.volunteers import donors
from web.confirm import confirmation, confirmed
from web.render import act, flash, form_fields, redirect, render

router = APIRouter(include_in_schema=False)


@router.get("/pool")
def pool_page(request: Request, session: SessionDep):
    """Anyone: what the pool has online and delivered, and the owners who chose to be named."""
    return render(request, "pool.html", {"pool": standing.public_pool(session)})


@router.get("/volunteers")
def volunteers_page(request: Request, session: SessionDep):
    """Anyone: the credit volunteers' machines earned with validated work, by owner (where named) and team."""
    return render(request, "volunteers.html", {"standings": donors.public_standings(session)})


@router.get("/pool/nodes")
def pool_nodes_page(request: Request, admin: AdminUser, session: SessionDep):
    return render(request, "pool_nodes.html", {"nodes": service.list_nodes(session),
                                               "summary": service.summary(session),
                                               "pool": standing.public_pool(session)})


@router.get("/machines")
def machines_page(request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep):
    shown = standing.describe(session, machines.visible_machines(session, user))
    return render(request, "machines.html", {"machines": shown, "reach": pool_reach(settings)})


@router.post("/machines/become-owner")
def become_owner(request: Request, user: CurrentUser, session: SessionDep):
    return act(request, session, "/machines", "You are an owner now: register a machine below.",
               lambda: auth.take_role(session, user, Role.owner))


def _checked(model, form: dict):  # type: ignore[no-untyped-def]
    try:
        return model.model_validate(form)
    except ValidationError as exc:
        raise Invalid("; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'form'}: {e['msg']}"
                                for e in exc.errors())) from None


@router.post("/machines")
async def register_machine(request: Request, user: CurrentUser, session: SessionDep):
    form = await form_fields(request)
    form["show_owner"] = "show_owner" in form
    form["volunteer"] = "volunteer" in form
    found: dict = {}

    def register() -> None:
        found["machine"] = machines.register(session, user, **_checked(MachineCreate, form).model_dump())

    done = ("Registered as a volunteer's machine: show its command below and run it." if form["volunteer"]
            else "Registered; an admin will look at it.")
    response = act(request, session, "/machines", done, register)
    return redirect(f"/machines/{found['machine'].id}") if "machine" in found else response


@router.get("/machines/{machine_id}")
def machine_page(machine_id: IdPath, request: Request, user: CurrentUser, session: SessionDep,
                 settings: SettingsDep):
    machine = machines.machine_for(session, user, machine_id)
    shown = request.session.pop("join_command", None)
    command = shown["command"] if shown and shown.get("machine") == machine_id else None
    response = render(request, "machine.html", {"m": standing.describe(session, [machine])[0],
                                                "mine": machine.owner_id == user.id, "command": command,
                                                "reach": pool_reach(settings)})
    if command:
        response.headers["Cache-Control"] = "no-store"
    return response


@router.post("/machines/{machine_id}/controls")
async def control_machine(machine_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    form = await form_fields(request)
    url = f"/machines/{machine_id}"
    if form.get("hours_per_day", None) == "":
        form.pop("hours_per_day")
        form["clear_cap"] = "true"
    return act(request, session, url, "Saved.", lambda: machines.set_controls(
        session, user, machine_id, **_checked(MachineControls, form).model_dump()))


@router.post("/machines/{machine_id}/forget-credential")
def forget_credential(machine_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    """The owner revokes the machine's credential: its next call is refused until a new one is shown."""
    return act(request, session, f"/machines/{machine_id}", "Its credential is revoked: the machine's next call "
                                                            "is refused.",
               lambda: machines.forget_token(session, user, machine_id))


@router.post("/machines/{machine_id}/decision")
async def decide_machine(machine_id: IdPath, request: Request, admin: AdminUser, session: SessionDep):
    form = await form_fields(request)

    def decide() -> None:
        data = _checked(MachineDecision, form)
        if data.decision == "revoke":
            machines.revoke(session, admin, machine_id, message=data.message)
        else:
            machines.decide(session, admin, machine_id, approve=data.decision == "approve", message=data.message)

    done = {"approve": "approved", "reject": "rejected", "revoke": "revoked"}.get(form.get("decision", ""), "changed")
    return act(request, session, f"/machines/{machine_id}", f"Machine {machine_id} {done}.", decide)


@router.post("/machines/{machine_id}/leave")
async def leave_machine(machine_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    back = f"/machines/{machine_id}"
    if not confirmed(await form_fields(request)):
        machine = machines.machine_for(session, user, machine_id, as_owner=True)
        if machine.state == MachineState.pending:
            return confirmation(request, title=f"Withdraw machine {machine.id}", action=f"{back}/leave", back=back,
                                button="Yes, withdraw it", points=[
                                    f"“{machine.name}” is withdrawn: no admin is asked to approve it.",
                                    "To lend it later, register it again."])
        points = [f"“{machine.name}” leaves the pool now: the join command running on it stops its Ray worker "
                  "within a minute or so."]
        points.append("The run on it saves its checkpoint and resumes on another node; the time it ran is kept."
                      if machines.busy(session, machine.id) else "Nothing runs on it now.")
        points.append("To lend it again, register it again (it gets a new join command once approved).")
        return confirmation(request, title=f"Take machine {machine.id} out of the pool", action=f"{back}/leave",
                            back=back, button="Yes, leave now", points=points)
    return act(request, session, back, "The machine left the pool.",
               lambda: machines.leave(session, user, machine_id))


@router.post("/machines/{machine_id}/join-command")
def show_join_command(machine_id: IdPath, request: Request, user: CurrentUser, session: SessionDep,
                      settings: SettingsDep):
    """Makes a fresh token (the old one stops working) and shows its join command once, on the machine's page:
    it rides in the signed session cookie to that page, which takes it out, so a reload shows it no more."""
    try:
        machine, token = machines.issue_token(session, user, machine_id)
    except DomainError as exc:
        session.rollback()
        flash(request, exc.message, "error")
        return redirect(f"/machines/{machine_id}")
    session.commit()
    request.session["join_command"] = {"machine": machine_id, "command": join_command(settings, token,
                                                                                       volunteer=machine.volunteer)}
    return redirect(f"/machines/{machine_id}")


@router.post("/proposals/{proposal_id}/donor-claim")
async def claim_donor_share(proposal_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    """The PI claims a donor share of the call for the proposal, or withdraws the claim."""
    claimed = (await form_fields(request)).get("claimed", "true") != "false"
    done = "You claim a donor share for this proposal." if claimed else "The claim to a donor share is withdrawn."
    return act(request, session, f"/proposals/{proposal_id}", done,
               lambda: donors.claim(session, user, proposal_id, claimed=claimed))


@router.post("/calls/{call_id}/donor-shares")
async def award_donor_shares(call_id: IdPath, request: Request, admin: AdminUser, session: SessionDep,
                             settings: SettingsDep):
    """The committee awards the call's reserved donor share among the claims."""
    url = f"/calls/{call_id}/ranking"
    try:
        shares = donors.award_shares(session, admin, call_id, gpus_per_run=max(settings.gpus_per_run, 1))
    except DomainError as exc:
        session.rollback()
        flash(request, exc.message, "error")
        return redirect(url)
    session.commit()
    flash(request, f"{len(shares)} donor shares awarded ({sum(s.gpu_hours for s in shares):g} GPU-hours)."
          if shares else "No claim could be given more of the donor share.")
    return redirect(url)
