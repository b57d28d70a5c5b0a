"""The portal's pages. Each calls the same domain services as the JSON API, never the API itself."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from jobs.config import JOB_KINDS
from service.analyses import followup, marks
from service.analyses import service as analyses
from service.api import Estimate, job_plan_estimate
from service.archive import service as archive
from service.archive import storage
from service.attempts.service import latest_attempt, log_since
from service.auth import service as auth
from service.auth.browser import sign_in_browser, sign_out_browser
from service.auth.schemas import Login, UserCreate
from service.calls import service as calls
from service.calls import summary as cycle_summary
from service.calls.schemas import CallCreate, CycleCreate
from service.datasets import service as dataset_service
from service.deps import (
    AdminUser,
    CurrentUser,
    OptionalUser,
    ResearcherUser,
    SessionDep,
    SettingsDep,
    client_address,
)
from service.errors import DomainError
from service.ledger.service import run_charged
from service.modelcards import service as model_service
from service.models import Proposal, Role, Run, User
from service.pool import standing
from service.proposals import access, outcomes, team
from service.proposals import service as proposals
from service.proposals.schemas import ProposalCreate, ProposalDraft
from service.review import feedback
from service.rounds.service import in_rounds, rounds_of
from service.runs import families
from service.runs import service as runs
from service.runs.status import shown_states
from service.timeutil import utcnow
from service.types import IdPath, IdQuery
from service.volunteers import donors
from web.charts import bars, loss_chart, loss_chart_from_metrics
from web.forms import comma_list, field_errors, plan_fields, plan_from_form, service_plan_error
from web.render import act as _act
from web.render import flash, form_fields, render
from web.render import redirect as _redirect

router = APIRouter(include_in_schema=False)


def _problems(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith("/") and not target.startswith("//") else "/"


# ---- home and sign-in --------------------------------------------------------------------------------------


@router.get("/")
def home(request: Request, session: SessionDep, user: OptionalUser):
    mine = proposals.list_visible(session, actor=user) if user else []
    return render(request, "home.html", {
        "calls": [calls.to_public(session, c) for c in calls.list_calls(session)],
        "proposals": mine, "pool": standing.public_pool(session) if user else None, **_runs_of(session, mine),
    })


def _runs_of(session: SessionDep, listed: list) -> dict:  # type: ignore[type-arg]
    """Each listed proposal's runs, and the word each run shows (service.runs.status)."""
    found = runs.runs_by_proposal(session, [p.id for p in listed])
    return {"proposal_runs": found, "run_states": shown_states(session, [r for rs in found.values() for r in rs])}


@router.get("/login")
def login_page(request: Request, next: str = "/"):
    return render(request, "login.html", {"next": _safe_next(next)})


@router.post("/login")
async def login_submit(request: Request, session: SessionDep, settings: SettingsDep):
    form = await request.form()
    target = _safe_next(str(form.get("next", "/")))
    try:
        data = Login.model_validate({"email": form.get("email", ""), "password": form.get("password", "")})
        # Checking a password takes a while (argon2): in a worker thread, so other requests go on meanwhile.
        user = await run_in_threadpool(auth.authenticate, session, email=data.email, password=data.password,
                                       address=client_address(request), limits=auth.throttle_limits(settings))
    except ValidationError:
        return render(request, "login.html", {"error": auth.WRONG_LOGIN, "next": target}, status_code=401)
    except DomainError as exc:
        return render(request, "login.html", {"error": exc.message, "next": target}, status_code=exc.status_code)
    sign_in_browser(request, session, user)
    return _redirect(target)


@router.post("/logout")
def logout(request: Request, session: SessionDep):
    sign_out_browser(request, session)
    return _redirect("/")


@router.get("/signup")
def signup_page(request: Request):
    return render(request, "signup.html")


@router.post("/signup")
async def signup_submit(request: Request, session: SessionDep, settings: SettingsDep):
    form = await request.form()
    values = {k: str(form.get(k, "")) for k in ("email", "name", "password", "institution")}
    shown = {k: v for k, v in values.items() if k != "password"}
    try:
        data = UserCreate.model_validate(values)
        user = await run_in_threadpool(auth.sign_up, session, email=data.email, name=data.name,
                                       password=data.password, institution=data.institution,
                                       base_url=settings.base_url)
    except ValidationError as exc:
        return render(request, "signup.html", {"error": _problems(exc), "values": shown}, status_code=422)
    except DomainError as exc:
        return render(request, "signup.html", {"error": exc.message, "values": shown}, status_code=exc.status_code)
    session.commit()
    return render(request, "signup_sent.html", {"email": user.email}, status_code=202)


@router.get("/verify/{token}")
def verify_page(token: str, request: Request):
    """The page the confirmation link opens: the account's password confirms the address and signs in."""
    return render(request, "verify.html", {"token": token[:100]})


@router.post("/verify/{token}")
async def verify_submit(token: str, request: Request, session: SessionDep, settings: SettingsDep):
    form = await request.form()
    try:
        user = await run_in_threadpool(auth.verify_email, session, raw=token[:100],
                                       password=str(form.get("password", ""))[:200],
                                       address=client_address(request), limits=auth.throttle_limits(settings))
    except DomainError as exc:
        return render(request, "verify.html", {"token": token[:100], "error": exc.message},
                      status_code=exc.status_code)
    sign_in_browser(request, session, user)
    flash(request, f"Your address is confirmed. Welcome, {user.name}.")
    return _redirect("/")


# ---- calls -------------------------------------------------------------------------------------------------


CALL_DEFAULTS = {"exclusive_months": 12, "reviewers_per_proposal": 3, "reviewer_cap": 8, "triage_fraction": 0.3,
                 "donor_share": 0.0,
                 "dual_anonymous": "true", "kind": "regular"}


def _call_form(request: Request, session, values: dict[str, Any], error: str | None = None, status_code: int = 200):
    cycles = [calls.cycle_public(session, c) for c in calls.list_cycles(session)]
    return render(request, "call_new.html", {"values": values, "error": error, "cycles": cycles},
                  status_code=status_code)


@router.get("/calls/new")
def new_call_page(request: Request, admin: AdminUser, session: SessionDep):
    return _call_form(request, session, dict(CALL_DEFAULTS))


@router.post("/cycles/new")
async def new_cycle_submit(request: Request, admin: AdminUser, session: SessionDep):
    form = {k: v for k, v in (await form_fields(request)).items() if v.strip()}
    try:
        cycle = calls.create_cycle(session, actor=admin, data=CycleCreate.model_validate(form))
    except ValidationError as exc:
        return _call_form(request, session, dict(CALL_DEFAULTS), _problems(exc), 422)
    except DomainError as exc:
        return _call_form(request, session, dict(CALL_DEFAULTS), exc.message, exc.status_code)
    session.commit()
    flash(request, f"Cycle '{cycle.name}' made: open its calls below.")
    return _redirect("/calls/new")


@router.post("/calls/new")
async def new_call_submit(request: Request, admin: AdminUser, session: SessionDep):
    form = await form_fields(request)
    try:
        data = CallCreate.model_validate({k: v for k, v in form.items() if v.strip()})
        call = calls.create_call(session, actor=admin, data=data)
    except ValidationError as exc:
        return _call_form(request, session, form, _problems(exc), 422)
    except DomainError as exc:
        return _call_form(request, session, form, exc.message, exc.status_code)
    session.commit()
    flash(request, f"Call '{call.title}' is open for proposals.")
    return _redirect(f"/calls/{call.id}")


@router.get("/cycles/{cycle_id}")
def cycle_page(cycle_id: IdPath, request: Request, session: SessionDep):
    """Anyone: the cycle's report (awarded, used, published, and what came of it)."""
    return render(request, "cycle.html", {"c": cycle_summary.summary(session, cycle_id)})


@router.get("/calls/{call_id}")
def call_page(call_id: IdPath, request: Request, session: SessionDep):
    return render(request, "call.html", {"call": calls.to_public(session, calls.get_call(session, call_id))})


# ---- proposals ---------------------------------------------------------------------------------------------


def _proposal_form(request: Request, session, call_id: int, values: dict[str, Any], error: str | None = None,
                   status_code: int = 200, errors: dict[str, str] | None = None, draft_id: int | None = None):
    return render(request, "propose.html", {
        "call": calls.to_public(session, calls.get_call(session, call_id)), "values": values,
        "estimate": _estimate(plan_from_form(values)),
        "options": _plan_options(session, request.state.user), "authors": _dataset_authors(session),
        "kinds": plan_fields(), "error": error, "errors": errors or {}, "draft_id": draft_id,
        "action_url": f"/proposals/{draft_id}/edit" if draft_id else f"/calls/{call_id}/propose",
    }, status_code=status_code)


def _plan_options(session, user) -> dict[str, list[tuple[str, str]]]:
    """The choices of the plan fields that name registered things: datasets, model versions, checkpoints."""
    data = [(f"{d.name}@{d.version}", f"{d.name}@{d.version}: {d.images} images, {d.origin}")
            for d in dataset_service.listing(session)]
    listed = model_service.listing(session)
    versions = [(f"{m.name}@{m.version}", f"{m.name}@{m.version}: {m.steps} steps on {m.dataset}")
                for m in listed if not model_service.is_descriptor(m)]
    learned = [(f"{m.name}@{m.version}", f"{m.name}@{m.version}: a copy descriptor learned from {m.dataset}")
               for m in listed if model_service.is_descriptor(m)]
    checkpoints = archive.usable_checkpoints(session, user) if user else []
    options = {"train.dataset": data, "train.base_model": [("", "none: train from scratch"), *versions],
               "sample.model": [*versions, ("", "none: the checkpoint below")],
               "sample.checkpoint_sha256": [*([("", "none: the model version above")] if versions else []),
                                            *checkpoints],
               "duplication.dataset": data, "descriptor.dataset": data, "ablation.with_model": versions,
               "ablation.without_model": versions}
    for kind in ("replication", "extraction", "duplication"):  # the structure descriptor, or a learned one
        options[f"{kind}.descriptor"] = [("structure", "structure: the offline structure descriptor"), *learned]
    for kind in ("replication", "extraction", "quality"):  # a model version, or a run named below
        options[f"{kind}.model"] = [*versions, ("", "none: the run named below")]
    return {key: choices for key, choices in options.items() if any(value for value, _ in choices)}


def _dataset_authors(session) -> str:
    """The authors whose images a run may leave out, per dataset version (long lists are on its page)."""
    parts = []
    for d in dataset_service.listing(session):
        names = ", ".join(d.authors) if len(d.authors) <= 30 else f"{len(d.authors)} authors, listed on /datasets"
        parts.append(f"{d.name}@{d.version}: {names}")
    return "; ".join(parts)


PROPOSAL_FIELDS = {"title", "abstract", "justification", "requested_gpu_hours", "subject", "keywords"}



def _proposal_fields(form: dict[str, str]) -> dict[str, Any]:
    """The proposal's own fields as the form gives them (keywords comma-separated)."""
    return {**{k: form.get(k, "") for k in PROPOSAL_FIELDS}, "keywords": comma_list(form.get("keywords", ""))}


def _estimate(plan: dict[str, Any]) -> Estimate | None:
    """The plan's estimated cost, or None while the plan is not valid."""
    try:
        return job_plan_estimate(plan)
    except DomainError:
        return None


def _form_problems(session, user: User, form: dict[str, str], plan: dict[str, Any],
                   call_id: int | None = None) -> dict[str, str]:
    """Every problem of a proposal form, field by field, in plain words (empty: it may go to the service): the
    proposal's own fields and the call's capacity, the job's own rules, then what the plan names (a dataset's
    authors, a base model's architecture)."""
    problems: dict[str, str] = {}
    try:
        ProposalCreate.model_validate({**_proposal_fields(form), "job_plan": plan})
    except ValidationError as exc:
        problems |= field_errors(exc, only=PROPOSAL_FIELDS)
    if call_id is not None and "requested_gpu_hours" not in problems:
        call = calls.get_call(session, call_id)
        try:
            hours = float(form.get("requested_gpu_hours", "") or 0)
        except ValueError:
            hours = 0.0
        if hours > call.capacity_gpu_hours:
            problems["requested_gpu_hours"] = (f"The call has {call.capacity_gpu_hours:g} GPU-hours in all: ask for "
                                               f"{call.capacity_gpu_hours:g} or less.")
    if JOB_KINDS.get(plan.get("kind", "")) is None:
        problems["job_kind"] = "Choose what the job does."
    else:
        problems |= _plan_problems(session, user, plan)
    return problems


def _plan_problems(session, user: User, plan: dict[str, Any], rounds: int = 10) -> dict[str, str]:
    """Every problem of the plan at once: its shape (the job's own rules), then what it names (datasets, authors,
    base models). Each check stops at its first problem, so a field found wrong is set aside (its default stands
    in) and the plan is checked again, until it passes or a problem names no field."""
    kind, model = plan["kind"], JOB_KINDS[plan["kind"]]
    problems: dict[str, str] = {}
    remaining = dict(plan)
    for _ in range(rounds):
        try:
            model.model_validate(remaining)
        except ValidationError as exc:
            found = field_errors(exc, prefix=f"{kind}.")
        else:
            try:
                proposals.validate_job_plan(session, user, remaining)
                return problems
            except DomainError as exc:
                found = service_plan_error(exc.message, kind) or {kind: exc.message}
        for key, message in found.items():
            problems.setdefault(key, message)
        wrong = {key.split(".", 1)[1] for key in found if key.startswith(f"{kind}.")} & (set(remaining) - {"kind"})
        if not wrong:
            break
        for name in wrong:
            remaining.pop(name)
    return problems


@router.get("/calls/{call_id}/propose")
def propose_page(call_id: IdPath, request: Request, user: ResearcherUser, session: SessionDep):
    return _proposal_form(request, session, call_id, {"job_kind": "train"})


@router.post("/calls/{call_id}/propose")
async def propose_submit(call_id: IdPath, request: Request, user: ResearcherUser, session: SessionDep):
    form = {k: str(v) for k, v in (await request.form()).items()}
    return _save_or_submit(request, session, user, form, call_id=call_id)


def _save_or_submit(request: Request, session, user: User, form: dict[str, str], *, call_id: int,
                    draft_id: int | None = None):
    """"Save draft" keeps whatever is there; "Submit" checks every field first and shows each problem at it."""
    plan = plan_from_form(form)
    submitting = form.get("action") == "submit"
    # Everything the form can know is checked either way: a submission stops at any problem, a draft only at
    # what it could not keep, and is saved with the rest marked for later.
    checked = _form_problems(session, user, form, plan, call_id)
    problems = checked if submitting else _draft_problems(form, plan)
    if problems:
        summary = f"{len(problems)} problem{'s' if len(problems) > 1 else ''} to fix: see the marked fields."
        return _proposal_form(request, session, call_id, form, summary, 422, problems, draft_id)
    try:
        if submitting and draft_id is None:
            data = ProposalCreate.model_validate({**_proposal_fields(form), "job_plan": plan, "submit": True})
            proposal = proposals.create_proposal(session, actor=user, call_id=call_id, data=data)
        else:
            proposal = proposals.save_draft(session, actor=user, call_id=call_id, proposal_id=draft_id,
                                            data=_draft(form, plan))
            if submitting:
                proposal = proposals.submit_proposal(session, actor=user, proposal_id=proposal.id)
    except DomainError as exc:
        session.rollback()
        at_field = service_plan_error(exc.message, str(plan.get("kind", "")))
        if at_field:
            return _proposal_form(request, session, call_id, form, "1 problem to fix: see the marked fields.",
                                  exc.status_code, at_field, draft_id)
        return _proposal_form(request, session, call_id, form, exc.message, exc.status_code, None, draft_id)
    session.commit()
    if proposal.state == "draft" and checked:
        count = len(checked)
        flash(request, f"Draft saved. {count} thing{'s' if count > 1 else ''} to fix before it can be submitted: "
                       "see the marked fields.")
        return _redirect(f"/proposals/{proposal.id}/edit")
    flash(request, "Proposal submitted." if proposal.state == "submitted"
          else "Draft saved. It is complete: submit it when you are ready.")
    return _redirect(f"/proposals/{proposal.id}")


def _draft(form: dict[str, str], plan: dict[str, Any]) -> ProposalDraft:
    hours = form.get("requested_gpu_hours", "").strip()
    return ProposalDraft.model_validate({**{k: form.get(k, "") for k in ("title", "abstract", "justification",
                                                                         "subject")},
                                         "requested_gpu_hours": hours or 0, "job_plan": plan,
                                         "keywords": comma_list(form.get("keywords", ""))})


def _draft_problems(form: dict[str, str], plan: dict[str, Any]) -> dict[str, str]:
    """A draft refuses only what it could not keep (a GPU-hours figure that is no number, control characters)."""
    try:
        _draft(form, plan)
    except ValidationError as exc:
        return field_errors(exc, only=PROPOSAL_FIELDS)
    return {}


def _form_values(proposal: Proposal) -> dict[str, str]:
    """A stored proposal as the form's fields."""
    kind = proposal.job_kind or "train"
    values = {"title": proposal.title, "abstract": proposal.abstract, "justification": proposal.justification,
              "requested_gpu_hours": f"{proposal.requested_gpu_hours:g}" if proposal.requested_gpu_hours else "",
              "job_kind": kind, "subject": proposal.subject, "keywords": ", ".join(proposal.keywords)}
    for name, value in proposal.job_plan.items():
        if name != "kind":
            values[f"{kind}.{name}"] = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return values


@router.get("/proposals/{proposal_id}/edit")
def edit_draft_page(proposal_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    proposal = proposals.get_visible(session, actor=user, proposal_id=proposal_id)
    if proposal.state != "draft" or proposal.pi_id != user.id:
        flash(request, "Only the PI edits a proposal, and only while it is a draft.", "error")
        return _redirect(f"/proposals/{proposal_id}")
    values = _form_values(proposal)
    # What is left before it can be submitted, marked at each field (a draft keeps whatever was there).
    left = _form_problems(session, user, values, plan_from_form(values), proposal.call_id)
    return _proposal_form(request, session, proposal.call_id, values, errors=left, draft_id=proposal.id)


@router.post("/proposals/{proposal_id}/edit")
async def edit_draft_submit(proposal_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    proposal = proposals.get_visible(session, actor=user, proposal_id=proposal_id)
    form = {k: str(v) for k, v in (await request.form()).items()}
    return _save_or_submit(request, session, user, form, call_id=proposal.call_id, draft_id=proposal_id)


@router.post("/proposals/{proposal_id}/delete")
def delete_draft(proposal_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    try:
        proposals.delete_draft(session, actor=user, proposal_id=proposal_id)
    except DomainError as exc:
        session.rollback()
        flash(request, exc.message, "error")
        return _redirect(f"/proposals/{proposal_id}")
    session.commit()
    flash(request, "Draft deleted.")
    return _redirect("/proposals")


@router.get("/proposals")
def proposals_page(request: Request, user: CurrentUser, session: SessionDep):
    listed = proposals.list_visible(session, actor=user)
    return render(request, "proposals.html", {
        "proposals": listed, **_runs_of(session, listed)})


@router.get("/proposals/{proposal_id}")
def proposal_page(proposal_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    proposal = proposals.get_visible(session, actor=user, proposal_id=proposal_id)
    listed = runs.list_for_proposal(session, proposal_id)
    states = shown_states(session, listed)
    run_rows = [{"run": r, "artifacts": _artifacts_if_allowed(session, user, r.id), "shown": states[r.id],
                 "charged": run_charged(session, r.id), "stored": storage.run_bytes(session, r.id)} for r in listed]
    call = calls.get_call(session, proposal.call_id)
    is_pi = proposal.pi_id == user.id
    shown = request.session.pop("invite_link", None)
    return render(request, "proposal.html", {
        "p": proposals.to_public(session, proposal), "call": call,
        "call_left": calls.left_to_award(session, call),
        "donor": {"claimed": proposal.donor_claim, "unspent_h": donors.unspent_credit_s(session, user.id) / 3600}
        if is_pi and call.donor_share else None,
        "runs": run_rows, "is_pi": is_pi, "is_member": access.is_member(session, user, proposal_id),
        "invites": team.invites(session, actor=user, proposal_id=proposal_id) if is_pi else [],
        "invite_link": shown if shown and shown.get("proposal") == proposal_id else None,
        "feedback": feedback.feedback(session, actor=user, proposal_id=proposal_id),
        "decidable": user.has("admin") and (proposal.state == "under_review" or (
            proposal.state == "submitted" and call.kind != "regular")),
        "events": proposals.events(session, proposal_id),
        "outcomes": [outcomes.to_public(o) for o in outcomes.listed(session, proposal_id)],
        "storage": storage.of_proposal(session, proposal), "size_words": storage.size_words,
    })


def _artifacts_if_allowed(session, user: User | None, run_id: int) -> list:
    return archive.list_artifacts(session, run_id) if archive.can_download(session, user, run_id) else []


@router.post("/proposals/{proposal_id}/submit")
def proposal_submit(proposal_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    return _act(request, session, f"/proposals/{proposal_id}", "Proposal submitted.",
                lambda: proposals.submit_proposal(session, actor=user, proposal_id=proposal_id))


# ---- runs --------------------------------------------------------------------------------------------------


@router.get("/runs")
def runs_page(request: Request, user: CurrentUser, session: SessionDep):
    """Your runs (every run, for admins): what is queued or running first, then what ended."""
    rows = [{"run": run, "detail": runs.describe(session, run), "proposal": session.get(Proposal, run.proposal_id)}
            for run in runs.list_visible(session, actor=user)]
    active = [r for r in rows if r["run"].state in ("queued", "running")]
    ended = [r for r in rows if r["run"].state not in ("queued", "running")]
    return render(request, "runs.html", {"active": active, "ended": ended})


def _log_of(session: SessionDep, attempt) -> dict:  # type: ignore[no-untyped-def,type-arg]
    """The latest attempt's log lines for the run page, and the offset its script follows the log from."""
    if attempt is None:
        return {"log_lines": [], "log_offset": 0}
    lines, end = log_since(session, attempt.id)
    return {"log_lines": lines, "log_offset": end}


def _loss_chart(settings, artifacts: list):  # type: ignore[no-untyped-def]
    """The loss chart of a run's metrics.json among the artifacts one may see; None without one."""
    metrics = next((a for a in artifacts if a.name == "metrics.json"), None)
    return loss_chart_from_metrics(archive.read_object(archive.store_for(settings), metrics.sha256)) \
        if metrics else None


@router.get("/runs/compare")
def compare_page(request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep, a: IdQuery,
                 b: IdQuery):
    """Two runs side by side: their sample grids, loss curves and plans, with the plan's differences marked."""
    sides = []
    for run_id in (a, b):
        run = runs.get_visible(session, actor=user, run_id=run_id)
        artifacts = _artifacts_if_allowed(session, user, run.id)
        sides.append({"run": run, "proposal": session.get(Proposal, run.proposal_id),
                      "chart": _loss_chart(settings, artifacts),
                      "samples": next((x for x in artifacts if x.kind == "samples"), None),
                      "detail": runs.describe(session, run)})
    keys = sorted({*sides[0]["run"].job_plan, *sides[1]["run"].job_plan} - {"kind"})
    plan = [{"key": k, "a": sides[0]["run"].job_plan.get(k), "b": sides[1]["run"].job_plan.get(k)} for k in keys]
    return render(request, "compare.html", {"sides": sides, "plan": plan})


@router.get("/runs/{run_id}")
def run_page(run_id: IdPath, request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep):
    run = runs.get_visible(session, actor=user, run_id=run_id)
    proposal = session.get(Proposal, run.proposal_id)
    artifacts = _artifacts_if_allowed(session, user, run.id)
    return render(request, "run.html", {
        "run": run, "proposal": proposal, "artifacts": artifacts, "loss_chart": _loss_chart(settings, artifacts),
        "live_chart": loss_chart([point[1] for point in run.progress_detail.get("curve", [])]),
        "detail": runs.describe(session, run),
        "exclusive_until": archive.exclusive_until(session, run.id), "now": utcnow(),
        "run_bytes": storage.run_bytes(session, run.id), "storage": storage.of_proposal(session, proposal),
        "size_words": storage.size_words,
        "can_cancel": user.has(Role.admin) or proposal.pi_id == user.id,
        "cpu_only": settings.gpus_per_run == 0,
        "outputs_held": [] if artifacts else archive.list_artifacts(session, run.id),
        **_log_of(session, latest_attempt(session, run.id)),
        "analyses": analyses.of_training_run(session, user, run) if run.job_kind == "train" else [],
        "can_analyse": followup.offered(session, user, run),
        "report": next((a for a in artifacts if a.kind == "report"), None),
        "agreement": marks.agreement_for(session, archive.store_for(settings), user, run),
        **_rounds(session, run),
    })


def _rounds(session: SessionDep, run: Run) -> dict:
    """A run several nodes train together: its rounds (newest first) and the global loss round by round."""
    if not in_rounds(run):
        return {}
    history = rounds_of(session, run.id)
    closed = [r for r in history if r.state == "closed"]
    return {"rounds": list(reversed(history)), "rounds_plan": run.job_plan,
            "rounds_chart": loss_chart([r.loss for r in closed if r.loss is not None]),
            "rounds_bytes": sum(r.bytes_in + r.bytes_out for r in closed)}


@router.get("/families/{group_id}")
def family_page(group_id: IdPath, request: Request, user: CurrentUser, session: SessionDep,
                settings: SettingsDep):
    group = families.get_visible(session, actor=user, group_id=group_id)
    family = families.describe_family(session, group, archive.store_for(settings))
    router = next((m.run for m in family.members if m.role == "router"), None)
    found = analyses.of_training_run(session, user, session.get(Run, router.id)) if router else []
    return render(request, "family.html", {
        "family": family, "proposal": session.get(Proposal, group.proposal_id), "analyses": found,
        "accuracy": bars(family.router_accuracy or [], family.chance)})


@router.post("/runs/{run_id}/cancel")
def run_cancel(run_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    return _act(request, session, f"/runs/{run_id}", "Cancellation requested.",
                lambda: runs.request_cancel(session, actor=user, run_id=run_id))
