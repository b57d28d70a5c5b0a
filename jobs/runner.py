"""The one entrypoint a pool node runs for every job: `python -m jobs.runner`.

It talks to the observatory over the attempt's channel (OBSERVATORY_JOB_URL, with the attempt's token in
OBSERVATORY_JOB_TOKEN) and never touches the archive or the database:

1. says hello: the node's commons-observatory release is checked, and the plan, inputs and resume point come back;
2. fetches the inputs by sha256 into the node's cache (OBSERVATORY_NODE_DIR, default ~/.cache/commons-observatory),
   verified, and puts the resume state where the job looks for it;
3. runs the job's module in a work folder of its own, echoing its output, and sends the log and latest progress
   every couple of seconds; each checkpoint the job announces is shipped at most every `checkpoint_interval_s`,
   and always the last one when the job stops;
4. when the observatory says stop (a cancel, an award used up) or Ray sends SIGTERM, it asks the job to save its
   state and stop, and ships that state;
5. at the end sends each declared output (opened without following links, digests checked) and reports how it
   ended. It exits with the job's exit code (0 when it stopped on request).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from jobs import progress
from jobs.kinds import RESUME_INPUT, RESUME_STATE, job_kind
from jobs.outputs import collect, open_folder, open_plain, sha256_of, sha256_of_fd
from jobs.version import installed_version

SEND_EVERY_S = 2.0
RETRY_DELAYS_S = (1, 2, 4, 8, 15, 30)  # about a minute of outage is ridden out; then the job gives up
REFUSED_EXIT = 3  # the observatory would not start this attempt (wrong release, ended attempt)


class ChannelError(Exception):
    """The observatory refused a call, or could not be reached after the retries."""


class Channel:
    def __init__(self, url: str, token: str, delays: tuple[float, ...] = RETRY_DELAYS_S) -> None:
        self.client = httpx.Client(base_url=url.rstrip("/"), headers={"Authorization": f"Bearer {token}"},
                                   timeout=httpx.Timeout(60, connect=10), follow_redirects=True)
        self.delays = delays

    def call(self, method: str, path: str, *, rewind: Any = None, **kwargs: Any) -> httpx.Response:
        """One call, retried over connection failures and 5xx answers; a 4xx answer raises at once."""
        problem = ""
        for delay in (*self.delays, None):
            if rewind is not None:
                rewind.seek(0)
            try:
                response = self.client.request(method, path, **kwargs)
            except httpx.HTTPError as exc:
                problem = f"the observatory is unreachable ({exc.__class__.__name__}: {exc})"
            else:
                if response.status_code < 400:
                    return response
                detail = _detail(response)
                if response.status_code < 500 and response.status_code != 429:
                    raise ChannelError(f"{method} {path}: {response.status_code} {detail}")
                problem = f"{method} {path}: {response.status_code} {detail}"
            if delay is None:
                break
            print(f"[runner] {problem}; retrying in {delay} s", flush=True)
            time.sleep(delay)
        raise ChannelError(problem)


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))[:500]
    except ValueError:
        return response.text[:200]


# ---- the job's output, read as it comes ---------------------------------------------------------------------


@dataclass
class JobOutput:
    """What the job has printed and not yet sent, its latest progress and the latest checkpoint it announced."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    pending: list[str] = field(default_factory=list)
    progress: dict[str, Any] | None = None
    checkpoint_step: int | None = None

    def read(self, stream) -> None:  # type: ignore[no-untyped-def]
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            sys.stdout.write(line)
            sys.stdout.flush()
            parsed = progress.parse(line.rstrip("\n"))
            with self.lock:
                self.pending.append(line)
                if parsed and parsed[0] == "progress":
                    self.progress = parsed[1]
                elif parsed and parsed[0] == "checkpoint" and isinstance(parsed[1].get("step"), int):
                    self.checkpoint_step = parsed[1]["step"]

    def take(self) -> tuple[str, dict[str, Any] | None]:
        with self.lock:
            text, self.pending = "".join(self.pending), []
            return text, self.progress


# ---- one attempt ------------------------------------------------------------------------------------------


class Attempt:
    def __init__(self, channel: Channel, node_dir: Path) -> None:
        self.channel = channel
        self.node_dir = node_dir
        self.offset = 0
        self.unsent = ""
        self.stop_asked: str | None = None
        self.shipped_step = -1
        self.last_ship = 0.0
        self.output = JobOutput()

    # -- talking to the observatory

    def send_log(self, extra: str = "") -> None:
        text, latest = self.output.take()
        self.unsent += extra + text
        control = self.channel.call("POST", "/api/job/log",
                                    json={"offset": self.offset, "text": self.unsent, "progress": latest}).json()
        self.offset += len(self.unsent.encode())
        self.unsent = ""
        self.offset = max(self.offset, int(control.get("offset", 0)))
        if control.get("stop"):
            self.stop_asked = control["stop"]

    def ship_checkpoint(self, workdir: Path, force: bool = False) -> None:
        step = self.output.checkpoint_step
        if step is None or step <= self.shipped_step:
            return
        if not force and time.monotonic() - self.last_ship < self.interval_s:
            return
        directory = open_folder(workdir)
        try:
            descriptor = open_plain(directory, RESUME_STATE.name)
        except FileNotFoundError:
            return  # the job finished and removed it: nothing left to resume
        finally:
            os.close(directory)
        with os.fdopen(descriptor, "rb") as handle:
            sha, _ = sha256_of_fd(descriptor)
            control = self.channel.call("PUT", "/api/job/checkpoint", params={"step": step}, content=handle,
                                        rewind=handle, headers={"X-Content-SHA256": sha}).json()
        self.shipped_step, self.last_ship = step, time.monotonic()
        print(f"shipped the checkpoint at step {step} to the observatory", flush=True)
        if control.get("stop"):
            self.stop_asked = control["stop"]

    def fetch(self, sha256: str, size: int) -> Path:
        """An input by digest, from the node's cache or the observatory; verified either way."""
        cache = self.node_dir / "cache"
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = cache / sha256
        if path.is_file() and not path.is_symlink() and sha256_of(path) == (sha256, size):
            return path
        tmp = cache / f".{sha256}.{os.getpid()}.part"
        with self.channel.client.stream("GET", f"/api/job/inputs/{sha256}") as response:
            if response.status_code != 200:
                raise ChannelError(f"input {sha256[:12]}: {response.status_code}")
            with tmp.open("wb") as handle:
                for block in response.iter_bytes(1 << 20):
                    handle.write(block)
        if sha256_of(tmp) != (sha256, size):
            tmp.unlink(missing_ok=True)
            raise ChannelError(f"input {sha256[:12]} arrived damaged (digest or size differs)")
        tmp.replace(path)
        return path

    def send_outputs(self, workdir: Path, kind_name: str) -> list[str]:
        kind = job_kind(kind_name)
        found, problems = collect(workdir, {spec.name: spec for spec in kind.outputs})
        for entry, descriptor in found:
            with os.fdopen(descriptor, "rb") as handle:
                try:
                    self.channel.call("PUT", f"/api/job/outputs/{entry.name}", content=handle, rewind=handle,
                                      headers={"X-Content-SHA256": entry.sha256,
                                               "Content-Length": str(entry.size)})
                except ChannelError as exc:
                    problems.append(f"{entry.name}: {exc}")
        return problems

    # -- the run

    def run(self) -> int:
        try:
            plan = self.channel.call("POST", "/api/job/start", json={
                "node_name": socket.gethostname()[:200], "worker_version": installed_version()}).json()
        except ChannelError as exc:
            print(f"the observatory refused to start this attempt: {exc}", flush=True)
            return REFUSED_EXIT
        self.interval_s = float(plan["checkpoint_interval_s"])
        workdir = self.node_dir / "work" / f"run-{plan['run_id']}-attempt-{plan['attempt']}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True, mode=0o700)
        try:
            fetched = {item["field"]: self.fetch(item["sha256"], item["size"]) for item in plan["inputs"]}
        except (ChannelError, OSError) as exc:
            print(f"could not fetch the job's inputs: {exc}", flush=True)
            return 1
        resume = fetched.pop(RESUME_INPUT, None)
        if resume is not None:
            shutil.copyfile(resume, workdir / RESUME_STATE.name)
            self.shipped_step = int(plan["resume_step"])
            print(f"resuming from the checkpoint at step {plan['resume_step']}", flush=True)
        inputs = {name: str(path) for name, path in fetched.items()}
        command = [sys.executable, "-m", plan["module"], "--config", json.dumps(plan["config"]),
                   "--output", str(workdir), "--inputs", json.dumps(inputs)]
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        reader = threading.Thread(target=self.output.read, args=(child.stdout,), daemon=True)
        reader.start()
        terminated = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: terminated.set())
        signalled = False
        try:
            while child.poll() is None:
                time.sleep(0.2 if terminated.is_set() else SEND_EVERY_S)
                if not signalled and (self.stop_asked or terminated.is_set()):
                    child.send_signal(signal.SIGTERM)  # it saves its state at the next step and exits
                    signalled = True
                if terminated.is_set():
                    continue  # Ray's grace period is short: no calls until the job has stopped
                self.send_log()
                self.ship_checkpoint(workdir)
        except ChannelError as exc:
            child.kill()
            child.wait()
            reader.join(timeout=10)
            print(f"giving up: {exc}", flush=True)
            return 1
        reader.join(timeout=30)
        code = child.returncode
        stopped = signalled and code == 0
        problems: list[str] = []
        try:
            if code != 0 or stopped:
                self.ship_checkpoint(workdir, force=True)
            if code == 0 and not stopped:
                problems = self.send_outputs(workdir, plan["kind"])
            ending = "stopped on request" if stopped else f"the job exited with {code}"
            self.send_log(f"[runner] {ending}\n")
            self.channel.call("POST", "/api/job/end", json={"exit_code": max(-255, min(255, code)),
                                                             "stopped": stopped, "problems": problems[:50]})
        except ChannelError as exc:
            print(f"could not report the end to the observatory: {exc}", flush=True)
            return code or 1
        if code == 0 and not problems:
            shutil.rmtree(workdir, ignore_errors=True)
        return code if code else (1 if problems else 0)


def node_dir() -> Path:
    configured = os.environ.get("OBSERVATORY_NODE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "commons-observatory"


def main() -> int:
    os.umask(0o077)
    url, token = os.environ.get("OBSERVATORY_JOB_URL"), os.environ.get("OBSERVATORY_JOB_TOKEN")
    if not url or not token:
        print("jobs.runner needs OBSERVATORY_JOB_URL and OBSERVATORY_JOB_TOKEN (the scheduler sets both)")
        return 2
    attempt = Attempt(Channel(url, token), node_dir())
    try:
        return attempt.run()
    except Exception as exc:  # say why before dying, so that the run fails with a reason, not a silence
        traceback.print_exc()
        try:
            attempt.send_log(f"[runner] crashed: {exc.__class__.__name__}: {exc}\n")
            attempt.channel.call("POST", "/api/job/end", json={"exit_code": 1, "problems": [
                f"the runner crashed: {exc.__class__.__name__}: {exc}"[:500]]})
        except Exception:
            pass
        return 1


if __name__ == "__main__":
    sys.exit(main())
