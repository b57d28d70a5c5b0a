"""A private Ray cluster on this machine: its own ports, temp dir and auth token, stopped by the PIDs we started.

`ray stop` would stop every Ray process on the host, so it is never used; the head runs with `--block` in its
own process group, and stopping it signals that group only.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from service.files import private_dir


def ray_ports(base: int) -> dict[str, int]:
    """Every port a head node opens, derived from one base so that two clusters never collide."""
    return {
        "port": base, "ray-client-server-port": base + 1, "node-manager-port": base + 2,
        "object-manager-port": base + 3, "dashboard-agent-listen-port": base + 4,
        "dashboard-agent-grpc-port": base + 5, "runtime-env-agent-port": base + 6, "metrics-export-port": base + 7,
        "min-worker-port": base + 100, "max-worker-port": base + 199,
    }


# A stopped job gets this long between SIGTERM and SIGKILL: time to save and ship its checkpoint.
JOB_STOP_WAIT_S = "30"


def ray_env(token: str, loopback_only: bool = False) -> dict[str, str]:
    """The environment for every Ray process of ours: token authentication on, no usage reporting.

    `loopback_only` keeps every port of the node on 127.0.0.1: Ray binds its servers (GCS, raylet, client,
    metrics) to all interfaces in its multi-node mode, whatever --node-ip-address says, so single-machine mode
    is the only way to keep them off the network. Such a head takes workers from this machine alone.
    """
    return {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token, "RAY_USAGE_STATS_ENABLED": "0",
            "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0" if loopback_only else "1",
            "RAY_JOB_STOP_WAIT_TIME_S": JOB_STOP_WAIT_S}


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

    def stop(self, timeout: float = 3) -> None:
        """Ask our `ray start --block` to shut its node down, then kill whatever of ours is left."""
        ours = descendants(self.process.pid)
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=timeout)
            except (subprocess.TimeoutExpired, ProcessLookupError):
                pass
        self.kill(ours)

    def kill(self, known: set[int] | None = None) -> None:
        """SIGKILL our process group and every process descended from our `ray start`, as a crash would.

        Ray starts each job's entrypoint in a session of its own, so the group alone would leave jobs
        running; they are found by descent from the PID we started. Nothing else on the host is touched.
        """
        targets = (known or set()) | descendants(self.process.pid)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            for pid in list(targets):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    targets.discard(pid)
            targets = {pid for pid in targets if _running(pid)}
            if not targets:
                break
            time.sleep(0.1)
        if self.process.poll() is None:
            self.process.wait(timeout=10)


def _running(pid: int) -> bool:
    """Alive and not a zombie waiting to be reaped."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def descendants(root: int) -> set[int]:
    """Every live process descended from `root`, found through /proc (empty where there is no /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    frontier = [root]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in found:
                found.add(child)
                frontier.append(child)
    return found


def _child_setup() -> None:
    """In the child before exec: files it makes are private (session files, logs, spilled objects), and it gets
    SIGTERM if the process that started Ray dies, so no head outlives it."""
    os.umask(0o077)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _spawn(args: list[str], token: str, log_path: Path, loopback_only: bool = False,
           env: dict[str, str] | None = None) -> subprocess.Popen:
    private_dir(log_path.parent)
    log = os.fdopen(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "ab")
    return subprocess.Popen([_ray_executable(), "start", "--block", "--disable-usage-stats", *args],
                            env={**ray_env(token, loopback_only), **(env or {})}, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                            preexec_fn=_child_setup)


def _port_in_use(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def wait_for_free_ports(ports: list[int], timeout: float) -> None:
    """Wait until nothing listens on these ports: a head killed moments ago may still be draining on them, and a
    new head must never mistake that old one's dashboard for its own."""
    deadline = time.monotonic() + timeout
    busy = [p for p in ports if _port_in_use(p)]
    while busy and time.monotonic() < deadline:
        time.sleep(0.5)
        busy = [p for p in ports if _port_in_use(p)]
    if busy:
        raise RuntimeError(f"ports {busy} are still in use (another Ray, or one still shutting down); "
                           f"stop it or choose other ports (OBSERVATORY_RAY_PORT, OBSERVATORY_RAY_DASHBOARD_PORT)")


def _our_head_answers(node: RayNode, name: str) -> bool:
    """The dashboard answers and reports a live head node of our own name (not a previous head's)."""
    headers = {"Authorization": f"Bearer {node.token}"}
    try:
        if httpx.get(f"{node.dashboard_url}/api/jobs/", timeout=2, headers=headers).status_code != 200:
            return False
        nodes = httpx.get(f"{node.dashboard_url}/api/v0/nodes", params={"detail": 1}, timeout=5, headers=headers)
        result = nodes.json()["data"]["result"]["result"] if nodes.status_code == 200 else []
    except (httpx.HTTPError, ValueError, KeyError, TypeError):
        return False
    return any(n.get("is_head_node") and n.get("state") == "ALIVE" and n.get("node_name") == name for n in result)


def start_head(*, base_port: int, dashboard_port: int, temp_dir: Path, token: str, num_cpus: int | None = None,
               num_gpus: int | None = None, loopback_only: bool = True, timeout: float = 120,
               node_dir: Path | None = None, env: dict[str, str] | None = None) -> RayNode:
    """Start a head node on loopback and wait until its job API answers; every port it opens stays on 127.0.0.1
    unless `loopback_only` is off. `node_dir` is where jobs on the head keep their work and input cache; `env`
    adds to the environment of its Ray processes (e.g. Ray's health-check timings)."""
    # Ray opens up every folder it makes (mode 0777), so its own folder sits inside one that is ours alone.
    private_dir(temp_dir)
    wait_for_free_ports([base_port, dashboard_port], timeout=min(timeout, 90))
    name = f"observatory-head-{secrets.token_hex(4)}"
    args = ["--head", "--node-ip-address", "127.0.0.1", "--node-name", name, "--temp-dir", str(temp_dir / "ray"),
            "--include-dashboard", "true", "--dashboard-host", "127.0.0.1", "--dashboard-port", str(dashboard_port)]
    args += [f"--{name}={value}" for name, value in ray_ports(base_port).items()]
    if num_cpus is not None:
        args += ["--num-cpus", str(num_cpus)]
    if num_gpus is not None:
        args += ["--num-gpus", str(num_gpus)]
    log_path = temp_dir / f"head-{base_port}.log"
    extra = {**({"OBSERVATORY_NODE_DIR": str(node_dir)} if node_dir else {}), **(env or {})}
    node = RayNode(_spawn(args, token, log_path, loopback_only, extra), temp_dir, log_path,
                   f"127.0.0.1:{base_port}", f"http://127.0.0.1:{dashboard_port}", token)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise RuntimeError(f"ray head exited with {node.process.returncode}; see {log_path}")
        if _our_head_answers(node, name):
            return node
        time.sleep(0.5)
    node.stop()
    raise RuntimeError(f"ray head did not answer within {timeout:.0f}s; see {log_path}")


def worker_log_path(temp_dir: Path, base_port: int | None) -> Path:
    """Where a worker node's `ray start` writes (appended to at every join)."""
    return temp_dir / f"worker-{base_port or 'default'}.log"


def join_worker(*, head_address: str, base_port: int | None, temp_dir: Path, token: str, num_cpus: int = 1,
                num_gpus: int | None = None, resources: str | None = None, node_dir: Path | None = None,
                labels: dict[str, str] | None = None, node_ip: str | None = "127.0.0.1",
                machine_token: str | None = None) -> RayNode:
    """Join a worker node to a head (loopback in tests; an owner's machine through `observatory pool join`).
    `base_port` fixes every port the node opens (None: Ray's defaults); `labels` are Ray node labels; `node_dir`
    is where jobs on this node keep their work folders and input cache (default: the user's ~/.cache), and where
    `machine_token`, the machine's own credential, is kept (private) for its jobs to claim their tokens with."""
    if machine_token is not None:
        folder = node_dir or Path.home() / ".cache" / "commons-observatory"
        private_dir(folder)
        path = folder / "machine-token"
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(machine_token)
        os.chmod(path, 0o600)
    args = ["--address", head_address, "--num-cpus", str(num_cpus)]
    if node_ip:
        args += ["--node-ip-address", node_ip]
    if base_port is not None:
        ports = {k: v for k, v in ray_ports(base_port).items() if k not in ("port", "ray-client-server-port")}
        args += [f"--{name}={value}" for name, value in ports.items()]
    if num_gpus is not None:
        args += ["--num-gpus", str(num_gpus)]
    if resources:
        args += ["--resources", resources]
    if labels:
        args += ["--labels", ",".join(f"{key}={value}" for key, value in labels.items())]
    log_path = worker_log_path(temp_dir, base_port)
    env = {"OBSERVATORY_NODE_DIR": str(node_dir)} if node_dir else None
    return RayNode(_spawn(args, token, log_path, env=env), temp_dir, log_path, head_address, None, token)
