"""The deployment files: compose.yaml validates with the compose binary (no engine needed)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import compose
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = Path(compose.__file__).parent / "docker-compose"
ENV = {"RAY_AUTH_TOKEN": "t", "OBSERVATORY_SECRET_KEY": "s", "POSTGRES_PASSWORD": "p",
       "OBSERVATORY_DOMAIN": "observatory.example.org", "PATH": "/usr/bin:/bin"}


def _config(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(COMPOSE), "-f", str(ROOT / "compose.yaml"), "config", *args],
                          capture_output=True, text=True, env=env if env is not None else ENV, timeout=60)


def test_compose_file_is_valid_and_has_every_role() -> None:
    result = _config()
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == {"proxy", "postgres", "migrate", "api", "scheduler", "ray-head", "gpu-worker"}
    assert services["ray-head"]["environment"]["RAY_AUTH_MODE"] == "token"
    assert services["gpu-worker"]["command"][:3] == ["observatory", "pool", "join"]
    assert services["scheduler"]["environment"]["OBSERVATORY_RAY_ADDRESS"] == "http://ray-head:8265"


def test_compose_refuses_to_run_without_secrets() -> None:
    for missing in ("RAY_AUTH_TOKEN", "OBSERVATORY_SECRET_KEY", "POSTGRES_PASSWORD", "OBSERVATORY_DOMAIN"):
        result = _config("-q", env={k: v for k, v in ENV.items() if k != missing})
        assert result.returncode != 0 and f"set {missing}" in result.stderr


def _published(service: dict) -> list[dict]:
    return service.get("ports", [])


def test_compose_defaults_are_the_safe_ones() -> None:
    services = yaml.safe_load(_config().stdout)["services"]
    # Only the TLS proxy faces the network; the API is reached through it, over HTTPS, with Secure cookies.
    assert {p["published"] for p in _published(services["proxy"])} == {"443", "80"}
    assert _published(services["api"]) == []
    assert services["api"]["environment"]["OBSERVATORY_BASE_URL"] == "https://observatory.example.org"
    assert services["api"]["environment"]["OBSERVATORY_SECURE_COOKIES"] == "true"
    # The Ray head publishes its GCS port on loopback unless told the overlay's address, and its job API nowhere.
    head_ports = _published(services["ray-head"])
    assert [(p["host_ip"], p["target"]) for p in head_ports] == [("127.0.0.1", 6379)]
    overlay = yaml.safe_load(_config(env={**ENV, "RAY_BIND_ADDRESS": "100.64.0.1"}).stdout)["services"]
    assert [p["host_ip"] for p in _published(overlay["ray-head"])] == ["100.64.0.1"]
    # Each service holds only the secrets it uses.
    # The API holds the Ray token only to hand it to approved machines that join.
    assert {k for k in services["api"]["environment"] if "RAY" in k} == {"OBSERVATORY_RAY_AUTH_TOKEN"}
    assert services["api"]["environment"]["OBSERVATORY_POOL_JOIN_ADDRESS"] == "ray-head:6379"
    for node in ("ray-head", "gpu-worker"):
        env = services[node]["environment"]
        allowed = {"OBSERVATORY_NODE_DIR", "OBSERVATORY_MACHINE_TOKEN"}  # a node's own, not the portal's
        assert not {k for k in env if (k.startswith("OBSERVATORY_") and k not in allowed)
                    or "POSTGRES" in k}, (node, env)
        # ...and no node mounts the archive: work reaches it over HTTPS, through the proxy.
        assert not [v for v in services[node].get("volumes", []) if "archive" in str(v.get("source", ""))], node
    assert "RAY_AUTH_TOKEN" not in services["gpu-worker"]["environment"]  # it gets it from the portal
    assert services["scheduler"]["environment"]["OBSERVATORY_JOB_API_URL"] == "https://observatory.example.org"
