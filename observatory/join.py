"""`observatory pool join`: on an owner's machine, measure it, ask the portal to let it in, start a Ray worker with
what was measured, and keep calling in until the portal says to leave (the owner took it out, an admin revoked it,
or it drained); a worker that dropped out, or a rotated pool token, makes it join again."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from jobs.credentials import pool_token_id
from jobs.version import installed_version
from observatory.hardware import measure
from scheduler.local_ray import RayNode, join_worker, worker_log_path

POLL_S = 15.0
# A worker that keeps dropping out waits longer before each new join, up to this.
REJOIN_MAX_WAIT_S = 300.0
DROPPED = "the Ray worker dropped out of the pool"
NOT_STARTED = "the Ray worker did not start"
STARTUP_S = 120.0  # a worker that stops sooner than this after starting never joined
ROTATED = "the pool's token was rotated"
# A machine told to leave while a run is live on it waits this long for the run to save its checkpoint and move.
LEAVE_GRACE_S = 120.0


class JoinError(Exception):
    """A reason the machine cannot join, in words its owner can act on."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Portal:
    url: str
    token: str

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = httpx.post(f"{self.url.rstrip('/')}/api{path}", json=body, timeout=30,
                                  headers={"Authorization": f"Bearer {self.token}"})
        except httpx.HTTPError as exc:
            raise JoinError(f"cannot reach the portal at {self.url} ({exc}): is it running, and is this the "
                            "address its machine page shows?") from None
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail")
            except ValueError:
                detail = response.text[:300]
            raise JoinError(f"the portal refused ({response.status_code}): {detail}", response.status_code)
        return response.json()


def join(portal: Portal, *, console: Console, node_dir: Path, temp_dir: Path, node_ip: str | None,
         port_base: int | None, poll_s: float = POLL_S) -> int:
    """Join and stay until told to leave; returns the exit status. A worker that Ray dropped (the link went away
    for longer than Ray's health checks allow) or a pool token the operator rotated makes the machine join again,
    for as long as the portal keeps it approved."""
    measured = measure()
    what = (f"{measured['gpu_count']} × {measured['gpu_model']} ({measured['vram_gb']:g} GB, CUDA "
            f"{measured['cuda_capability']})" if measured["gpu_count"] else "no GPU (joins as CPU-only)")
    console.print(f"measured: {what}; {measured['cpus']} CPUs, {measured['memory_gb']:g} GB memory; "
                  f"release {measured['release']}")
    grant = _grant(portal, measured)
    wait = poll_s
    while True:
        labels = grant["labels"]
        console.print(f"machine {grant['machine_id']} joins the pool at {grant['head_address']} with labels "
                      + ", ".join(f"{k}={v}" for k, v in labels.items()))
        log_start = _size(worker_log_path(temp_dir, port_base))
        node = join_worker(head_address=grant["head_address"], base_port=port_base, temp_dir=temp_dir,
                           token=grant["ray_token"], num_cpus=grant["num_cpus"], num_gpus=grant["num_gpus"],
                           node_dir=node_dir, labels=labels, node_ip=node_ip or loopback_ip(grant["head_address"]),
                           machine_token=portal.token)
        joined = time.monotonic()
        try:
            outcome = _stay(portal, node, console, poll_s, pool_token_id(grant["ray_token"]), log_start)
        finally:
            node.stop(timeout=40)  # a job on it gets Ray's stop grace to save and ship its checkpoint
            console.print("the Ray worker stopped; this machine is out of the pool")
        if isinstance(outcome, int):
            return outcome
        if outcome == DROPPED and time.monotonic() - joined < STARTUP_S:
            outcome = NOT_STARTED
        # A worker that lasted a while rejoins at once; one that keeps dropping out waits longer each time.
        wait = poll_s if time.monotonic() - joined > REJOIN_MAX_WAIT_S else min(wait * 2, REJOIN_MAX_WAIT_S)
        console.print(f"{outcome}; joining again" + ("" if outcome == ROTATED else f" in {wait:g} s"))
        if outcome != ROTATED:
            time.sleep(wait)
        grant = _grant(portal, measured, patient=True, console=console, poll_s=poll_s)


def _grant(portal: Portal, measured: dict[str, Any], *, patient: bool = False, console: Console | None = None,
           poll_s: float = POLL_S) -> dict[str, Any]:
    """The portal's leave to join (the head's address, the token, the labels). When `patient`, a portal that
    cannot be reached is asked again until it answers; a refusal always ends the join."""
    shown = None
    while True:
        try:
            grant = portal.call("/pool/join", measured)
            break
        except JoinError as exc:
            if not patient or exc.status is not None and exc.status < 500:
                raise
            if console is not None and shown != str(exc):
                console.print(f"[yellow]{exc}[/yellow]; trying again every {poll_s:g} s")
                shown = str(exc)
            time.sleep(poll_s)
    if grant["release"] != installed_version():
        raise JoinError(f"the pool runs release {grant['release']} and this machine has {installed_version()}: "
                        f"install commons-observatory=={grant['release']} and join again")
    return grant


def _stay(portal: Portal, node: RayNode, console: Console, poll_s: float, joined_with: str,
          log_start: int = 0) -> int | str:
    """Call in until told to leave (returns the exit status) or until the machine must join again (returns why)."""
    shown = None
    leaving: float | None = None
    with console.status("in the pool; Ctrl-C takes this machine out") as status:
        while True:
            if node.process.poll() is not None:
                console.print(f"[red]the Ray worker exited ({node.process.returncode}): "
                              f"{why_ray_stopped(node.log_path, log_start)}[/red] (its log: {node.log_path})")
                return DROPPED
            try:
                orders = portal.call("/pool/orders", {})
            except JoinError as exc:
                if exc.status == 401:  # the join command was shown again: a newer token replaced this one
                    console.print(f"{exc}; this machine's token was replaced, so this worker leaves (run the "
                                  "newest join command to join again)")
                    return 1
                if shown != str(exc):
                    console.print(f"[yellow]{exc}[/yellow]; trying again every {poll_s:g} s")
                    shown = str(exc)
            else:
                if orders["leave"]:
                    if orders.get("busy") and leaving is None:
                        leaving = time.monotonic()
                        status.update("told to leave: waiting for the run here to save its checkpoint")
                    if not orders.get("busy") or time.monotonic() - leaving > LEAVE_GRACE_S:
                        console.print(f"the portal says this machine is {orders['state']}"
                                      + (f": {orders['message']}" if orders["message"] else "") + "; leaving")
                        return 0
                    time.sleep(poll_s)
                    continue
                if orders.get("pool_token_id") not in (None, joined_with):
                    return ROTATED
                now = "paused by you" if orders["paused"] else "draining" if orders["draining"] else "taking work"
                if now != shown:
                    status.update(f"in the pool, {now}; Ctrl-C takes this machine out")
                    shown = now
            time.sleep(poll_s)


def loopback_ip(head_address: str) -> str | None:
    """127.0.0.1 for a head on this host's loopback (Ray would otherwise guess another interface's address, which
    the head cannot reach); None (Ray's guess) for a head elsewhere."""
    host = head_address.rsplit(":", 1)[0].strip("[]")
    return "127.0.0.1" if host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.") else None


# What Ray's own messages mean, in words an owner can act on (the log keeps the whole story).
RAY_CAUSES = [
    ("timed out during startup", "Ray's worker did not start in time (on a busy machine its dashboard agent can be "
                                 "slower than the fixed wait Ray allows it)"),
    ("Timed out waiting for file", "Ray's worker did not start in time (its dashboard agent was slower than Ray "
                                   "allows)"),
    ("Unable to connect to GCS", "the pool's Ray head could not be reached from this machine"),
    ("Failed to connect to GCS", "the pool's Ray head could not be reached from this machine"),
    ("Address already in use", "a port Ray needs is taken on this machine (choose others with --port-base)"),
    ("authentication", "the pool's Ray head refused this machine's token"),
]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def why_ray_stopped(log_path: Path, start: int = 0) -> str:
    """One line on why the Ray worker stopped, from what its log gained since `start`."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(max(start, _size(log_path) - 20000))
            text = handle.read().decode(errors="replace")
    except OSError:
        return "its log could not be read"
    for needle, meaning in RAY_CAUSES:
        if needle.lower() in text.lower():
            return meaning
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return f"Ray said: {lines[-1][:300]}" if lines else "Ray said nothing"
