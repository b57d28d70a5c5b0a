"""`observatory pool join` as a loop, with the portal and Ray stood in for: it waits for its run before leaving,
joins again when the pool's token is rotated or its worker drops out, and stops on a refusal."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from jobs.credentials import pool_token_id
from jobs.version import installed_version
from observatory import join as joining

TOKEN = "ray-token-1"


class Portal:
    """The portal as a script: each call takes the next answer for its path (an exception is raised)."""

    def __init__(self, answers: dict[str, list[Any]]) -> None:
        self.answers = answers
        self.calls: list[str] = []
        self.token = "mc_machine"

    def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        self.calls.append(path)
        answer = self.answers[path].pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def orders(**changes: Any) -> dict[str, Any]:
    return {"machine_id": 1, "state": "approved", "paused": False, "draining": False, "leave": False, "message": "",
            "busy": False, "pool_token_id": pool_token_id(TOKEN), **changes}


def grant(token: str = TOKEN) -> dict[str, Any]:
    return {"machine_id": 1, "head_address": "10.0.0.1:6380", "ray_token": token, "labels": {"machine": "1"},
            "num_cpus": 1, "num_gpus": 0, "release": installed_version()}


class Node:
    def __init__(self, exits_after: int | None = None) -> None:
        self.polls, self.exits_after, self.stopped = 0, exits_after, False
        self.process = SimpleNamespace(poll=self._poll, returncode=1)
        self.log_path = Path("/nonexistent/worker.log")

    def _poll(self) -> int | None:
        self.polls += 1
        return 1 if self.exits_after is not None and self.polls > self.exits_after else None

    def stop(self, timeout: float = 3) -> None:
        self.stopped = True


def quiet() -> Console:
    return Console(file=open("/dev/null", "w"))  # noqa: SIM115


def test_a_machine_told_to_leave_waits_for_its_run_to_save_its_checkpoint() -> None:
    told = orders(leave=True, state="revoked", message="no longer trusted")
    portal = Portal({"/pool/orders": [orders(), {**told, "busy": True}, {**told, "busy": True}, told]})
    assert joining._stay(portal, Node(), quiet(), 0.001, pool_token_id(TOKEN)) == 0
    assert portal.calls == ["/pool/orders"] * 4


def test_a_machine_left_busy_past_the_grace_leaves_anyway(monkeypatch) -> None:
    monkeypatch.setattr(joining, "LEAVE_GRACE_S", 0.05)
    told = orders(leave=True, state="left", busy=True)
    portal = Portal({"/pool/orders": [told] * 1000})
    assert joining._stay(portal, Node(), quiet(), 0.01, pool_token_id(TOKEN)) == 0
    assert 2 <= len(portal.calls) < 1000


def test_a_rotated_token_or_a_dropped_worker_means_joining_again() -> None:
    rotated = Portal({"/pool/orders": [orders(), orders(pool_token_id=pool_token_id("ray-token-2"))]})
    assert joining._stay(rotated, Node(), quiet(), 0.001, pool_token_id(TOKEN)) == joining.ROTATED
    dropped = Portal({"/pool/orders": [orders(), orders(), orders()]})
    assert joining._stay(dropped, Node(exits_after=2), quiet(), 0.001, pool_token_id(TOKEN)) == joining.DROPPED


def test_the_join_loop_rejoins_with_the_new_token_and_a_refusal_ends_it(monkeypatch, tmp_path: Path) -> None:
    started: list[str] = []
    nodes = [Node(exits_after=1), Node()]

    def fake_worker(**kwargs: Any) -> Node:
        started.append(kwargs["token"])
        return nodes[len(started) - 1]

    monkeypatch.setattr(joining, "join_worker", fake_worker)
    monkeypatch.setattr(joining, "measure", lambda: {"gpu_count": 0, "cpus": 1, "memory_gb": 1.0,
                                                    "release": installed_version()})
    unreachable = joining.JoinError("cannot reach the portal at http://portal: refused")
    portal = Portal({
        "/pool/join": [grant(), unreachable, grant("ray-token-2"), joining.JoinError("machine 1 is revoked", 403)],
        "/pool/orders": [orders(), orders(pool_token_id=pool_token_id("ray-token-2")),
                         orders(pool_token_id=pool_token_id("ray-token-3"))]})
    # The first worker drops out; the portal is away a moment, then grants a new token, which the second worker
    # runs with until the orders name yet another; that grant is refused, and the loop ends with the reason.
    with pytest.raises(joining.JoinError, match="revoked"):
        joining.join(portal, console=quiet(), node_dir=tmp_path, temp_dir=tmp_path, node_ip=None, port_base=None,
                     poll_s=0.001)
    assert started == [TOKEN, "ray-token-2"] and all(node.stopped for node in nodes)


def test_a_worker_that_does_not_start_is_said_plainly_and_tried_again(monkeypatch, tmp_path: Path) -> None:
    """Ray's raylet gives up when its dashboard agent starts slowly: the owner reads why in one line (not Ray's
    traceback), and the loop joins again after a wait, on loopback when the head is on this host."""
    log = tmp_path / "worker.log"
    log.write_text("an earlier join: Address already in use\n")
    joined: list[dict[str, Any]] = []
    nodes = [Node(exits_after=1), Node()]

    def fake_worker(**kwargs: Any) -> Node:
        joined.append(kwargs)
        node = nodes[len(joined) - 1]
        node.log_path = log
        if len(joined) == 1:  # what this start adds to the log (appended to across joins)
            with log.open("a") as handle:
                handle.write("Traceback (most recent call last):\n  ...\nException: The current node timed out "
                             "during startup. This could happen because some of the raylet failed to startup.\n")
        return node

    waits: list[float] = []
    monkeypatch.setattr(joining, "join_worker", fake_worker)
    monkeypatch.setattr(joining, "worker_log_path", lambda temp_dir, base_port: log)
    monkeypatch.setattr(joining.time, "sleep", waits.append)
    monkeypatch.setattr(joining, "measure", lambda: {"gpu_count": 0, "cpus": 1, "memory_gb": 1.0,
                                                    "release": installed_version()})
    local = {**grant(), "head_address": "127.0.0.1:6390"}
    portal = Portal({"/pool/join": [local, local],
                     "/pool/orders": [orders(), orders(leave=True, state="left")]})
    console = Console(record=True, width=200, file=open("/dev/null", "w"))  # noqa: SIM115
    assert joining.join(portal, console=console, node_dir=tmp_path, temp_dir=tmp_path, node_ip=None,
                        port_base=None, poll_s=15) == 0
    said = console.export_text()
    assert "the Ray worker exited (1): Ray's worker did not start in time" in said
    assert "Address already in use" not in said and "Traceback" not in said  # this start's cause alone, in words
    assert "the Ray worker did not start; joining again in 30 s" in said and 30 in waits
    assert [kw["node_ip"] for kw in joined] == ["127.0.0.1", "127.0.0.1"]


def test_where_a_worker_joins_from() -> None:
    assert joining.loopback_ip("127.0.0.1:6390") == "127.0.0.1"
    assert joining.loopback_ip("localhost:6390") == "127.0.0.1"
    assert joining.loopback_ip("10.8.0.1:6390") is None  # elsewhere: Ray's guess, or --node-ip
