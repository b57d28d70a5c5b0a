"""The sandbox a volunteer's jobs run in: each escape a job might try fails inside and works outside (the control),
so that a test cannot pass because the probe itself is broken."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from jobs.sandbox import NOBODY, Sandbox, problem

pytestmark = pytest.mark.skipif(problem() is not None, reason=f"no sandbox here: {problem()}")


@pytest.fixture
def agent(tmp_path: Path) -> dict[str, Path]:
    """An agent's folder as the agent keeps it: its credential (0600) and a job's folder inside."""
    folder = tmp_path / "agent"
    workdir = folder / "work" / "unit-1"
    workdir.mkdir(parents=True)
    credential = folder / "credential"
    credential.write_text("vol_secret-credential\n")
    credential.chmod(0o600)
    return {"folder": folder, "workdir": workdir, "credential": credential}


def run_probe(code: str, workdir: Path, sandbox: Sandbox | None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `code` as a job in `workdir`: in `sandbox`, or plainly (None) for the control."""
    (workdir / "probe.py").write_text(textwrap.dedent(code))
    command = [sys.executable, "probe.py"]
    if sandbox is not None:
        sandbox.prepare(workdir)
        command = sandbox.wrap(command, workdir)
    return subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=timeout)


def test_the_job_runs_as_nobody_and_writes_in_its_own_folder(agent: dict[str, Path]) -> None:
    done = run_probe("""
        import os
        open("out.txt", "w").write(f"{os.getuid()} {os.getgid()} {os.getcwd()}")
    """, agent["workdir"], Sandbox(hide=[str(agent["folder"])]))
    assert done.returncode == 0, done.stderr
    assert (agent["workdir"] / "out.txt").read_text() == f"{NOBODY} {NOBODY} {agent['workdir'].resolve()}"


PROBE_READ = """
    import sys
    try:
        print(open(sys.argv[1] if len(sys.argv) > 1 else {path!r}).read().strip())
    except OSError as exc:
        print(f"refused: {{type(exc).__name__}}")
"""


def test_a_job_cannot_read_the_agents_credential(agent: dict[str, Path]) -> None:
    credential = agent["credential"]
    probe = PROBE_READ.format(path=str(credential))
    assert run_probe(probe, agent["workdir"], None).stdout.strip() == "vol_secret-credential"  # the control
    done = run_probe(probe, agent["workdir"], Sandbox(hide=[str(agent["folder"])]))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "refused: FileNotFoundError"  # not merely unreadable: not there at all
    credential.chmod(0o644)  # even a credential left readable by all is out of sight
    done = run_probe(probe, agent["workdir"], Sandbox(hide=[str(agent["folder"])]))
    assert done.stdout.strip() == "refused: FileNotFoundError"


def test_the_volunteers_home_is_out_of_sight(agent: dict[str, Path]) -> None:
    secret = Path.home() / f".sandbox-test-{os.getpid()}"
    secret.write_text("a file in the volunteer's home")
    secret.chmod(0o644)
    try:
        probe = PROBE_READ.format(path=str(secret))
        assert run_probe(probe, agent["workdir"], None).stdout.strip() == "a file in the volunteer's home"
        done = run_probe(probe, agent["workdir"], Sandbox(hide=[str(agent["folder"])]))
        assert done.stdout.strip() == "refused: FileNotFoundError"
    finally:
        secret.unlink()


def test_a_job_cannot_open_a_socket_to_another_address(agent: dict[str, Path]) -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted: list[bool] = []
    threading.Thread(target=lambda: (server.accept(), accepted.append(True)), daemon=True).start()
    port = server.getsockname()[1]
    probe = f"""
        import socket
        for host in ("127.0.0.1", "10.255.255.1"):
            try:
                socket.create_connection((host, {port}), timeout=3).close()
                print(host, "connected")
            except OSError as exc:
                print(host, "refused", exc.errno)
    """
    try:
        control = run_probe(probe, agent["workdir"], None)
        assert control.stdout.splitlines()[0] == "127.0.0.1 connected"
        done = run_probe(probe, agent["workdir"], Sandbox(hide=[str(agent["folder"])]))
        lines = done.stdout.splitlines()
        assert lines[0].startswith("127.0.0.1 refused") and lines[1].startswith("10.255.255.1 refused"), done
        assert "connected" not in done.stdout
    finally:
        server.close()


def test_a_job_cannot_write_outside_its_folder(agent: dict[str, Path], tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    outside.chmod(0o777)  # open to all, so that only the sandbox stands in the way
    targets = [outside / "x", agent["folder"] / "x", Path("/tmp") / f"sandbox-{os.getpid()}",
               Path("/var/tmp") / f"sandbox-{os.getpid()}", Path("/dev/shm") / f"sandbox-{os.getpid()}",
               Path(__file__).resolve().parent / "sandbox-x"]
    probe = f"""
        for path in {[str(t) for t in targets]!r} + ["inside.txt"]:
            try:
                open(path, "w").write("x")
                print(path, "written")
            except OSError as exc:
                print(path, "refused", type(exc).__name__)
    """
    done = run_probe(probe, agent["workdir"], Sandbox(hide=[str(agent["folder"])]))
    assert done.returncode == 0, done.stderr
    lines = {line.split(" ")[0]: line.split(" ")[1] for line in done.stdout.splitlines()}
    assert lines == {**{str(t): "refused" for t in targets}, "inside.txt": "written"}, done.stdout
    assert not any(t.exists() for t in targets)
    assert (agent["workdir"] / "inside.txt").read_text() == "x"
    # The control: outside the sandbox, the folder open to all takes the write.
    control = run_probe(f"open({str(outside / 'x')!r}, 'w').write('x')", agent["workdir"], None)
    assert control.returncode == 0 and (outside / "x").exists()


def test_a_job_sees_no_other_process_and_its_memory_is_limited(agent: dict[str, Path]) -> None:
    done = run_probe("""
        import os
        print(sorted(int(p) for p in os.listdir("/proc") if p.isdigit()))
        try:
            block = bytearray(1536 << 20)
            print("allocated")
        except MemoryError:
            print("memory refused")
    """, agent["workdir"], Sandbox(hide=[str(agent["folder"])], memory_gb=1.0))
    first, second = done.stdout.splitlines()
    assert first == "[1, 2]"  # the sandbox's own init and the job
    assert second == "memory refused"


def test_a_job_runs_whatever_the_agents_umask(agent: dict[str, Path]) -> None:
    """The agent keeps its files private (umask 077); the folders the sandbox makes must still let the job in."""
    sandbox = Sandbox(hide=[str(agent["folder"])])
    (agent["workdir"] / "probe.py").write_text("print('ran')")
    sandbox.prepare(agent["workdir"])
    done = subprocess.run(sandbox.wrap([sys.executable, "probe.py"], agent["workdir"]), capture_output=True,
                          text=True, preexec_fn=lambda: os.umask(0o077))
    assert done.stdout.strip() == "ran", done.stderr


def test_a_stop_reaches_the_job_inside(agent: dict[str, Path]) -> None:
    """The agent asks a job to stop with SIGTERM on the sandbox's process: the job itself gets it (and may save)."""
    workdir, sandbox = agent["workdir"], Sandbox(hide=[str(agent["folder"])])
    (workdir / "probe.py").write_text(textwrap.dedent("""
        import signal, sys, time
        def stop(*_):
            open("saved.txt", "w").write("saved")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        open("started.txt", "w").write("x")
        time.sleep(60)
    """))
    sandbox.prepare(workdir)
    process = subprocess.Popen(sandbox.wrap([sys.executable, "probe.py"], workdir))
    deadline = time.monotonic() + 30
    while not (workdir / "started.txt").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 0
    assert (workdir / "saved.txt").read_text() == "saved"
