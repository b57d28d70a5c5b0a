"""Capacity beside replication, across every replication search one may read: how the share of samples that copy
a training image changes with the bits of model per training image, over the model versions and dataset sizes
that exist. The figures come from each run's own results.json."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from service.analyses.marks import results_of
from service.archive.service import can_download
from service.archive.store import ArchiveStore
from service.errors import DomainError
from service.models import Run, RunState, User

LIMIT = 200  # the newest searches shown


@dataclass(frozen=True)
class ReplicationPoint:
    run_id: int
    subject: str  # the model searched: name@version, or run N
    dataset: str
    training_images: int
    parameters: int
    bits_per_image: float
    samples: int
    copy_fraction: float
    training_images_copied: int
    similarity_p95: float
    report_url: str


def points(session: Session, store: ArchiveStore, actor: User | None) -> list[ReplicationPoint]:
    """The succeeded replication searches whose outputs `actor` may read (public ones for anyone), newest first."""
    found = session.exec(select(Run).where(Run.job_kind == "replication", Run.state == RunState.succeeded)
                         .order_by(Run.id.desc()).limit(LIMIT)).all()
    out = []
    for run in found:
        if not can_download(session, actor, run.id):
            continue
        try:
            results = results_of(session, store, run.id)
            capacity, summary, dataset = results["capacity"], results["summary"], results["dataset"]
            out.append(ReplicationPoint(
                run_id=run.id, subject=str(results.get("subject") or results["config"].get("model")),
                dataset=str(dataset.get("ref") or dataset.get("digest")),
                training_images=int(capacity["training_images"]), parameters=int(capacity["parameters"]),
                bits_per_image=float(capacity["model_bits_per_training_image"]), samples=len(results["samples"]),
                copy_fraction=float(summary["copy_fraction"]),
                training_images_copied=int(summary["training_images_copied"]),
                similarity_p95=float(summary["similarity_p95"]),
                report_url=f"/api/runs/{run.id}/artifacts/report.html"))
        except (DomainError, KeyError, TypeError, ValueError):
            continue  # results of an older or damaged form: left out rather than guessed
    return out
