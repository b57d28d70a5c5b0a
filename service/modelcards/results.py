"""What the analyses found about a model version, for its card: the replication rate with its threshold, the
extraction attack's groups, FID and KID on the features they used, and leave-out ablations, each with its report.

An analysis shows on the card as soon as its results are readable by whoever looks: everyone once the analysing
award's exclusive period is over, its team before that. The card says how many are still exclusive.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from sqlmodel import Session, select

from service.analyses.service import ANALYSIS_KINDS, MODEL_FIELDS
from service.archive.service import can_download, find_artifact, read_object
from service.archive.store import ArchiveStore
from service.models import ModelVersion, Run, RunState, User


@dataclass(frozen=True)
class Finding:
    """One analysis of the version, as the card shows it."""

    run_id: int
    kind: str
    figures: list[tuple[str, str]]  # (what, the figure in words), in the order the card lists them
    metrics: list[dict[str, Any]] = field(default_factory=list)  # model-index metrics: type, name, value
    report_url: str | None = None


@dataclass(frozen=True)
class Findings:
    shown: list[Finding]
    exclusive: int  # succeeded analyses of the version whose results are still exclusive to their teams


def _pct(value: Any) -> str:
    return f"{float(value):.2%}"


def summarise(kind: str, results: dict[str, Any]) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """A results file's headline figures in words, and as model-index metrics."""
    s = results.get("summary") or {}
    if kind == "replication":
        t = results.get("thresholds") or {}
        samples = int(results.get("config", {}).get("samples") or 0)
        rate = float(s.get("copy_fraction", 0.0))
        threshold = f"ratio under {float(t.get('ratio', 0)):.4g}, similarity over {float(t.get('similarity', 0)):.4g}"
        return ([("Replication rate", f"{_pct(rate)} of {samples or 'the'} samples are copies "
                                      f"({int(s.get('copies', 0))}); {int(s.get('training_images_copied', 0))} "
                                      "training images copied"),
                 ("Threshold", f"{threshold} (calibrated at the {t.get('percentile', '?')}th percentile)")],
                [{"type": "replication_rate", "name": "Replication rate (share of samples that copy a training "
                                                      "image)", "value": round(rate, 6)}])
    if kind == "extraction":
        return ([("Extraction", f"{int(s.get('groups', 0))} groups of near-identical generations among "
                                f"{int(s.get('samples', 0))}; {int(s.get('extracted_images', 0))} training images "
                                "extracted")],
                [{"type": "extracted_images", "name": "Training images extracted", "value":
                  int(s.get("extracted_images", 0))}])
    if kind == "quality":
        m = results.get("model_vs_training") or {}
        features = (results.get("features") or {}).get("name", "?")
        return ([("FID", f"{float(m.get('fid', 0)):.4g} on {features}"),
                 ("KID", f"{float(m.get('kid', 0)):.4g} ± {float(m.get('kid_std', 0)):.2g} on {features}")],
                [{"type": "fid", "name": f"FID ({features})", "value": round(float(m.get("fid", 0)), 6)},
                 {"type": "kid", "name": f"KID ({features})", "value": round(float(m.get("kid", 0)), 6)}])
    if kind == "ablation":
        effect = (results.get("scores") or {}).get("effect") or {}
        figures = [("Leave-out ablation", str(results.get("sentence", "")))]
        if effect:
            figures.append(("Effect", f"{float(effect.get('value', 0)):.4g} (95% interval "
                                      f"{float(effect.get('low', 0)):.4g} to {float(effect.get('high', 0)):.4g})"))
        return figures, []
    return [], []


def analyses_of(session: Session, version: ModelVersion) -> list[Run]:
    """The succeeded analysis runs whose plans name the version, newest first."""
    ref = f"{version.name}@{version.version}"
    runs = session.exec(select(Run).where(Run.job_kind.in_(ANALYSIS_KINDS), Run.state == RunState.succeeded)
                        .order_by(Run.id.desc())).all()
    return [r for r in runs if any(r.job_plan.get(f) == ref for f in MODEL_FIELDS)]


def findings(session: Session, store: ArchiveStore, version: ModelVersion, actor: User | None) -> Findings:
    shown, exclusive = [], 0
    for run in analyses_of(session, version):
        results = find_artifact(session, run.id, "results.json")
        if results is None:
            continue
        if not can_download(session, actor, run.id):
            exclusive += 1
            continue
        try:
            data = json.loads(read_object(store, results.sha256))
        except (OSError, ValueError):
            continue
        figures, metrics = summarise(run.job_kind, data)
        report = find_artifact(session, run.id, "report.html")
        shown.append(Finding(run.id, run.job_kind, figures, metrics,
                             f"/api/runs/{run.id}/artifacts/report.html" if report else None))
    return Findings(shown, exclusive)
