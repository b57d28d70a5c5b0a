"""Analyses of the shared model (replication search, …): which analysis runs look at the model versions a training
run became, so that the run's page links their reports."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from service.archive.service import can_download, find_artifact
from service.models import ModelVersion, Run, User

ANALYSIS_KINDS = ("replication",)  # the kinds that analyse a model version (`model` in their plans)


@dataclass(frozen=True)
class Analysis:
    run: Run
    model: str  # name@version analysed
    report_url: str | None  # None while there is no report, or the viewer may not read it yet


def of_training_run(session: Session, actor: User | None, run: Run) -> list[Analysis]:
    """The analysis runs of the model versions registered from `run`, newest first."""
    refs = [f"{v.name}@{v.version}" for v in session.exec(select(ModelVersion).where(ModelVersion.run_id == run.id))]
    if not refs:
        return []
    found = session.exec(select(Run).where(Run.job_kind.in_(ANALYSIS_KINDS)).order_by(Run.id.desc())).all()
    out = []
    for analysis in found:
        model = str(analysis.job_plan.get("model", ""))
        if model not in refs:
            continue
        readable = can_download(session, actor, analysis.id)
        report = find_artifact(session, analysis.id, "report.html") if readable else None
        out.append(Analysis(analysis, model, f"/api/runs/{analysis.id}/artifacts/report.html" if report else None))
    return out
