"""The portal's page of an analysis run's pairs: each shown pair with the automatic verdict, and buttons for the
team (and admins) to mark it a copy or not; at the top, how the automatic verdict agrees with their marks. And the
training run page's form that asks for an analysis of the run on its own award."""

from __future__ import annotations

from fastapi import APIRouter, Request

from service.analyses import capacity, followup, marks
from service.analyses.api import Seed
from service.archive.service import store_for
from service.deps import CurrentUser, OptionalUser, SessionDep, SettingsDep
from service.errors import DomainError, Invalid
from service.models import Verdict
from service.types import IdPath
from web.charts import scatter_log_x
from web.render import flash, form_fields, redirect, render

router = APIRouter(include_in_schema=False)


@router.get("/analyses")
def analyses_page(request: Request, user: OptionalUser, session: SessionDep, settings: SettingsDep):
    points = capacity.points(session, store_for(settings), user)
    chart = scatter_log_x([(p.bits_per_image, p.copy_fraction, f"{p.subject}: {p.copy_fraction:.1%} copies at "
                            f"{p.bits_per_image:,.0f} bits per image") for p in points])
    return render(request, "analyses.html", {"points": points, "chart": chart})


@router.get("/runs/{run_id}/pairs")
def pairs_page(run_id: IdPath, request: Request, user: CurrentUser, session: SessionDep, settings: SettingsDep):
    shown, agreement = marks.pairs(session, store_for(settings), user, run_id)
    return render(request, "pairs.html", {"run_id": run_id, "pairs": shown, "agreement": agreement,
                                          "suggestion": marks.suggestion_from(shown)})


@router.post("/runs/{run_id}/pairs/{seed}")
async def mark_pair(run_id: IdPath, seed: Seed, request: Request, user: CurrentUser, session: SessionDep,
                    settings: SettingsDep):
    form = await form_fields(request)
    verdict = form.get("verdict", "")
    try:
        if verdict not in {v.value for v in Verdict}:
            raise Invalid("verdict: choose copy or not a copy")
        marks.mark(session, store_for(settings), user, run_id, seed, Verdict(verdict))
    except DomainError as exc:
        session.rollback()
        flash(request, exc.message, "error")
        return redirect(f"/runs/{run_id}/pairs")
    session.commit()
    flash(request, f"Marked sample {seed}: {'a copy' if verdict == 'copy' else 'not a copy'}.")
    return redirect(f"/runs/{run_id}/pairs#pair-{seed}")


@router.post("/runs/{run_id}/analyses")
async def analyse_run(run_id: IdPath, request: Request, user: CurrentUser, session: SessionDep):
    form = await form_fields(request)
    try:
        plan = {"kind": form.get("kind", ""), "run": run_id}
        count = parse_count(form.get("samples", ""))
        plan["samples_per_class" if plan["kind"] == "extraction" else "samples"] = count
        analysis = followup.request(session, user, run_id, plan)
    except DomainError as exc:
        session.rollback()
        flash(request, exc.message, "error")
        return redirect(f"/runs/{run_id}#analyse")
    session.commit()
    article = "an" if analysis.job_kind[0] in "aeiou" else "a"
    flash(request, f"Run {analysis.id} queued: {article} {analysis.job_kind} analysis of run {run_id}.")
    return redirect(f"/runs/{analysis.id}")


def parse_count(text: str) -> int:
    if not text.strip().isdigit():
        raise Invalid("samples: a whole number of samples")
    return int(text.strip())
