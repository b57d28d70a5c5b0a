"""Volunteers at scale: how many units a portal serves to many polling agents, and what validation costs.

1. The portal (uvicorn on loopback, SQLite, as `observatory serve` runs it) with a scheduler ticking beside it, and
   `--agents` simulated agents (asyncio, one connection each, so the load is bounded): each says hello, then asks
   for work (`/api/agent/work`, a long poll of up to `--wait` s), and for each unit it gets, starts its job and
   reports its end at once (no job runs: this measures the portal, not the GPUs). The baseline, in the same run, is
   the same agents asking while nothing is queued. Printed: asks per second both ways, and units served per second.
2. Validation's overhead at steady state with trusted hosts, from the observatory's own policy: the copies made
   of deterministic units (units.copies_needed, whose spot checks thin out as a volunteer's record grows) and the
   segments of trainings re-run by others (segments.choose, on states shipped every `--ship-every` s), each re-run
   paying `--startup` s of start-up too, over a mix of GPU time (`--training-share`). Printed as a share of the
   useful GPU time (the results kept); the goal is under 10%.

Usage: python bench/volunteer.py [--agents 200] [--seconds 20] [--units 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scheduler.dispatch import MAX_PER_TICK  # noqa: E402
from service.volunteers.segments import CHECKED  # noqa: E402
from tests.live import free_port, serve_portal, wait_until_up  # noqa: E402

TICK_S = 0.5  # the scheduler's tick here (`OBSERVATORY_SCHEDULER_INTERVAL_S` in a deployment)
UNIT_PLAN = {"kind": "train", "steps": 2, "batch_size": 8, "block_out_channels": [8, 16], "resolution": 8,
             "sample_count": 4, "sample_inference_steps": 2, "num_train_timesteps": 20}


def seed(var_dir: Path, agents: int, units: int) -> list[str]:
    """A migrated database with `units` queued training units and `agents` volunteers' machines; their credentials."""
    from sqlmodel import Session

    from service.archive.service import store_for
    from service.config import Settings
    from service.datasets.service import ensure_bundled
    from service.db import make_engine, writer
    from service.migrations import upgrade
    from service.models import Role
    from service.pool import machines
    from tests.factories import award, create_call, create_proposal, create_user

    url = f"sqlite:///{var_dir / 'observatory.db'}"
    upgrade(url)
    engine = make_engine(url)
    store = store_for(Settings(var_dir=var_dir, database_url=url, secret_key="bench"))
    credentials = []
    with Session(writer(engine), expire_on_commit=False) as session:
        ensure_bundled(session, store)
        session.commit()
        admin = create_user(session, Role.admin)
        call = create_call(session, admin, capacity=units * 2.0)
        pi = create_user(session)
        for _ in range(units):
            award(session, admin, create_proposal(session, pi, call, job_plan=dict(UNIT_PLAN)))
        for index in range(agents):
            owner = create_user(session, Role.owner)
            machine = machines.register(session, owner, name=f"agent {index}", show_owner=False, volunteer=True)
            credentials.append(machines.issue_token(session, owner, machine.id)[1])
            session.commit()
    engine.dispose()
    return credentials


def scheduler(var_dir: Path, stop: threading.Event) -> threading.Thread:
    """The scheduler's volunteer work, ticking every half second: place units on agents, settle their ends."""
    from sqlalchemy.exc import OperationalError

    from scheduler.dispatch import Dispatcher
    from scheduler.volunteers import settle_volunteers
    from service.archive.service import store_for
    from service.config import Settings
    from service.db import make_engine, writer

    url = f"sqlite:///{var_dir / 'observatory.db'}"
    settings = Settings(var_dir=var_dir, database_url=url, secret_key="bench")
    engine = writer(make_engine(url))

    class NoRay:
        def nodes(self) -> list:
            return []

    dispatcher = Dispatcher(engine, settings, NoRay(), store_for(settings))

    def tick() -> None:
        while not stop.is_set():
            try:
                dispatcher.dispatch([])
                settle_volunteers(engine, settings, store_for(settings))
            except OperationalError:  # SQLite busy with the portal's writes: the next tick goes on
                pass
            stop.wait(TICK_S)

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    return thread


async def agents_ask(base: str, credentials: list[str], seconds: float, wait_s: int, *,
                     take_units: bool) -> dict[str, float]:
    """Every agent asks for work in a loop for `seconds`; with `take_units`, a unit it gets is started and ended."""
    from jobs.version import installed_version

    asks: list[float] = []
    problems: list[str] = []
    served = 0
    errors = 0
    end = time.monotonic() + seconds

    async def agent(credential: str) -> None:
        nonlocal errors
        headers = {"Authorization": f"Bearer {credential}"}
        async with httpx.AsyncClient(base_url=base, timeout=wait_s + 30,
                                     limits=httpx.Limits(max_connections=1)) as client:
            try:
                hello = await client.post("/api/agent/hello", headers=headers,
                                          json={"release": installed_version(), "cpus": 2})
            except httpx.HTTPError as exc:
                hello = None
                problems.append(f"hello: {exc.__class__.__name__}")
            if hello is None or hello.status_code != 200:
                errors += 1
                return
            while time.monotonic() < end:
                try:
                    await one_ask(client, headers, credential)
                except httpx.HTTPError as exc:  # a timeout under load counts against the portal, not the bench
                    errors += 1
                    problems.append(f"{exc.__class__.__name__}")

    async def one_ask(client: httpx.AsyncClient, headers: dict[str, str], credential: str) -> None:
        nonlocal served, errors
        began = time.perf_counter()
        response = await client.post("/api/agent/work", headers=headers,
                                     params={"wait_s": wait_s if take_units else 0})
        if response.status_code != 200:
            errors += 1
            problems.append(f"work: {response.status_code} {response.text[:200]}")
            await asyncio.sleep(0.5)
            return
        asks.append(time.perf_counter() - began)
        unit = response.json().get("unit")
        if unit and take_units:
            job = {"Authorization": f"Bearer {unit['token']}", "X-Machine-Token": credential}
            started = await client.post("/api/job/start", headers=job, json={
                "node_name": "bench", "worker_version": installed_version()})
            ended = await client.post("/api/job/end", headers=job, json={"exit_code": 0, "stopped": False,
                                                                         "problems": [], "ended_s_ago": 0})
            if started.is_success and ended.is_success:
                served += 1
            else:
                errors += 1
                problems.append(f"{started.status_code} {started.text[:200]} / {ended.status_code}")

    began = time.monotonic()
    await asyncio.gather(*(agent(credential) for credential in credentials))
    took = time.monotonic() - began
    return {"asks_per_s": len(asks) / took, "units_per_s": served / took, "units": served, "errors": errors,
            "median_ask_ms": 1000 * statistics.median(asks) if asks else float("nan"),
            "problem": problems[0] if problems else ""}


def validation_overhead(args: argparse.Namespace) -> tuple[float, float, float]:
    """(deterministic units, trainings, the mix): GPU time spent validating per unit of GPU time kept."""
    from service.models import Machine, RunAttempt
    from service.volunteers import segments, units

    rng = random.Random(7)
    random.seed(7)  # units.copies_needed draws its spot checks from the module's generator
    trusted = [Machine(owner_id=1, name="m", volunteer=True, trust=trust)
               for trust in range(units.TRUSTED_AFTER, units.TRUSTED_AFTER + 400)]
    copies = [units.copies_needed(rng.choice(trusted)) for _ in range(20_000)]
    unit_s = args.unit_minutes * 60
    deterministic = sum((c - 1) * (unit_s + args.startup) for c in copies) / (len(copies) * unit_s)
    training_s = args.training_hours * 3600
    reruns = []
    for _ in range(2000):  # states shipped every ship-every seconds (steps at one per second, for the arithmetic)
        attempt = RunAttempt(run_id=1, number=1, pool="volunteers", submission_id="x",
                             held_outputs={"checkpoint.pt": {"sha256": "f" * 64, "size": 1}})
        for step in range(int(args.ship_every), int(training_s), int(args.ship_every)):
            segments.hold(attempt, step, f"{step:064d}", 1)
        chosen = segments.choose(attempt, int(training_s), rng)
        reruns.append(sum((s["to_step"] - s["from_step"] + args.startup) * s["copies"] for s in chosen))
    training = statistics.fmean(reruns) / training_s
    mix = args.training_share * training + (1 - args.training_share) * deterministic
    return deterministic, training, mix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--units", type=int, default=2000, help="training units queued for the agents")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long each phase lasts")
    parser.add_argument("--wait", type=int, default=5, help="the long poll's wait, in seconds")
    parser.add_argument("--unit-minutes", type=float, default=10.0, help="GPU minutes of a deterministic unit")
    parser.add_argument("--training-hours", type=float, default=2.0, help="GPU hours of a training unit")
    parser.add_argument("--ship-every", type=float, default=60.0, help="seconds between the states a training ships")
    parser.add_argument("--startup", type=float, default=20.0, help="start-up seconds of every job, re-runs too")
    parser.add_argument("--training-share", type=float, default=0.5, help="the share of GPU time spent training")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        var_dir = Path(folder)
        credentials = seed(var_dir, args.agents, args.units)
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        server = serve_portal(var_dir, port)
        stop = threading.Event()
        try:
            wait_until_up(base, "/api/pool")
            idle = asyncio.run(agents_ask(base, credentials, args.seconds, args.wait, take_units=False))
            print(f"{args.agents} agents, nothing for them (baseline): {idle['asks_per_s']:.0f} asks/s, "
                  f"median {idle['median_ask_ms']:.0f} ms, {idle['errors']} errors")
            ticking = scheduler(var_dir, stop)
            busy = asyncio.run(agents_ask(base, credentials, args.seconds, args.wait, take_units=True))
            stop.set()
            ticking.join(timeout=30)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:  # connections still open: it would wait for them
                server.kill()
                server.wait()
    print(f"{args.agents} agents taking units: {busy['units']} units served, {busy['units_per_s']:.1f} units/s "
          f"({busy['asks_per_s']:.0f} asks/s, median ask {busy['median_ask_ms']:.0f} ms, {busy['errors']} errors"
          f"{': ' + busy['problem'] if busy['problem'] else ''})")
    ceiling = MAX_PER_TICK / TICK_S
    print(f"ratio units/s served / the scheduler's ceiling ({MAX_PER_TICK} placed a tick, a tick every {TICK_S:g} s): "
          f"{busy['units_per_s'] / ceiling:.2f}")
    deterministic, training, mix = validation_overhead(args)
    print(f"validation of deterministic units ({args.unit_minutes:g} GPU-min each, trusted hosts, spot checks): "
          f"{deterministic:.1%} of useful GPU time")
    print(f"validation of trainings ({args.training_hours:g} GPU-h, a state every {args.ship_every:g} s, "
          f"{CHECKED} segments re-run twice, {args.startup:g} s start-up each): {training:.1%}")
    print(f"validation overhead: {100 * mix:.1f}% of useful GPU time")


if __name__ == "__main__":
    main()
