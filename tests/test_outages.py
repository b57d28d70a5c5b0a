"""Outages of the observatory's own (its API restarting, its archive refusing connections) never fail a run: the
API answers 503 with Retry-After, the runner trains on and tries again with backoff, the time it waits after its job
ended is not charged, and a runner that does give up is resumed from its last shipped checkpoint."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from sqlmodel import Session

from jobs.kinds import UNREACHABLE_EXIT
from jobs.runner import Attempt, Channel, Unreachable
from scheduler.loop import Scheduler
from scheduler.ray_backend import JobState
from service.archive import service as archive_service
from service.archive.store import ArchiveUnavailable, LocalStore, S3Store
from service.attempts.service import attempts_of, read_log
from service.ledger.service import run_charged
from service.models import AttemptState, Role, RunState
from tests.factories import TINY_TRAIN, award, create_call, create_proposal, create_user
from tests.live import free_port, live_server
from tests.pools import TRAIN_FILES, FakeJob, ScriptedPool, current_run, dispatched_run


def _refusing_s3(tmp_path: Path) -> S3Store:
    """An S3 store whose endpoint refuses connections (nothing listens on its port)."""
    return S3Store(bucket="archive", spool_dir=tmp_path / "spool", endpoint_url=f"http://127.0.0.1:{free_port()}",
                   access_key_id="key", secret_access_key="secret")


def test_an_unreachable_archive_answers_503_with_retry_after_on_every_job_call(lite_engine, lite_session,
                                                                              lite_settings, lite_client,
                                                                              tmp_path, monkeypatch) -> None:
    scheduler, pool, run_id, _ = dispatched_run(lite_engine, lite_session, lite_settings)
    job = FakeJob(lite_client, pool.token())
    down = _refusing_s3(tmp_path)
    monkeypatch.setattr("service.attempts.api.store_for", lambda settings: down)
    answers = {"start": job.start(), "checkpoint": job.checkpoint(b"state", step=5),
               "output": job.output("metrics.json", b"{}")}
    for call, answer in answers.items():
        assert answer.status_code == 503, (call, answer.text)
        assert int(answer.headers["Retry-After"]) > 0 and "archive" in answer.json()["detail"], call
    assert current_run(lite_engine, run_id).state == RunState.running


def test_the_channel_waits_out_an_api_restart_and_gives_up_only_after_its_patience(lite_engine, lite_settings,
                                                                                   tmp_path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    channel = Channel(url, "att_nobody", patience_s=60, backoff_s=(0.2, 0.5))
    answers: list[int] = []

    def call() -> None:
        answers.append(channel.once("GET", "/api/pool").status_code)

    def later() -> None:
        time.sleep(2.0)  # the API is away for two seconds, then comes back on the same address
        with live_server(lite_settings, lite_engine, port=port):
            deadline = time.monotonic() + 30
            while not answers and time.monotonic() < deadline:
                time.sleep(0.1)

    restarting = threading.Thread(target=later)
    restarting.start()
    started = time.monotonic()
    channel.patiently(call)
    restarting.join()
    assert answers == [200] and time.monotonic() - started >= 1.9
    assert channel.away == {} and channel.outages[0][0] == "api"  # over: the next one is timed anew
    patient = Channel(f"http://127.0.0.1:{free_port()}", "att_nobody", patience_s=1.0, backoff_s=(0.2,))
    with pytest.raises(Unreachable, match="away 1 s; the patience is 1 s"):
        patient.call("GET", "/api/pool")
    assert Attempt(patient, tmp_path / "node").run() == UNREACHABLE_EXIT


def _runner(url: str, token: str, node_dir: Path, patience_s: float) -> subprocess.Popen:
    env = {**os.environ, "OBSERVATORY_JOB_URL": url, "OBSERVATORY_JOB_TOKEN": token,
           "OBSERVATORY_NODE_DIR": str(node_dir), "OBSERVATORY_JOB_PATIENCE_S": str(patience_s),
           "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "jobs.runner"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _wait_for(engine, run_id: int, until, timeout: float = 120,  # type: ignore[no-untyped-def]
              runner: subprocess.Popen | None = None) -> None:
    """Wait until the run satisfies `until`; on a timeout the message names the run's state and what the runner
    printed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until(current_run(engine, run_id)):
            return
        time.sleep(0.2)
    printed = ""
    if runner is not None:
        runner.kill()
        printed = runner.communicate(timeout=30)[0].decode(errors="replace")[-4000:]
    raise AssertionError(f"run {run_id}: {current_run(engine, run_id).message}\n{printed}")


def _shipped_step(engine, run_id: int) -> int:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        return max((a.checkpoint_step for a in attempts_of(session, run_id)), default=0)


@pytest.mark.parametrize("outage", ["api", "archive"])
def test_a_real_job_trains_through_an_outage_and_its_run_succeeds(outage, lite_engine, lite_session, lite_settings,
                                                                  tmp_path, monkeypatch) -> None:
    """The runner and its training job run for real: the API goes away (or the archive refuses every write) for
    a few seconds mid-run; the job trains on, its checkpoints and outputs arrive afterwards, and the run succeeds
    with the time spent waiting to deliver its outputs left uncharged."""
    settings = lite_settings.model_copy(update={"checkpoint_ship_interval_s": 0})
    admin = create_user(lite_session, Role.admin)
    # About eight seconds of training on a quiet machine (it trains at ~100 steps/s): long enough for the runner,
    # which looks every two seconds, to ship a checkpoint before the job ends.
    plan = {**TINY_TRAIN, "steps": 800, "checkpoint_every": 10}
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin), job_plan=plan))
    pool = ScriptedPool()
    scheduler = Scheduler(lite_engine, settings, pool)
    assert scheduler.dispatch() == 1
    away = threading.Event()
    real_put = LocalStore.put

    def put(self, stream, *, limit=None):  # type: ignore[no-untyped-def]
        if away.is_set():
            raise ArchiveUnavailable("the archive's store cannot be reached (EndpointConnectionError); try again")
        return real_put(self, stream, limit=limit)

    monkeypatch.setattr(LocalStore, "put", put)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ExitStack() as first:
        first.enter_context(live_server(settings, lite_engine, port=port))
        runner = _runner(url, pool.token(), tmp_path / "node", patience_s=120)
        _wait_for(lite_engine, run.id, lambda r: r.progress_detail.get("step", 0) >= 10, timeout=180, runner=runner)
        # The outage starts once a checkpoint has arrived: on a busy machine the job may otherwise finish within
        # the outage, and a job that ends well ships its final state with its outputs, not as a checkpoint.
        _wait_for(lite_engine, run.id, lambda r: _shipped_step(lite_engine, r.id) >= 10, timeout=180, runner=runner)
        if outage == "archive":
            away.set()
            # The job trains to its end while the archive refuses every write, and its runner starts sending the
            # outputs (the API, up, takes its log); they wait for the archive a while longer.
            _wait_for(lite_engine, run.id, lambda r: r.progress_detail.get("phase") == "sending outputs",
                      timeout=240, runner=runner)
            time.sleep(2)
        else:
            first.close()  # the API stops...
            time.sleep(5)  # ...for five seconds, then starts again on the same address
    with live_server(settings, lite_engine, port=port):
        if outage == "archive":
            time.sleep(1)  # the outputs still wait for the archive
            away.clear()
        output, _ = runner.communicate(timeout=240)
    text = output.decode(errors="replace")
    assert runner.returncode == 0, text[-3000:]
    assert "trying again" in text and "giving up" not in text
    pool.set(pool.submitted[0], JobState.succeeded)
    scheduler.reconcile()
    final = current_run(lite_engine, run.id)
    assert final.state == RunState.succeeded, final.message
    with Session(lite_engine) as session:
        (attempt,) = attempts_of(session, run.id)
        words = "the observatory's archive could not take or give files" if outage == "archive" \
            else "the observatory was unreachable"
        log = read_log(session, attempt.id)
        assert f"[runner] {words} for" in log
        assert re.search(r"\[runner\] sending \d+ outputs \([\d.]+ MiB\) to the observatory", log), log[-2000:]
        # The last stage the run page showed, over the job's own last record (its steps stay).
        assert final.progress_detail["phase"] == "sending outputs"
        assert final.progress_detail["step"] == final.progress_detail["total"] == plan["steps"]
        assert attempt.state == AttemptState.succeeded and attempt.checkpoint_step >= 10
        assert {a.name for a in archive_service.list_artifacts(session, run.id)} >= set(TRAIN_FILES)
        job_ended = attempt.reported["job_ended_at"]
        charged = run_charged(session, run.id)
    from datetime import datetime

    worked = int((datetime.fromisoformat(job_ended) - attempt.started_at).total_seconds())
    assert charged == worked  # up to the job's own end, not to the end of the wait
    if outage == "archive":
        assert (attempt.ended_at - datetime.fromisoformat(job_ended)).total_seconds() >= 1


def test_a_runner_that_gave_up_on_the_observatory_is_resumed_from_its_checkpoint(lite_engine, lite_session,
                                                                                lite_settings, lite_client) -> None:
    scheduler, pool, run_id, _ = dispatched_run(lite_engine, lite_session, lite_settings)
    job = FakeJob(lite_client, pool.token())
    job.start()
    assert job.checkpoint(b"state at step 40", step=40).status_code == 200
    pool.set(pool.submitted[0], JobState.running)
    scheduler.reconcile()
    pool.set(pool.submitted[0], JobState.failed, exit_code=UNREACHABLE_EXIT)
    scheduler.reconcile()
    run = current_run(lite_engine, run_id)
    assert run.state == RunState.queued and run.resume_step == 40, run.message
    assert "could not reach the observatory" in run.message and "checkpoint at step 40" in run.message
    with Session(lite_engine) as session:
        (attempt,) = attempts_of(session, run_id)
    assert attempt.state == AttemptState.lost
    assert json.dumps(attempt.reported) == "{}"  # it never reported: judged by its exit code alone


def test_a_checkpoint_is_labelled_with_the_step_its_own_digest_was_announced_with(tmp_path) -> None:
    """The job may write a newer state between the runner reading the latest step and opening the file: the file
    is shipped with the step announced beside its digest (a resume from it then says the step it is at)."""
    import hashlib

    from jobs.progress import CHECKPOINT

    work = tmp_path / "work"
    work.mkdir()
    older, newer = b"state at step 10", b"state at step 20"
    (work / "state.pt").write_bytes(newer)  # already replaced by the newer state
    runner = Attempt(Channel("http://127.0.0.1:9", "att_x", patience_s=0), tmp_path / "node")
    runner.interval_s = 0
    lines = [f'{CHECKPOINT}{{"step": 10, "sha256": "{hashlib.sha256(older).hexdigest()}"}}\n'.encode()]
    runner.output.read(_Stream(lines))
    sent: list[dict] = []

    class Answer:
        def json(self) -> dict:
            return {}

    runner._send = lambda patient, method, path, **kw: sent.append(kw["params"]) or Answer()  # type: ignore[method-assign]
    runner.ship_checkpoint(work, force=True)
    assert sent == []  # the file on disk is not the one announced: nothing is shipped under step 10
    runner.output.read(_Stream([f'{CHECKPOINT}{{"step": 20, "sha256": "{hashlib.sha256(newer).hexdigest()}"}}\n'
                                .encode()]))
    runner.output.checkpoint_step = 10  # as if the newer line were read after the step was
    runner.ship_checkpoint(work, force=True)
    assert sent == [{"step": 20}] and runner.shipped_step == 20


class _Stream:
    def __init__(self, lines: list[bytes]) -> None:
        self.lines = list(lines)

    def readline(self) -> bytes:
        return self.lines.pop(0) if self.lines else b""
