"""Analyses of the shared model (replication search, …): which analysis runs look at the model versions a training
run became, so that the run's page links their reports."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from service.archive.service import can_download, find_artifact
from service.models import ModelVersion, Run, User

ANALYSIS_KINDS = ("replication", "extraction", "quality", "ablation")  # the kinds that analyse model versions
MODEL_FIELDS = ("model", "with_model", "without_model")  # where their plans name them


@dataclass(frozen=True)
class Analysis:
    run: Run
    model: str  # name@version analysed
    report_url: str | None  # None while there is no report, or the viewer may not read it yet


def of_training_run(session: Session, actor: User | None, run: Run) -> list[Analysis]:
    """The analysis runs of `run` itself and of the model versions registered from it, newest first."""
    refs = [f"{v.name}@{v.version}" for v in session.exec(select(ModelVersion).where(ModelVersion.run_id == run.id))]
    found = session.exec(select(Run).where(Run.job_kind.in_(ANALYSIS_KINDS)).order_by(Run.id.desc())).all()
    out = []
    for analysis in found:
        model = next((str(analysis.job_plan[f]) for f in MODEL_FIELDS if analysis.job_plan.get(f) in refs), None)
        if model is None and analysis.job_plan.get("run") == run.id:
            model = f"run {run.id}"
        if model is None:
            continue
        readable = can_download(session, actor, analysis.id)
        report = find_artifact(session, analysis.id, "report.html") if readable else None
        out.append(Analysis(analysis, model, f"/api/runs/{analysis.id}/artifacts/report.html" if report else None))
    return out
