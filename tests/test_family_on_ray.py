"""A family of four experts trained by a real two-node Ray pool: the experts run on both nodes, the node of one is
killed while that expert trains and it resumes on the other from its shipped checkpoint; the family succeeds, is
registered as one model version, sampled and analysed on the pool, and the ledger charges each span once. Then two
images of one cluster are withdrawn: the rebuild trains that one expert and the router again, registers the next
version by itself when they finish, and costs a fraction of the family's training (printed)."""

from __future__ import annotations

import io
import json
import os
import secrets
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

import jobs.partition as partition_format
from jobs import clusters
from scheduler.local_ray import start_head
from scheduler.loop import Scheduler
from scheduler.ray_backend import RayBackend
from service.archive.service import list_artifacts, read_object, store_for
from service.attempts.service import attempts_of
from service.datasets import partitions
from service.datasets.service import ensure_bundled, find, images_of
from service.datasets.withdrawals import withdraw
from service.ledger.service import entries_for_run, run_charged
from service.modelcards.families import rebuild_family, register_family
from service.models import AttemptState, ModelVersion, Role, Run, RunGroup, RunState, User, WithdrawalReason
from tests.factories import TINY_TRAIN, award, create_call, create_proposal, create_user
from tests.live import live_server
from tests.pools import FAST_HEALTH, join_owners_machine, tick_until

pytestmark = pytest.mark.ray
# Clear of the other tests' Ray ports: head 13700+, its workers 13800-13899, dashboard 14700; worker 14000+.
BASE = int(os.environ.get("OBSERVATORY_TEST_RAY_PORT", "6700")) + 7000
PLAN = {**TINY_TRAIN, "dataset": "skimage-samples", "experts": 4, "steps": 500, "checkpoint_every": 50,
        "batch_size": 16, "sample_inference_steps": 4}


def _ended(session: Session, run: Run) -> bool:
    return run.state in (RunState.succeeded, RunState.failed, RunState.cancelled)


def _partitioned(session: Session, settings) -> str:  # type: ignore[no-untyped-def]
    """The bundled set cut into four clusters, as `observatory dataset partition` cuts it."""
    store = store_for(settings)
    version = find(session, "skimage-samples")
    images = images_of(store, version)
    made = clusters.make(version.digest, [record for record, _ in images],
                         clusters.descriptors(data for _, data in images), 4, 0)
    found = partitions.register(session, store, version, partition_format.encode(made))
    session.commit()
    return found.digest


def test_a_family_trains_across_the_pool_survives_a_node_and_is_sampled_whole(tmp_path: Path, lite_engine: Engine,
                                                                               lite_session: Session,
                                                                               lite_settings) -> None:
    with ExitStack() as stack:
        served = lite_settings.model_copy(update={"checkpoint_ship_interval_s": 0.5})
        url = stack.enter_context(live_server(served, lite_engine))
        settings = served.model_copy(update={"job_python": sys.executable, "job_api_url": url})
        token = secrets.token_hex(16)
        head = start_head(base_port=BASE, dashboard_port=BASE + 1000, token=token, num_cpus=1,
                          temp_dir=Path(tempfile.mkdtemp(prefix="obs-ray-family-", dir="/tmp")) / "t",
                          loopback_only=False, node_dir=tmp_path / "head-node", env=FAST_HEALTH)
        stack.callback(head.stop)
        admin, pi, owner = create_user(lite_session, Role.admin), create_user(lite_session), create_user(lite_session)
        backend = RayBackend(head.dashboard_url, token)
        _, worker, worker_id = join_owners_machine(stack, lite_session, head, backend, owner=owner, admin=admin,
                                                   base_port=BASE + 300, folder=tmp_path)
        ensure_bundled(lite_session, store_for(settings))
        partition = _partitioned(lite_session, settings)
        call = create_call(lite_session, admin)
        _, first = award(lite_session, admin, create_proposal(lite_session, pi, call, job_plan=PLAN))
        group_id = lite_session.get(Run, first.id).group_id
        with Session(lite_engine) as session:
            runs = list(session.exec(select(Run).where(Run.group_id == group_id).order_by(Run.id)))
        assert [r.job_kind for r in runs] == ["train"] * 4 + ["router"]
        assert all(r.job_plan["partition"] == partition for r in runs)
        scheduler = Scheduler(lite_engine, settings, backend)

        # An expert on the worker ships a checkpoint; then the worker is killed while it trains.
        def expert_on_worker(session: Session, run: Run) -> bool:
            attempts = attempts_of(session, run.id)
            return bool(attempts) and attempts[-1].node_id == worker_id and run.resume_step >= 100 \
                and run.state == RunState.running

        victim = None
        deadline = time.monotonic() + 240
        while victim is None and time.monotonic() < deadline:
            scheduler.tick()
            with Session(lite_engine) as session:
                victim = next((r.id for r in runs[:4] if expert_on_worker(session, session.get(Run, r.id))), None)
            time.sleep(0.3)
        if victim is None:
            with Session(lite_engine) as session:
                states = [(r.id, (run := session.get(Run, r.id)).state, run.message, run.resume_step,
                           [(a.node_id == worker_id, a.state) for a in attempts_of(session, r.id)]) for r in runs]
            raise AssertionError(f"no expert trained on the worker: {states}")
        worker.kill()
        for run in runs:
            done = tick_until(scheduler, lite_engine, run.id, _ended, timeout=400)
            assert done.state == RunState.succeeded, (run.id, done.message)

        store = store_for(settings)
        with Session(lite_engine) as session:
            lost, resumed, *more = attempts_of(session, victim)
            nodes = {a.node_id for r in runs for a in attempts_of(session, r.id)}
            entries = [e for r in runs for e in entries_for_run(session, r.id)]
            attributions = [json.loads(read_object(store, a.sha256)) for r in runs[:4]
                            for a in list_artifacts(session, r.id) if a.name == "attribution.json"]
        assert more == [] and lost.state == AttemptState.lost and lost.node_id == worker_id
        assert resumed.resume_step == lost.checkpoint_step >= 100 and resumed.node_id != worker_id
        assert worker_id in nodes and len(nodes) == 2  # the experts ran on both nodes
        assert len({e.key for e in entries}) == len(entries)  # each span charged once
        seen = [image["image_sha256"] for attribution in attributions for image in attribution["images"]]
        assert len(seen) == len(set(seen)) == find(lite_session, "skimage-samples").images  # each image, one expert

        # Registered as one version, and sampled whole on the pool.
        with Session(lite_engine) as session:
            version = register_family(session, store, actor=session.get(User, admin.id),
                                      group_id=group_id, name="fam")
            session.commit()
            ref = f"{version.name}@{version.version}"
            assert session.get(RunGroup, group_id).k == len(version.family["experts"]) == 4
            version_id, version_images, version_attribution = version.id, version.images, version.attribution_sha256
        def run_on_pool(plan: dict) -> dict[str, bytes]:
            """Award the plan, run it on the pool, and its outputs by name."""
            _, run = award(lite_session, admin, create_proposal(lite_session, pi, call, job_plan=plan))
            done = tick_until(scheduler, lite_engine, run.id, _ended, timeout=300)
            assert done.state == RunState.succeeded, done.message
            with Session(lite_engine) as session:
                return {a.name: read_object(store, a.sha256) for a in list_artifacts(session, run.id)}

        sampled = run_on_pool({"kind": "sample", "model": ref, "seeds": [1, 2, 3, 4], "inference_steps": 4,
                               "sampler": "ddim"})
        metrics = json.loads(sampled["metrics.json"])
        assert metrics["family"] == {"experts": 4, "routing": "mixture", "top_k": None}
        with Image.open(io.BytesIO(sampled["samples.png"])) as grid:
            assert grid.size[0] > 0

        # ...and analysed on the pool: the copy search takes the family whole, against the whole set.
        searched = run_on_pool({"kind": "replication", "model": ref, "samples": 4, "inference_steps": 4})
        results = json.loads(searched["results.json"])
        assert results["subject"] == ref and results["dataset"]["images"] == version_images
        assert len(results["config"]["expert_checkpoints"]) == 4 and "report.html" in searched

        # Two images of one cluster are withdrawn; the rebuild retrains that expert and the router alone.
        with Session(lite_engine) as session:
            cluster_of = {image["image_sha256"]: image["cluster"] for image in json.loads(read_object(
                store, version_attribution))["images"]}
            gone = [sha for sha, cluster in sorted(cluster_of.items()) if cluster == 2][:2]
            for sha in gone:
                withdraw(session, store, actor=session.get(User, admin.id), reason=WithdrawalReason.author_request,
                         sha256=sha)
            rebuild = rebuild_family(session, store, actor=session.get(User, admin.id), version_id=version_id)
            session.commit()
            rebuilt = list(session.exec(select(Run).where(Run.group_id == rebuild.id).order_by(Run.id)))
        assert [(r.job_kind, r.job_plan.get("cluster")) for r in rebuilt] == [("train", 2), ("router", None)]
        for run in rebuilt:
            done = tick_until(scheduler, lite_engine, run.id, _ended, timeout=300)
            assert done.state == RunState.succeeded, done.message
        with Session(lite_engine) as session:
            latest = session.exec(select(ModelVersion).where(ModelVersion.name == "fam")
                                  .order_by(ModelVersion.version.desc())).first()
            old = session.get(ModelVersion, version_id)
            family_cost = sum(run_charged(session, r.id) for r in runs)
            rebuild_cost = sum(run_charged(session, r.id) for r in rebuilt)
            expert_cost = sum(run_charged(session, r.id) for r in runs[:4]) / 4
        assert (latest.version, latest.images) == (2, version_images - 2)  # registered by the scheduler itself
        assert old.withdrawn_at is not None and old.replaced_by_id == latest.id
        attribution = read_object(store, latest.attribution_sha256).decode()
        assert not any(sha in attribution for sha in gone)
        ratio = rebuild_cost / max(family_cost, 1)
        print(f"withdrawal: rebuild charged {rebuild_cost} GPU-seconds of the family's {family_cost} "
              f"({ratio:.2f}; one expert of four is {expert_cost / max(family_cost, 1):.2f})")
        assert rebuild_cost < family_cost / 2
