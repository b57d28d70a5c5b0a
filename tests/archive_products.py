"""A large archive catalogue for the search's tests and bench: real calls and proposals (a few), and products over
them in bulk, with the spread of kinds, licenses, datasets and dates an archive of some years would have."""

from __future__ import annotations

import random
from datetime import timedelta

from sqlalchemy import insert
from sqlmodel import Session, select

from service.models import ArchiveProduct, Call, Role
from service.timeutil import utcnow
from tests.factories import create_call, create_proposal, create_user

JOB_KINDS = ("train", "train", "train", "sample", "sample", "replication", "extraction", "quality", "ablation")
LICENSES = ("cc-by-sa", "cc-by-sa", "cc-by", "cc0", "public-domain")
WORDS = ("memorisation", "copying", "landscapes", "portraits", "botany", "maps", "fine-tuning", "ablation",
         "extraction", "duplicates", "birds", "architecture", "manuscripts", "textures", "insects")


def fill(session: Session, products: int, *, calls: int = 8, proposals: int = 24, seed: int = 0,
         batch: int = 5_000) -> None:
    """`products` rows in `archive_products` over `calls` calls and `proposals` accepted-looking proposals."""
    rng = random.Random(seed)
    admin = create_user(session, Role.admin)
    pi = create_user(session)
    made_calls = [create_call(session, admin, title=f"Cycle {i // 2 + 1} call {i}") for i in range(calls)]
    made = [create_proposal(session, pi, rng.choice(made_calls), title=" ".join(rng.sample(WORDS, 3)).capitalize())
            for _ in range(proposals)]
    cycles = dict(session.exec(select(Call.id, Call.cycle_id)).all())
    start = utcnow() - timedelta(days=3 * 365)
    rows = []
    for i in range(products):
        kind = rng.choices(("run", "model", "dataset"), (90, 7, 3))[0]
        proposal = rng.choice(made)
        dataset = f"commons-{rng.choice(WORDS)}@{rng.randint(1, 4)}"
        model = f"commons-model@{rng.randint(1, 12)}" if kind != "dataset" and rng.random() < 0.6 else ""
        made_at = start + timedelta(seconds=rng.randint(0, 3 * 365 * 86400))
        job_kind = rng.choice(JOB_KINDS) if kind == "run" else ("train" if kind == "model" else "")
        ref = {"run": f"obs:run/{i + 1}", "model": f"obs:model/m{i}@1", "dataset": f"obs:dataset/d{i}@1"}[kind]
        public_from = made_at + timedelta(days=365) if kind == "run" else made_at
        rows.append({
            "ref": ref, "kind": kind, "job_kind": job_kind, "title": proposal.title,
            "proposal_id": proposal.id if kind != "dataset" else None,
            "call_id": proposal.call_id if kind != "dataset" else None,
            "cycle_id": cycles[proposal.call_id] if kind != "dataset" else None, "model": model,
            "dataset": dataset, "license": rng.choice(LICENSES), "url": f"/archive/{ref}", "thumbnail": False,
            "text": " ".join((proposal.title, ref, job_kind, model, dataset)).lower(),
            "public_from": public_from, "made_at": made_at})
        if len(rows) == batch:
            session.execute(insert(ArchiveProduct), rows)
            rows = []
    if rows:
        session.execute(insert(ArchiveProduct), rows)
    session.commit()
