"""A private Ray cluster on this machine: its own ports, temp dir and auth token, stopped by the PIDs we started.

`ray stop` would stop every Ray process on the host, so it is never used; the head runs with `--block` in its
own process group, and stopping it signals that group only.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx


def ray_ports(base: int) -> dict[str, int]:
    """Every port a head node opens, derived from one base so that two clusters never collide."""
    return {
        "port": base, "ray-client-server-port": base + 1, "node-manager-port": base + 2,
        "object-manager-port": base + 3, "dashboard-agent-listen-port": base + 4,
        "dashboard-agent-grpc-port": base + 5, "runtime-env-agent-port": base + 6, "metrics-export-port": base + 7,
        "min-worker-port": base + 100, "max-worker-port": base + 199,
    }


def load_or_make_token(path: Path) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip()


def ray_env(token: str) -> dict[str, str]:
    """The environment for every Ray process of ours: token authentication on, no usage reporting."""
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0"}


def _ray_executable() -> str:
    candidate = Path(sys.executable).with_name("ray")
    return str(candidate) if candidate.exists() else "ray"


@dataclass
class RayNode:
    """One `ray start --block` process group we own."""

    process: subprocess.Popen
    temp_dir: Path
    log_path: Path
    gcs_address: str
    dashboard_url: str | None = None
    token: str = field(default="", repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self, timeout: float = 10) -> None:
        """Signal our process group only: `ray start --block` then stops the processes it started."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
            except ProcessLookupError:
                pass
        # Workers that outlived the head are still in our group; nothing outside it is touched.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if the process that started Ray dies, so no head outlives it."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _spawn(args: list[str], token: str, log_path: Path) -> subprocess.Popen:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    return subprocess.Popen([_ray_executable(), "start", "--block", "--disable-usage-stats", *args],
                            env=ray_env(token), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=_die_with_parent if sys.platform == "linux" else None)


def start_head(*, base_port: int, dashboard_port: int, temp_dir: Path, token: str, num_cpus: int | None = None,
               num_gpus: int | None = None, timeout: float = 120) -> RayNode:
    """Start a head node on loopback and wait until its job API answers."""
    temp_dir.mkdir(parents=True, exist_ok=True)
    args = ["--head", "--node-ip-address", "127.0.0.1", "--temp-dir", str(temp_dir),
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port)]
    args += [f"--{name}={value}" for name, value in ray_ports(base_port).items()]
    if num_cpus is not None:
        args += ["--num-cpus", str(num_cpus)]
    if num_gpus is not None:
        args += ["--num-gpus", str(num_gpus)]
    log_path = temp_dir / f"head-{base_port}.log"
    node = RayNode(_spawn(args, token, log_path), temp_dir, log_path, f"127.0.0.1:{base_port}",
                   f"http://127.0.0.1:{dashboard_port}", token)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise RuntimeError(f"ray head exited with {node.process.returncode}; see {log_path}")
        try:
            response = httpx.get(f"{node.dashboard_url}/api/jobs/", timeout=2,
                                 headers={"Authorization": f"Bearer {token}"})
            if response.status_code == 200:
                return node
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    node.stop()
    raise RuntimeError(f"ray head did not answer within {timeout:.0f}s; see {log_path}")


def join_worker(*, head_address: str, base_port: int, temp_dir: Path, token: str, num_cpus: int = 1,
                num_gpus: int | None = None, resources: str | None = None) -> RayNode:
    """Join a worker node to a head (loopback in tests; an owner's machine in production)."""
    ports = {k: v for k, v in ray_ports(base_port).items() if k not in ("port", "ray-client-server-port")}
    args = ["--address", head_address, "--node-ip-address", "127.0.0.1", "--num-cpus", str(num_cpus)]
    args += [f"--{name}={value}" for name, value in ports.items()]
    if num_gpus is not None:
        args += ["--num-gpus", str(num_gpus)]
    if resources:
        args += ["--resources", resources]
    log_path = temp_dir / f"worker-{base_port}.log"
    return RayNode(_spawn(args, token, log_path), temp_dir, log_path, head_address, None, token)
