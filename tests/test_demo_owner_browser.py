"""The owner's path through `observatory demo` on a port of its own, as a new owner walks it in a browser: register
a machine, an admin approves it, the join command is copied from the page with its Copy button and run exactly as
copied on this host; the machine comes online, the demo's run is placed on it and finishes, and "Leave now" takes
it out. The demo runs with OBSERVATORY_RUN_ON_HEAD=false, so that its run waits for the owner's machine."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect

from tests.live import free_port
from tests.test_browser import _sign_in, browser  # noqa: F401  (the module's browser fixture)

pytestmark = [pytest.mark.browser, pytest.mark.ray]
# Clear of the other tests' Ray ports: head 16600-16607, its workers 16700-16799, dashboard 17600.
BASE = int(os.environ.get("OBSERVATORY_TEST_RAY_PORT", "6700")) + 9900


def _stop(process: subprocess.Popen, sig: int) -> str:
    if process.poll() is None:
        os.killpg(process.pid, sig)
    try:
        output, _ = process.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    return output or ""


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "OBSERVATORY_VAR_DIR": str(tmp_path / "var"), "OBSERVATORY_RAY_PORT": str(BASE),
           "OBSERVATORY_RAY_DASHBOARD_PORT": str(BASE + 1000), "OBSERVATORY_RUN_ON_HEAD": "false"}
    env.pop("OBSERVATORY_BASE_URL", None)
    process = subprocess.Popen([str(Path(sys.executable).with_name("observatory")), "demo", "--steps", "8",
                                "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not any("Ray pool ready" in line for line in lines):
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
        assert any("Ray pool ready" in line for line in lines), "".join(lines)
        assert f"Commons Observatory demo at http://127.0.0.1:{port}" in "".join(lines)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:  # the portal starts serving just after the pool is ready
            try:
                httpx.get(f"{url}/login", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and process.poll() is None, "the demo's portal never answered"
                time.sleep(0.5)
        yield url
    finally:
        _stop(process, signal.SIGINT)


def _signed_in(browser: Browser, url: str, email: str, password: str) -> Page:  # noqa: F811
    return _sign_in(browser, url, email, password, permissions=["clipboard-read", "clipboard-write"])


def _until(page: Page, locator: str, text: str, seconds: float, why: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + seconds
    while page.locator(locator).inner_text().strip() != text:
        assert why is None or why.poll() is None, f"the join command ended: {why.stdout.read()}"
        assert time.monotonic() < deadline, f"{locator} says {page.locator(locator).inner_text()!r}, not {text!r}"
        time.sleep(2)
        page.reload()


def test_an_owner_joins_the_demo_with_the_command_as_shown(browser: Browser, demo: str,  # noqa: F811
                                                           tmp_path: Path) -> None:
    owner = _signed_in(browser, demo, "owner@observatory.example", "demo-owner-pass")
    owner.goto(f"{demo}/machines")
    owner.get_by_label("Name", exact=True).fill("the spare box")
    owner.get_by_role("button", name="Register").click()
    expect(owner.locator("#machine-state")).to_have_text("pending")
    machine_url = owner.url

    admin = _signed_in(browser, demo, "admin@observatory.example", "demo-admin-pass")
    admin.goto(machine_url)
    # The admin learns what this pool can take before approving: machines on this host, and what to set for others.
    expect(admin.locator("#pool-reach")).to_contain_text("only one on this host can join")
    expect(admin.locator("#pool-reach")).to_contain_text("OBSERVATORY_POOL_JOIN_ADDRESS")
    admin.get_by_role("button", name="Approve").click()
    expect(admin.locator("#machine-state")).to_have_text("approved")

    owner.reload()
    expect(owner.locator("#pool-reach")).to_contain_text("only one on this host can join")
    owner.get_by_role("button", name="Show the join command").click()
    shown = owner.locator("#join-command")
    expect(shown).to_be_visible()
    box = shown.bounding_box()
    assert box is not None and box["x"] + box["width"] <= owner.viewport_size["width"], "the command is cut off"
    owner.get_by_role("button", name="Copy").click()
    expect(owner.get_by_role("button", name="Copied")).to_be_visible()
    command = owner.evaluate("navigator.clipboard.readText()")
    assert command == shown.inner_text().strip()
    assert re.fullmatch(rf"OBSERVATORY_MACHINE_TOKEN=mc_\S+ observatory pool join {re.escape(demo)}", command)

    # Run exactly as copied, in a shell on this host (the observatory's commands on its PATH).
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "PYTHONUNBUFFERED": "1",
           "OBSERVATORY_NODE_DIR": str(tmp_path / "owner-node")}
    joined = subprocess.Popen(["bash", "-c", command], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, start_new_session=True)
    try:
        _until(owner, "#machine-status", "online", 180, joined)
        # The demo's run waited for a node that takes work; it is placed on this machine and finishes there.
        researcher = _signed_in(browser, demo, "researcher@observatory.example", "demo-researcher-pass")
        researcher.goto(f"{demo}/runs/1")
        _until(researcher, "#run-state", "succeeded", 300)
        owner.reload()
        expect(owner.locator("tr", has_text="Runs served").locator("td")).to_have_text("1")

        # "Leave now", confirmed: the join command hears it and stops its Ray worker.
        owner.get_by_role("button", name="Leave now").click()
        owner.get_by_role("button", name="Yes, leave now").click()
        expect(owner.locator("#machine-state")).to_have_text("left")
        output, _ = joined.communicate(timeout=120)
        assert joined.returncode == 0, output
        assert "the portal says this machine is left" in output and "the Ray worker stopped" in output
    finally:
        _stop(joined, signal.SIGTERM)
