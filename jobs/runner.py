"""The one entrypoint a pool node runs for every job: `python -m jobs.runner`.

It talks to the observatory over the attempt's channel (OBSERVATORY_JOB_URL) and never touches the archive or the
database. On the head the attempt's token is in OBSERVATORY_JOB_TOKEN; on an owner's machine the runner asks for it
(OBSERVATORY_JOB_SUBMISSION names the attempt) with the machine's own credential, which `observatory pool join`
keeps in the node folder, and shows that credential with every call.

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

An outage of the observatory (its API restarting, its archive refusing writes) does not end the job: calls are
tried again with backoff, the job trains on meanwhile, and its log waits to be sent. Only when the observatory has
been away for the patience (OBSERVATORY_JOB_PATIENCE_S, 30 minutes unless the scheduler says otherwise) does the
runner give up, exiting with UNREACHABLE_EXIT: the scheduler then resumes the run from its last shipped checkpoint
and charges nothing past it.
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
from jobs.credentials import MACHINE_HEADER
from jobs.kinds import RESUME_INPUT, RESUME_STATE, UNREACHABLE_EXIT, WORKER_DONE, job_kind
from jobs.outputs import collect, open_folder, open_plain, sha256_of, sha256_of_fd
from jobs.version import installed_version

SEND_EVERY_S = 2.0
PATIENCE_S = 1800.0  # how long a job rides out the observatory (its API or its archive) being away: 30 minutes
BACKOFF_S = (1, 2, 4, 8, 15, 30, 60)  # the waits between tries while it is away, the last one repeated
REFUSED_EXIT = 3  # the observatory would not start this attempt (wrong release, ended attempt)


MACHINE_TOKEN_FILE = "machine-token"  # in the node folder, written by `observatory pool join`


class ChannelError(Exception):
    """The observatory refused a call (a 4xx answer): trying again would not help."""


class RunnerExit(Exception):
    """The runner stops before its job starts, with this exit code and these words."""

    def __init__(self, code: int, words: str) -> None:
        super().__init__(words)
        self.code = code


def first_contact(call: Any, refused: str) -> Any:
    """`call()`, whose failure ends the runner before the job starts: exit 75 when the observatory stayed away
    (the run resumes), REFUSED_EXIT when it refused."""
    try:
        return call()
    except Unreachable as exc:
        raise RunnerExit(UNREACHABLE_EXIT, f"giving up: {exc}") from None
    except ChannelError as exc:
        raise RunnerExit(REFUSED_EXIT, f"{refused}: {exc}") from None


class Unreachable(ChannelError):
    """The observatory could not be reached, or said it is unavailable (5xx, 429): worth trying again later.
    `door` says which part was away: the API itself, or the archive behind the calls that carry files."""

    def __init__(self, problem: str, retry_after_s: float | None = None, door: str = "api") -> None:
        super().__init__(problem)
        self.retry_after_s, self.door = retry_after_s, door


ARCHIVE_PATHS = ("/api/job/checkpoint", "/api/job/outputs/", "/api/job/inputs/")
OUTAGE_WORDS = {"api": "the observatory was unreachable", "archive": "the observatory's archive could not take or "
                                                                     "give files"}


def door_of(path: str) -> str:
    """Which part of the observatory a call needs: its archive (the calls that carry files), or its API alone."""
    return "archive" if path.startswith(ARCHIVE_PATHS) else "api"


@dataclass
class Outage:
    since: float  # monotonic clock
    tries: int = 0


class Channel:
    """The attempt's calls to the observatory. An outage is timed across calls, for the API and for its archive
    apart (the log goes on while the archive is away): each call tries again with backoff (as long as the
    observatory asks in Retry-After, where it says) until that part has been away for `patience_s` in all, then
    raises Unreachable."""

    def __init__(self, url: str, token: str, *, patience_s: float = PATIENCE_S,
                 backoff_s: tuple[float, ...] = BACKOFF_S, machine_token: str | None = None) -> None:
        self.token, self.machine_token = token, machine_token  # handed on to a job that trains in rounds
        headers = {"Authorization": f"Bearer {token}"}
        if machine_token:  # on an owner's machine, every call also shows the machine's own credential
            headers[MACHINE_HEADER] = machine_token
        self.client = httpx.Client(base_url=url.rstrip("/"), headers=headers,
                                   timeout=httpx.Timeout(60, connect=10), follow_redirects=True)
        self.patience_s, self.backoff_s = patience_s, backoff_s or (0,)
        self.away: dict[str, Outage] = {}  # the outages going on, by door
        self.outages: list[tuple[str, float]] = []  # (door, seconds) of outages that ended, not yet told

    def away_s(self, door: str = "api") -> float:
        outage = self.away.get(door)
        return 0.0 if outage is None else time.monotonic() - outage.since

    def tries(self, door: str = "api") -> int:
        outage = self.away.get(door)
        return 0 if outage is None else outage.tries

    def next_wait_s(self, problem: Unreachable) -> float:
        """How long to wait before the next try: the backoff, or what the observatory asked if longer, never past
        the end of the patience."""
        wait = self.backoff_s[min(max(self.tries(problem.door), 1) - 1, len(self.backoff_s) - 1)]
        wait = max(wait, min(problem.retry_after_s or 0, 300))
        return max(0.0, min(wait, self.patience_s - self.away_s(problem.door)))

    def once(self, method: str, path: str, *, rewind: Any = None, **kwargs: Any) -> httpx.Response:
        """One try: a 4xx answer raises ChannelError, a failure to get through Unreachable."""
        if rewind is not None:
            rewind.seek(0)
        try:
            response = self.client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            self.note_failure("api")
            raise Unreachable(f"the observatory is unreachable ({exc.__class__.__name__}: {exc})") from None
        return self.checked(method, path, response)

    def checked(self, method: str, path: str, response: httpx.Response) -> httpx.Response:
        """The response if it is a success; else ChannelError (4xx) or Unreachable (5xx, 429)."""
        door = door_of(path)
        if response.status_code < 400:
            self.got_through(door)
            return response
        problem = f"{method} {path}: {response.status_code} {_detail(response)}"
        if response.status_code < 500 and response.status_code != 429:
            raise ChannelError(problem)
        self.note_failure(door)
        raise Unreachable(problem, _retry_after(response), door)

    def got_through(self, door: str) -> None:
        """A call succeeded: the API is there, and so is the archive if the call needed it."""
        for gone in {"api", door}:
            outage = self.away.pop(gone, None)
            if outage is not None:
                self.outages.append((gone, time.monotonic() - outage.since))

    def note_failure(self, door: str) -> None:
        """Count a try that did not get through: the outage began now, or goes on."""
        self.away.setdefault(door, Outage(time.monotonic())).tries += 1

    def patiently(self, attempt: Any) -> Any:
        """`attempt()` until it gets through, waiting out an outage of up to `patience_s` (then Unreachable)."""
        while True:
            try:
                return attempt()
            except Unreachable as exc:
                wait = self.next_wait_s(exc)
                away = self.away_s(exc.door)
                if away >= self.patience_s or wait <= 0:
                    raise Unreachable(f"{exc} (away {away:.0f} s; the patience is {self.patience_s:.0f} s)",
                                      exc.retry_after_s, exc.door) from None
                print(f"[runner] {exc}; trying again in {wait:.0f} s", flush=True)
                time.sleep(wait)

    def call(self, method: str, path: str, *, rewind: Any = None, **kwargs: Any) -> httpx.Response:
        """One call, tried again through an outage (see `patiently`); a 4xx answer raises at once."""
        return self.patiently(lambda: self.once(method, path, rewind=rewind, **kwargs))


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers.get("retry-after", ""))
    except ValueError:
        return None


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
    checkpoints: dict[str, int] = field(default_factory=dict)  # sha256 -> step, of the states announced
    # How a line the job printed is shown here (default: as it is); given the line and its parsed record, if any.
    echo: Any = None

    def read(self, stream) -> None:  # type: ignore[no-untyped-def]
        for raw in iter(stream.readline, b""):
            line = raw.decode(errors="replace")
            parsed = progress.parse(line.rstrip("\n"))
            if self.echo is None:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                self.echo(line, parsed)
            with self.lock:
                self.pending.append(line)
                if parsed and parsed[0] == "progress":
                    self.progress = parsed[1]
                elif parsed and parsed[0] == "checkpoint" and isinstance(parsed[1].get("step"), int):
                    self.checkpoint_step = parsed[1]["step"]
                    if isinstance(parsed[1].get("sha256"), str):
                        self.checkpoints[parsed[1]["sha256"]] = parsed[1]["step"]

    def step_of(self, sha256: str, fallback: int) -> int | None:
        """The step of the state whose digest this is: as announced with its digest (None while the job has not
        announced it yet), or `fallback` for a job that announces no digests."""
        with self.lock:
            if not self.checkpoints:
                return fallback
            return self.checkpoints.get(sha256)

    def take(self) -> tuple[str, dict[str, Any] | None]:
        with self.lock:
            text, self.pending = "".join(self.pending), []
            return text, self.progress


# ---- one attempt ------------------------------------------------------------------------------------------


class Attempt:
    """One attempt, run here. With a `sandbox` (a volunteer's agent), the job runs shut in it, its inputs copied
    into its own folder, and it is stopped once it has run `time_limit_s`."""

    def __init__(self, channel: Channel, node_dir: Path, sandbox: Any = None,
                 time_limit_s: float | None = None, echo: Any = None) -> None:
        self.channel = channel
        self.node_dir = node_dir
        self.sandbox, self.time_limit_s = sandbox, time_limit_s
        self.offset = 0
        self.unsent = ""
        self.stop_asked: str | None = None
        self.signalled = False  # the job was asked to stop
        self.shipped_step = -1
        self.last_ship = 0.0
        self.output = JobOutput(echo=echo)

    # -- talking to the observatory: `patient` calls wait out an outage, the others try once

    def _send(self, patient: bool, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return (self.channel.call if patient else self.channel.once)(method, path, **kwargs)

    def send_log(self, extra: str = "", patient: bool = True, progress: dict[str, Any] | None = None) -> None:
        if progress is not None:  # the runner's own stage (sending outputs), over the job's last record
            with self.output.lock:
                self.output.progress = {**(self.output.progress or {}), **progress}
        text, latest = self.output.take()
        outages = "".join(f"[runner] {OUTAGE_WORDS[door]} for {seconds:.0f} s; the job went on meanwhile\n"
                          for door, seconds in self.channel.outages)
        self.channel.outages.clear()
        self.unsent += outages + extra + text  # kept until the observatory has it
        control = self._send(patient, "POST", "/api/job/log",
                             json={"offset": self.offset, "text": self.unsent, "progress": latest}).json()
        self.offset += len(self.unsent.encode())
        self.unsent = ""
        self.offset = max(self.offset, int(control.get("offset", 0)))
        if control.get("stop"):
            self.stop_asked = control["stop"]

    def ship_checkpoint(self, workdir: Path, force: bool = False, patient: bool = True) -> None:
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
            # The job may have written a newer state since `step` was read: the file opened is labelled with the
            # step announced with its own digest, never with another's.
            step = self.output.step_of(sha, step)
            if step is None or step <= self.shipped_step:
                return  # announced a moment from now; shipped next time
            control = self._send(patient, "PUT", "/api/job/checkpoint", params={"step": step}, content=handle,
                                 rewind=handle, headers={"X-Content-SHA256": sha}).json()
        self.shipped_step, self.last_ship = step, time.monotonic()
        print(f"shipped the checkpoint at step {step} to the observatory", flush=True)
        if control.get("stop"):
            self.stop_asked = control["stop"]

    def fetch(self, sha256: str, size: int) -> Path:
        """An input by digest, from the node's cache or the observatory (waiting out an outage); verified."""
        cache = self.node_dir / "cache"
        cache.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = cache / sha256
        if path.is_file() and not path.is_symlink() and sha256_of(path) == (sha256, size):
            return path
        tmp = cache / f".{sha256}.{os.getpid()}.part"
        self.channel.patiently(lambda: self._download(f"/api/job/inputs/{sha256}", tmp))
        if sha256_of(tmp) != (sha256, size):
            tmp.unlink(missing_ok=True)
            raise ChannelError(f"input {sha256[:12]} arrived damaged (digest or size differs)")
        tmp.replace(path)
        return path

    def _download(self, path: str, target: Path) -> None:
        try:
            with self.channel.client.stream("GET", path) as response:
                if response.status_code != 200:
                    response.read()
                    self.channel.checked("GET", path, response)
                    raise ChannelError(f"GET {path}: {response.status_code}")
                with target.open("wb") as handle:
                    for block in response.iter_bytes(1 << 20):
                        handle.write(block)
        except httpx.HTTPError as exc:
            self.channel.note_failure("archive")
            raise Unreachable(f"fetching {path} failed ({exc.__class__.__name__}: {exc})", door="archive") from None
        self.channel.got_through("archive")

    def send_outputs(self, workdir: Path, kind_name: str) -> list[str]:
        """Send each declared output, waiting out an outage; a refused one is listed as a problem. Unreachable
        when the observatory stays away past the patience."""
        kind = job_kind(kind_name)
        found, problems = collect(workdir, {spec.name: spec for spec in kind.outputs})
        total = sum(entry.size for entry, _ in found)
        self.send_log(f"[runner] sending {len(found)} outputs ({total / 2**20:.1f} MiB) to the observatory\n",
                      progress={"phase": "sending outputs", "fraction": 1.0, "files": len(found)})
        for entry, descriptor in found:
            with os.fdopen(descriptor, "rb") as handle:
                try:
                    self.channel.call("PUT", f"/api/job/outputs/{entry.name}", content=handle, rewind=handle,
                                      headers={"X-Content-SHA256": entry.sha256,
                                               "Content-Length": str(entry.size)})
                except Unreachable:
                    raise
                except ChannelError as exc:
                    problems.append(f"{entry.name}: {exc}")
        return problems

    # -- the run

    def run(self) -> int:
        try:
            plan = first_contact(lambda: self.channel.call("POST", "/api/job/start", json={
                "node_name": socket.gethostname()[:200], "worker_version": installed_version()}).json(),
                "the observatory refused to start this attempt")
        except RunnerExit as stop:
            print(stop, flush=True)
            return stop.code
        self.interval_s = float(plan["checkpoint_interval_s"])
        workdir = self.node_dir / "work" / f"run-{plan['run_id']}-attempt-{plan['attempt']}"
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True, mode=0o700)
        try:
            fetched = {item["field"]: self.fetch(item["sha256"], item["size"]) for item in plan["inputs"]}
        except Unreachable as exc:
            print(f"giving up: could not fetch the job's inputs: {exc}", flush=True)
            return UNREACHABLE_EXIT
        except (ChannelError, OSError) as exc:
            print(f"could not fetch the job's inputs: {exc}", flush=True)
            return 1
        resume = fetched.pop(RESUME_INPUT, None)
        if resume is not None:
            shutil.copyfile(resume, workdir / RESUME_STATE.name)
            self.shipped_step = int(plan["resume_step"])
            print(f"resuming from the checkpoint at step {plan['resume_step']}", flush=True)
        if self.sandbox is not None:  # the cache is out of the sandbox's sight: the job gets copies in its folder
            fetched = self._copy_in(fetched, workdir / "inputs")
        inputs = {name: str(path) for name, path in fetched.items()}
        command = [sys.executable, "-m", plan["module"], "--config", json.dumps(plan["config"]),
                   "--output", str(workdir), "--inputs", json.dumps(inputs)]
        env = self.job_environment(plan)
        if self.sandbox is not None:
            self.sandbox.prepare(workdir)
            command, env = self.sandbox.wrap(command, workdir), self.sandbox.environment(workdir, env)
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env)
        reader = threading.Thread(target=self.output.read, args=(child.stdout,), daemon=True)
        reader.start()
        gave_up = self.follow(child, workdir)
        reader.join(timeout=30)
        if gave_up is not None:
            return gave_up
        ended = time.monotonic()
        code = child.returncode
        # A worker of a run trained by several nodes whose share is done while another makes the outputs.
        handed_over = code == 0 and (workdir / WORKER_DONE).is_file()
        stopped = (self.signalled or handed_over) and code == 0
        try:
            problems: list[str] = []
            if code != 0 or stopped:
                self.ship_checkpoint(workdir, force=True)
            if code == 0 and not stopped:
                problems = self.send_outputs(workdir, plan["kind"])
            ending = ("its share of the rounds is done; another worker makes the outputs" if handed_over
                      else "stopped on request" if stopped else f"the job exited with {code}")
            self.send_log(f"[runner] {ending}\n")
            self.channel.patiently(lambda: self.channel.once("POST", "/api/job/end", json={
                "exit_code": max(-255, min(255, code)), "stopped": stopped, "problems": problems[:50],
                "ended_s_ago": round(time.monotonic() - ended, 1)}))
        except Unreachable as exc:
            print(f"giving up: could not report the end to the observatory: {exc}", flush=True)
            return UNREACHABLE_EXIT
        except ChannelError as exc:
            print(f"could not report the end to the observatory: {exc}", flush=True)
            return code or 1
        if code == 0 and not problems:
            shutil.rmtree(workdir, ignore_errors=True)
        return code if code else (1 if problems else 0)

    @staticmethod
    def _copy_in(fetched: dict[str, Path], folder: Path) -> dict[str, Path]:
        folder.mkdir(mode=0o755)
        copied = {}
        for index, (name, path) in enumerate(sorted(fetched.items())):
            copied[name] = folder / f"{index}-{path.name}"
            shutil.copyfile(path, copied[name])
        return copied

    def job_environment(self, plan: dict[str, Any]) -> dict[str, str]:
        """The job's environment: a job that trains in rounds talks to the coordinator itself, over this attempt's
        channel (the same token and machine credential); no other job is handed them."""
        env = {k: v for k, v in os.environ.items() if k not in ("OBSERVATORY_JOB_TOKEN", "OBSERVATORY_MACHINE_TOKEN")}
        if plan["kind"] == "train" and int(plan["config"].get("workers") or 1) > 1:
            env["OBSERVATORY_JOB_URL"] = str(self.channel.client.base_url)
            env["OBSERVATORY_JOB_TOKEN"] = self.channel.token
            if self.channel.machine_token:
                env["OBSERVATORY_MACHINE_TOKEN"] = self.channel.machine_token
        return env

    def follow(self, child: subprocess.Popen, workdir: Path) -> int | None:
        """While the job runs: send its log and checkpoints, and stop it when asked. An outage of the observatory
        does not stop it: the calls wait (backing off) while it trains on, for up to the channel's patience for the
        API, for as long as the job runs for the archive.
        Returns an exit code when the runner gives up on the job, None once the job has ended by itself."""
        terminated = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: terminated.set())
        next_try = 0.0
        began = time.monotonic()
        while child.poll() is None:
            time.sleep(0.2 if terminated.is_set() else SEND_EVERY_S)
            if self.time_limit_s is not None and time.monotonic() - began > self.time_limit_s:
                child.kill()  # the end is reported as any other, so that the unit goes to another at once
                child.wait()
                self.unsent += f"[runner] stopped: the unit ran past its time limit of {self.time_limit_s:g} s\n"
                return None
            if not self.signalled and (self.stop_asked or terminated.is_set()):
                child.send_signal(signal.SIGTERM)  # it saves its state at the next step and exits
                self.signalled = True
            if terminated.is_set() or time.monotonic() < next_try:
                continue  # Ray's grace period is short: no calls until the job has stopped
            try:
                self.send_log(patient=False)
                self.ship_checkpoint(workdir, patient=False)
            except Unreachable as exc:
                wait = self.channel.next_wait_s(exc) or self.channel.backoff_s[-1]
                # Only an API away past the patience ends the job: while the archive alone is away, the job trains
                # on (its log still arrives) and its checkpoints wait for the archive's return.
                if exc.door == "api" and self.channel.away_s("api") >= self.channel.patience_s:
                    return self._give_up(child, f"{exc}; away for {self.channel.away_s(exc.door):.0f} s",
                                         UNREACHABLE_EXIT)
                print(f"[runner] {exc}; the job goes on, trying again in {wait:.0f} s", flush=True)
                next_try = time.monotonic() + wait
            except ChannelError as exc:
                return self._give_up(child, str(exc), 1)
        return None

    @staticmethod
    def _give_up(child: subprocess.Popen, why: str, code: int) -> int:
        child.kill()
        child.wait()
        print(f"giving up: {why}", flush=True)
        return code


def node_dir() -> Path:
    configured = os.environ.get("OBSERVATORY_NODE_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "commons-observatory"


def claimed_token(url: str, submission: str, machine_token: str, patience_s: float) -> str:
    """The attempt's token, asked for with the machine's own credential (it never travels through Ray)."""
    channel = Channel(url, machine_token, patience_s=patience_s)
    return channel.call("POST", "/api/job/claim", json={"submission_id": submission}).json()["token"]


def machine_token() -> str | None:
    path = node_dir() / MACHINE_TOKEN_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def main() -> int:
    os.umask(0o077)
    url, token = os.environ.get("OBSERVATORY_JOB_URL"), os.environ.get("OBSERVATORY_JOB_TOKEN")
    submission, machine = os.environ.get("OBSERVATORY_JOB_SUBMISSION"), machine_token()
    patience = float(os.environ.get("OBSERVATORY_JOB_PATIENCE_S") or PATIENCE_S)
    if url and not token and submission:
        if machine is None:
            print(f"this node has no machine credential ({node_dir() / MACHINE_TOKEN_FILE}): join it with "
                  "`observatory pool join`", flush=True)
            return REFUSED_EXIT
        try:
            token = first_contact(lambda: claimed_token(url, submission, machine, patience),
                                  "the observatory would not hand this machine the attempt's token")
        except RunnerExit as stop:
            print(stop, flush=True)
            return stop.code
    if not url or not token:
        print("jobs.runner needs OBSERVATORY_JOB_URL, and OBSERVATORY_JOB_TOKEN or OBSERVATORY_JOB_SUBMISSION (the "
              "scheduler sets them)")
        return 2
    attempt = Attempt(Channel(url, token, patience_s=patience, machine_token=machine if submission else None),
                      node_dir())
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
