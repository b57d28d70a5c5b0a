"""`observatory demo` as a person sees it in a terminal that is not a TTY (a log, a CI job): whole lines, no
migration or Ray log lines, the run followed to its end, and Ctrl-C stopping everything without a traceback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.live import free_port

pytestmark = pytest.mark.ray
# Clear of the other tests' Ray ports: head 12200-12207, its workers 12300-12399, dashboard 13200.
BASE = int(os.environ.get("OBSERVATORY_TEST_RAY_PORT", "6700")) + 5500


def test_the_demo_reads_cleanly_and_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    home = tmp_path / "home"  # the demo keeps out of the user's folders: nothing may appear here
    home.mkdir()
    env = {**os.environ, "HOME": str(home), "OBSERVATORY_VAR_DIR": str(tmp_path / "var"),
           "OBSERVATORY_RAY_PORT": str(BASE),
           "OBSERVATORY_RAY_DASHBOARD_PORT": str(BASE + 1000), "COLUMNS": "60"}
    demo = subprocess.Popen([str(Path(sys.executable).with_name("observatory")), "demo", "--steps", "2",
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            line = demo.stdout.readline()
            if not line:
                break
            lines.append(line.rstrip("\n"))
            if "run 1 succeeded" in line:
                break
        assert any("run 1 succeeded" in line for line in lines), "\n".join(lines)
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    lines += rest.splitlines()
    text = "\n".join(lines)
    assert demo.returncode == 0, text
    # Whole lines, even 60 columns wide: the link and the sentence around it are not cut.
    assert f"The awarded proposal: http://127.0.0.1:{port}/proposals/1; its run trains 2 steps." in lines, text
    assert not [line for line in lines if " INFO " in line or "INFO:" in line or "\tINFO" in line], text
    assert "Traceback" not in text
    # Its job kept its inputs and work folder under var/demo/, and left no work folder behind.
    node = tmp_path / "var" / "demo" / "node"
    assert any((node / "cache").iterdir()) and not any((node / "work").glob("*"))
    assert not (home / ".cache" / "commons-observatory").exists()
