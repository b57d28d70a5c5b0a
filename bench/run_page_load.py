"""The run page under concurrent load: requests/s, latency percentiles and status codes, loopback only.

    python bench/run_page_load.py [--clients 50 200] [--seconds 10]

Seeds a fresh embedded observatory (SQLite) with an awarded proposal, a finished run with outputs and a signed-in
researcher, serves it with uvicorn in a separate process, and drives it from this process with a bounded number
of concurrent clients, each loading the run page again as soon as it has its answer. Two configurations are
measured in the same run, on the same data:
  - "before": the old settings (40 request threads over a database pool of 5 + 10, no load shedding);
  - "now": the defaults (20 threads over a pool of 10 + 10, at most 256 requests in flight, 503 beyond).
Both run the current code, which hands a request's database connection back before each thread hop; with the old
code's session handling, the "before" settings answered none of 200 concurrent run-page loads within 30 s.
While the load runs, a scheduler-like probe on its own engine claims queued runs every half second and reports its
slowest tick, since the scheduler must keep working while the portal is busy. The static stylesheet, served with
no database work, is measured too as the machine's ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.live import free_port, serve_portal, wait_until_up  # noqa: E402

# The settings the observatory had before it was tuned: anyio's 40 threads over a pool of 5 + 10 with a 30 s wait.
BEFORE = {"OBSERVATORY_REQUEST_THREADS": "40", "OBSERVATORY_DB_POOL_SIZE": "5", "OBSERVATORY_DB_MAX_OVERFLOW": "10",
          "OBSERVATORY_DB_POOL_TIMEOUT_S": "30", "OBSERVATORY_MAX_REQUESTS_IN_FLIGHT": "1000000"}
NOW: dict[str, str] = {}


def seed(var_dir: Path) -> int:
    """A migrated database with a finished run and its outputs; returns the run's id."""
    import io
    import json

    from sqlmodel import Session

    from service.archive.service import ingest_bytes, store_for
    from service.config import Settings
    from service.datasets.service import ensure_bundled
    from service.db import make_engine, writer
    from service.migrations import upgrade
    from service.models import Artifact, Role, Run, RunState
    from tests.factories import award, create_call, create_proposal, create_user

    url = f"sqlite:///{var_dir / 'observatory.db'}"
    upgrade(url)
    engine = make_engine(url)
    store = store_for(Settings(var_dir=var_dir, database_url=url, secret_key="bench"))
    with Session(writer(engine), expire_on_commit=False) as session:
        ensure_bundled(session, store)  # as a serving observatory has it: the bundled set the plans train on
        session.commit()
        admin = create_user(session, Role.admin, email="admin@bench.example")
        pi = create_user(session, email="pi@bench.example")
        _, run = award(session, admin, create_proposal(session, pi, create_call(session, admin, capacity=100)))
        run = session.get(Run, run.id)
        run.state = RunState.succeeded
        metrics = json.dumps({"final_loss": 0.02, "loss_curve": [1 / (i + 1) for i in range(200)]}).encode()
        for name, kind, media, data in (("metrics.json", "metrics", "application/json", metrics),
                                        ("samples.png", "samples", "image/png", b"\x89PNG\r\n\x1a\n" + b"0" * 4000)):
            sha, size = store.put(io.BytesIO(data))
            session.add(Artifact(run_id=run.id, name=name, kind=kind, sha256=sha, size=size, media_type=media))
        ingest_bytes(session, store=store, run=run, name="job.log", data=b"done\n")
        session.add(run)
        session.commit()
        run_id = run.id
    engine.dispose()
    return run_id


def sign_in(base: str) -> httpx.Cookies:
    with httpx.Client(base_url=base) as client:
        token = re.search(r'name="csrf_token" value="([^"]+)"', client.get("/login").text).group(1)
        response = client.post("/login", data={"email": "pi@bench.example", "password": "correct horse battery",
                                               "csrf_token": token})
        assert response.status_code in (200, 303), response.text[:200]
        return client.cookies


async def drive(base: str, path: str, cookies: httpx.Cookies, clients: int, seconds: float) -> dict:
    latencies: list[float] = []  # of every answer
    answered: list[float] = []  # of the pages themselves (200)
    statuses: Counter[str] = Counter()
    stop_at = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base, cookies=cookies, limits=limits, timeout=30) as client:
        async def one_client() -> None:
            while time.monotonic() < stop_at:
                started = time.perf_counter()
                try:
                    response = await client.get(path)
                    statuses[str(response.status_code)] += 1
                    if response.status_code == 200:
                        answered.append(time.perf_counter() - started)
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1
                latencies.append(time.perf_counter() - started)

        began = time.perf_counter()
        await asyncio.gather(*(one_client() for _ in range(clients)))
        elapsed = time.perf_counter() - began
    return {"ok_per_s": len(answered) / elapsed, "p50_ms": _percentile(answered, 50),
            "p99_ms": _percentile(answered, 99), "p99_all_ms": _percentile(latencies, 99),
            "statuses": dict(statuses)}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return 1000 * ordered[round(q / 100 * (len(ordered) - 1))]


class SchedulerProbe(threading.Thread):
    """A scheduler tick's database work on its own engine, every half second; remembers the slowest."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.slowest, self.failures = url, threading.Event(), 0.0, 0

    def run(self) -> None:
        from sqlmodel import Session

        from service.attempts.service import live_attempts
        from service.db import make_engine, writer
        from service.runs.service import claim_queued

        engine = make_engine(self.url, pool_size=2, max_overflow=2)
        while not self.stop.wait(0.5):
            started = time.perf_counter()
            try:
                with Session(writer(engine)) as session:
                    claim_queued(session, limit=8, ttl_s=60)
                    live_attempts(session, "local")
                    session.commit()
            except Exception:
                self.failures += 1
            self.slowest = max(self.slowest, time.perf_counter() - started)
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, nargs="+", default=[50, 200])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--configs", nargs="+", choices=["before", "now"], default=["before", "now"])
    parser.add_argument("--paths", nargs="+", choices=["static", "run"], default=["static", "run"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="obs-bench-") as folder:
        var_dir = Path(folder)
        run_id = seed(var_dir)
        print(f"run page /runs/{run_id}, {args.seconds:g} s per measurement, loopback, {os.cpu_count()} CPUs")
        print("ok/s, p50 and p99: pages answered (200); p99 all: every answer, refusals and time-outs included")
        print(f"{'config':<7} {'path':<18} {'clients':>7} {'ok/s':>8} {'p50 ms':>8} {'p99 ms':>9} "
              f"{'p99 all ms':>10} {'probe max ms':>12}  statuses")
        for label, overrides in (("before", BEFORE), ("now", NOW)):
            if label not in args.configs:
                continue
            port = free_port()
            base = f"http://127.0.0.1:{port}"
            server = serve_portal(var_dir, port, overrides)
            try:
                wait_until_up(base)
                cookies = sign_in(base)
                paths = {"static": "/static/style.css", "run": f"/runs/{run_id}"}
                for path in (paths[name] for name in args.paths):
                    for clients in args.clients:
                        probe = SchedulerProbe(f"sqlite:///{var_dir / 'observatory.db'}")
                        probe.start()
                        result = asyncio.run(drive(base, path, cookies, clients, args.seconds))
                        probe.stop.set()
                        probe.join()
                        probe_text = f"{1000 * probe.slowest:.0f}" + (f" ({probe.failures} failed)"
                                                                      if probe.failures else "")
                        print(f"{label:<7} {path:<18} {clients:>7} {result['ok_per_s']:>8.1f} "
                              f"{result['p50_ms']:>8.1f} {result['p99_ms']:>9.1f} {result['p99_all_ms']:>10.1f} "
                              f"{probe_text:>12}  "
                              f"{result['statuses']}", flush=True)
            finally:
                server.terminate()
                try:
                    server.wait(timeout=10)
                except subprocess.TimeoutExpired:  # still answering the requests it had queued
                    server.kill()
                    server.wait()


if __name__ == "__main__":
    main()
