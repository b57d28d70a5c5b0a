"""Hosts of their own for pool tests: each one a Linux network namespace with one address on a private bridge.

The bridge sits in a namespace of its own as well, so nothing is added to this machine's network: every address
lives inside namespaces the harness made, and leaving removes them (and stops whatever still runs in them).
Needs root (CI runs as root); `available()` says whether this machine allows it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

DEVICE = "eth0"
_CLONE_NEWNET = 0x40000000
T = TypeVar("T")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def available() -> str | None:
    """None when namespaces can be made here, else why not."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    probe = f"obprobe{os.getpid()}"
    made = _ip("netns", "add", probe, check=False)
    if made.returncode != 0:
        return f"ip netns add failed: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    """One namespace on the bridge: `address` is its only address besides its own loopback."""

    namespace: str
    address: str

    def command(self, args: list[str]) -> list[str]:
        """`args` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *args]

    def run(self, args: list[str], **kwargs) -> subprocess.CompletedProcess:  # type: ignore[no-untyped-def]
        return subprocess.run(self.command(args), **{"capture_output": True, "text": True, **kwargs})

    def popen(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        """A long-running process in this host, its output in `log` (private), in a process group of its own."""
        handle = os.fdopen(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
        return subprocess.Popen(self.command(args), stdout=handle, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True)

    def cut(self) -> None:
        """Take its link down, as a pulled cable would: nothing reaches it or leaves it."""
        _ip("-n", self.namespace, "link", "set", DEVICE, "down")

    def restore(self) -> None:
        _ip("-n", self.namespace, "link", "set", DEVICE, "up")

    def call(self, function: Callable[..., T], *args: object) -> T:
        """`function(*args)` in a thread of this process that entered the host's namespace: every socket it opens
        is the host's (an HTTP call made from the host, without a process of its own)."""
        box: dict[str, object] = {}

        def inside() -> None:
            try:
                descriptor = os.open(f"/run/netns/{self.namespace}", os.O_RDONLY)
                try:
                    if ctypes.CDLL(None, use_errno=True).setns(descriptor, _CLONE_NEWNET) != 0:
                        raise OSError(ctypes.get_errno(), f"setns into {self.namespace} failed")
                finally:
                    os.close(descriptor)
                box["value"] = function(*args)
            except BaseException as exc:  # handed to the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=inside, daemon=True)
        thread.start()
        thread.join()
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["value"]  # type: ignore[return-value]

    def reaches(self, address: str, port: int, timeout: float = 3) -> bool:
        """Whether a TCP connection from this host to address:port is accepted."""
        def connect() -> bool:
            with socket.socket() as sock:
                sock.settimeout(timeout)
                return sock.connect_ex((address, port)) == 0

        return self.call(connect)

    def pids(self) -> list[int]:
        done = _ip("netns", "pids", self.namespace, check=False)
        return [int(p) for p in done.stdout.split()]


@contextlib.contextmanager
def lan(names: list[str], behind: dict[str, str] | None = None) -> Iterator[dict[str, Host]]:
    """Hosts by name on one private /24, and hosts `behind` one of them (name: that host's name) reached over a
    link of their own from it alone (its address is on that link). On leaving, every process left in them is
    killed and they are removed."""
    tag = f"ob{os.getpid() % 100000}"
    subnet = f"10.213.{os.getpid() % 250}"
    private = f"10.214.{os.getpid() % 250}"
    switch = f"{tag}-lan"
    made: list[str] = []
    hosts: dict[str, Host] = {}
    try:
        _ip("netns", "add", switch)
        made.append(switch)
        _ip("-n", switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", switch, "link", "set", "br0", "up")
        for index, name in enumerate(names, start=1):
            namespace, port = f"{tag}-{name}", f"{tag}p{index}"
            _ip("netns", "add", namespace)
            made.append(namespace)
            _ip("link", "add", port, "type", "veth", "peer", "name", DEVICE, "netns", namespace)
            _ip("link", "set", port, "netns", switch)
            _ip("-n", switch, "link", "set", port, "master", "br0")
            _ip("-n", switch, "link", "set", port, "up")
            address = f"{subnet}.{index}"
            _ip("-n", namespace, "addr", "add", f"{address}/24", "dev", DEVICE)
            _ip("-n", namespace, "link", "set", DEVICE, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            hosts[name] = Host(namespace, address)
        for index, (name, front) in enumerate((behind or {}).items()):
            namespace = f"{tag}-{name}"
            _ip("netns", "add", namespace)
            made.append(namespace)
            near, far = f"{private}.{4 * index + 1}", f"{private}.{4 * index + 2}"
            _ip("-n", hosts[front].namespace, "link", "add", f"to-{name}"[:15], "type", "veth", "peer", "name",
                DEVICE, "netns", namespace)
            _ip("-n", hosts[front].namespace, "addr", "add", f"{near}/30", "dev", f"to-{name}"[:15])
            _ip("-n", hosts[front].namespace, "link", "set", f"to-{name}"[:15], "up")
            _ip("-n", namespace, "addr", "add", f"{far}/30", "dev", DEVICE)
            _ip("-n", namespace, "link", "set", DEVICE, "up")
            _ip("-n", namespace, "link", "set", "lo", "up")
            hosts[name] = Host(namespace, far)
        yield hosts
    finally:
        for namespace in reversed(made):
            _kill_all(Host(namespace, ""))
            _ip("netns", "del", namespace, check=False)


def wait_for(condition: Callable[[], object], timeout: float, what: str, every: float = 0.5) -> object:
    """Poll until `condition()` is truthy and return it; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"{what}: not within {timeout:.0f} s")


def _kill_all(host: Host) -> None:
    """SIGKILL whatever still runs in the host: only this harness's processes live in its namespaces."""
    deadline = time.monotonic() + 10
    while (pids := host.pids()) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
