"""The train job run bare and through the observatory's real Ray path, in one run on one machine.

    python bench/train_on_ray.py [--steps 300]

Runs the same plan four ways and prints the job's own seconds per step (from its metrics.json) and the wall time:
the job as a plain process with the machine's default torch threads, the same with one thread, and through the
whole path (a private Ray head, the API over HTTP, the scheduler ticking, the runner on the node shipping
checkpoints) with the run given 1 CPU and then every CPU. Ray starts a job with OMP_NUM_THREADS equal to the CPUs
it was given, so the CPUs a run asks for, not Ray's own overhead, set most of the gap.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402
from sqlmodel import Session  # noqa: E402

from scheduler.local_ray import start_head  # noqa: E402
from scheduler.loop import Scheduler  # noqa: E402
from scheduler.ray_backend import RayBackend  # noqa: E402
from service.archive.service import list_artifacts, read_object, store_for  # noqa: E402
from service.config import Settings  # noqa: E402
from service.datasets.service import ensure_bundled  # noqa: E402
from service.db import make_engine, writer  # noqa: E402
from service.migrations import upgrade  # noqa: E402
from service.models import Role, Run  # noqa: E402
from tests.factories import award, create_call, create_proposal, create_user  # noqa: E402
from web.app import create_app  # noqa: E402


def plan(steps: int) -> dict:
    return {"kind": "train", "steps": steps, "checkpoint_every": max(1, steps // 5), "sample_count": 4,
            "sample_inference_steps": 4}


def bare(steps: int, threads: int | None) -> tuple[float, float]:
    env = {**os.environ}
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "jobs.train", "--config", json.dumps(plan(steps)), "--output", folder],
                       check=True, env=env, capture_output=True, cwd=ROOT)
        wall = time.perf_counter() - started
        return json.loads((Path(folder) / "metrics.json").read_text())["seconds_per_step"], wall


def through_ray(steps: int, cpus: int) -> tuple[float, float]:
    folder = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    url = f"sqlite:///{folder / 'observatory.db'}"
    upgrade(url)
    engine = make_engine(url)
    port = 18000 + secrets.randbelow(1000)
    settings = Settings(var_dir=folder / "var", database_url=url, secret_key="bench", cpus_per_run=cpus,
                        job_python=sys.executable, job_api_url=f"http://127.0.0.1:{port}",
                        checkpoint_ship_interval_s=60, scheduler_interval_s=1)
    with Session(writer(engine), expire_on_commit=False) as session:
        ensure_bundled(session, store_for(settings))  # the bundled set the plan trains on, as when serving
        session.commit()
        admin = create_user(session, Role.admin, email="a@bench.example")
        pi = create_user(session, email="p@bench.example")
        _, run = award(session, admin, create_proposal(session, pi, create_call(session, admin, capacity=10),
                                                        job_plan=plan(steps)))
    server = uvicorn.Server(uvicorn.Config(create_app(settings, engine), host="127.0.0.1", port=port,
                                           log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    token = secrets.token_hex(16)
    base = 9300 + secrets.randbelow(200) * 2
    head = start_head(base_port=base, dashboard_port=base + 1000 + secrets.randbelow(300), token=token,
                      num_cpus=os.cpu_count(), temp_dir=Path(tempfile.mkdtemp(prefix="bench-", dir="/tmp")) / "t")
    try:
        scheduler = Scheduler(engine, settings, RayBackend(head.dashboard_url, token))
        started = time.perf_counter()
        while True:
            scheduler.tick()
            with Session(engine) as session:
                state = session.get(Run, run.id).state
            if state in ("succeeded", "failed", "cancelled"):
                break
            time.sleep(0.5)
        wall = time.perf_counter() - started
        with Session(engine) as session:
            if state != "succeeded":
                raise RuntimeError(f"the run {state}: {session.get(Run, run.id).message}")
            metrics = next(a for a in list_artifacts(session, run.id) if a.name == "metrics.json")
            return json.loads(read_object(store_for(settings), metrics.sha256))["seconds_per_step"], wall
    finally:
        head.stop()
        server.should_exit = True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--ray-cpus", default="1,all", help="the CPUs given to the run through Ray, each a row")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"{cores} CPU cores; the default plan (16 px, batch 64, UNet [32, 64, 64]) for {args.steps} steps")
    rows = [("bare job, default torch threads", *bare(args.steps, None)),
            ("bare job, 1 thread", *bare(args.steps, 1)),
            *((f"through Ray, run given {cpus} CPU(s)", *through_ray(args.steps, cpus))
              for cpus in (cores if part == "all" else int(part) for part in args.ray_cpus.split(",")))]
    baseline = rows[0][1]
    for name, per_step, wall in rows:
        print(f"{name:38s} {1 / per_step:6.2f} steps/s  ({per_step / baseline:4.2f}x the bare step time), "
              f"wall {wall:6.1f} s")


if __name__ == "__main__":
    main()
