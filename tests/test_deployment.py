"""The deployment files: compose.yaml validates with the compose binary (no engine needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import compose
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = Path(compose.__file__).parent / "docker-compose"
ENV = {"RAY_AUTH_TOKEN": "t", "OBSERVATORY_SECRET_KEY": "s", "PATH": "/usr/bin:/bin"}


def _config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(COMPOSE), "-f", str(ROOT / "compose.yaml"), "config", *args],
                          capture_output=True, text=True, env=env if env is not None else ENV, timeout=60)


def test_compose_file_is_valid_and_has_every_role() -> None:
    result = _config()
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"postgres", "migrate", "api", "scheduler", "ray-head", "gpu-worker"}
    assert services["gpu-worker"]["environment"]["RAY_AUTH_MODE"] == "token"
    assert services["scheduler"]["environment"]["OBSERVATORY_RAY_ADDRESS"] == "http://ray-head:8265"


def test_compose_refuses_to_run_without_secrets() -> None:
    for missing in ("RAY_AUTH_TOKEN", "OBSERVATORY_SECRET_KEY"):
        result = _config("-q", env={k: v for k, v in ENV.items() if k != missing})
        assert result.returncode != 0 and f"set {missing}" in result.stderr
