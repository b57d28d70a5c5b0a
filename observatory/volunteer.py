"""`observatory volunteer`: a volunteer's agent. It never joins Ray and holds no secret but its machine's own
credential: it measures the machine, asks the portal for work over HTTPS (a long poll, backing off when the portal is
away), runs each unit in the sandbox (jobs.sandbox) with the job runner's own code, and sends the outputs back
through the job channel with a token scoped to that unit. The portal counts them once another volunteer's agree.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from jobs.runner import Attempt, Channel
from jobs.sandbox import Sandbox
from observatory.hardware import measure

CREDENTIAL_FILE = "credential"
WAIT_S = 20  # each ask waits this long at the portal for a unit
BACKOFF_S = (2, 4, 8, 15, 30, 60)  # between asks while the portal cannot be reached
UNIT_TIME_LIMIT_S = 6 * 3600.0


class AgentError(Exception):
    """Why the agent stops, in words the volunteer can act on."""


def store_credential(folder: Path, credential: str) -> Path:
    """Keep the credential in the agent's folder, readable by its user alone from the moment it exists."""
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(folder, 0o700)
    path = folder / CREDENTIAL_FILE
    fresh = path.with_name(CREDENTIAL_FILE + ".new")
    fresh.unlink(missing_ok=True)
    descriptor = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(credential.strip() + "\n")
    os.replace(fresh, path)
    return path


def read_credential(folder: Path) -> str:
    path = folder / CREDENTIAL_FILE
    if not path.is_file():
        raise AgentError(f"no credential in {path}: copy the volunteer command from your machine's page in the "
                         "portal (it carries the credential once, and the agent keeps it here)")
    if path.stat().st_mode & 0o077:
        raise AgentError(f"{path} may be read by others: `chmod 600 {path}`, or show a new credential in the portal "
                         "(the old one may have been seen)")
    return path.read_text().strip()


@dataclass
class Portal:
    url: str
    credential: str

    def call(self, path: str, body: dict[str, Any] | None = None, params: dict[str, Any] | None = None,
             timeout: float = 30) -> dict[str, Any]:
        try:
            response = httpx.post(f"{self.url.rstrip('/')}/api{path}", json=body or {}, params=params,
                                  timeout=timeout, headers={"Authorization": f"Bearer {self.credential}"})
        except httpx.HTTPError as exc:
            raise ConnectionError(f"cannot reach the portal at {self.url} ({exc.__class__.__name__})") from None
        if response.status_code in (401, 403):
            raise AgentError(f"the portal refused this machine ({response.status_code}): {_detail(response)}. If "
                             "you revoked or replaced its credential, run the command shown on its page again")
        if response.status_code >= 500 or response.status_code == 429:
            raise ConnectionError(f"the portal is unavailable ({response.status_code})")
        if response.status_code >= 400:
            raise AgentError(f"the portal refused ({response.status_code}): {_detail(response)}")
        return response.json()


def _detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail"))[:300]
    except ValueError:
        return response.text[:300]


def serve(portal: Portal, *, folder: Path, console: Console, sandbox: Sandbox | None, once: bool = False) -> int:
    """Ask for work and run it until the portal says to leave (or, with `once`, after one unit)."""
    welcome = _patiently(console, lambda: portal.call("/agent/hello", measure()))
    console.print(f"volunteering machine {welcome['machine_id']} ({welcome['name']}) to {portal.url}; "
                  f"{'each job runs in a sandbox' if sandbox else 'jobs run WITHOUT a sandbox'}; Ctrl-C stops")
    restarted, waited_note = True, False
    while True:
        params = {"wait_s": WAIT_S, "restarted": restarted}
        orders = _patiently(console, lambda: portal.call("/agent/work", params=params,  # noqa: B023 (called now)
                                                         timeout=WAIT_S + 30))
        restarted = False
        if orders["leave"]:
            console.print(f"the portal says this machine is {orders['state']}: leaving"
                          + (f" ({orders['message']})" if orders["message"] else ""))
            return 0
        unit = orders.get("unit")
        if unit is None:
            if not waited_note:
                console.print("paused by its owner: waiting" if orders["paused"] else "waiting for work…")
                waited_note = True
            if orders["paused"]:
                time.sleep(float(welcome.get("poll_s", 5)))
            continue
        waited_note = False
        code = run_unit(portal, unit, folder=folder, console=console, sandbox=sandbox)
        if once:
            return code


def run_unit(portal: Portal, unit: dict[str, Any], *, folder: Path, console: Console,
             sandbox: Sandbox | None) -> int:
    console.print(f"[bold]unit[/bold]: run {unit['run_id']} ({unit['kind']}), copy {unit['attempt']}")
    channel = Channel(portal.url, unit["token"], machine_token=portal.credential)
    stopping = signal.getsignal(signal.SIGTERM)  # the runner takes SIGTERM over while its job runs
    try:
        code = Attempt(channel, folder, sandbox=sandbox, time_limit_s=UNIT_TIME_LIMIT_S,
                       echo=ProgressEcho(console, f"run {unit['run_id']}")).run()
    finally:
        channel.client.close()
        signal.signal(signal.SIGTERM, stopping)
    console.print(f"unit of run {unit['run_id']} done (exit {code}); its result counts once validated")
    return code


class ProgressEcho:
    """The job's lines as the volunteer reads them: its progress records as a percentage each tenth of the way (and
    each new phase), its checkpoints as one line, the rest as printed."""

    def __init__(self, console: Console, label: str) -> None:
        self.console, self.label = console, label
        self.shown: tuple[str, int] | None = None

    def __call__(self, line: str, parsed: tuple[str, dict[str, Any]] | None) -> None:
        if parsed is None:
            self.console.print(line.rstrip("\n"), markup=False, highlight=False)
        elif parsed[0] == "progress":
            record = parsed[1]
            phase, fraction = str(record.get("phase") or "working"), float(record.get("fraction") or 0.0)
            shown = (phase, int(fraction * 10))
            if shown != self.shown:
                self.shown = shown
                self.console.print(f"  {self.label}: {phase} {fraction:.0%}", markup=False, highlight=False)
        elif parsed[0] == "checkpoint":
            self.console.print(f"  {self.label}: checkpoint at step {parsed[1].get('step')}", markup=False,
                               highlight=False)


def _patiently(console: Console, call: Any) -> dict[str, Any]:
    """`call()`, tried again with backoff while the portal cannot be reached."""
    tries = 0
    while True:
        try:
            return call()
        except ConnectionError as exc:
            wait = BACKOFF_S[min(tries, len(BACKOFF_S) - 1)]
            console.print(f"{exc}; trying again in {wait} s")
            time.sleep(wait)
            tries += 1
