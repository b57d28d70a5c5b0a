"""The dependency rule of the design: jobs import nothing of ours, service only jobs.config, and so on."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"service", "web", "scheduler", "jobs", "observatory"}
# The protocol between the observatory and its jobs: configs, the kind registry, outputs, progress lines, the
# release a node must run, the machine credential's header, the license families both sides name, the dataset
# package format (with the bundled set written in it), the partition file format, and the rounds' file format with
# the arithmetic the coordinator and the workers must share (jobs.diloco: numpy, no torch).
PROTOCOL = {"jobs.config", "jobs.kinds", "jobs.outputs", "jobs.progress", "jobs.version", "jobs.commons.licenses",
            "jobs.package", "jobs.data.bundled", "jobs.credentials", "jobs.partition", "jobs.diloco"}
ALLOWED = {
    "jobs": {"jobs"},
    "service": {"service"} | PROTOCOL,
    "web": {"web", "service"} | PROTOCOL,
    "scheduler": {"scheduler", "service"} | PROTOCOL,
    "observatory": PACKAGES,
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {n for n in names if n.split(".")[0] in PACKAGES}


def _allowed(name: str, rules: set[str]) -> bool:
    return any(name == rule or name.startswith(rule + ".") for rule in rules)


def test_dependency_rule() -> None:
    violations = []
    for package, rules in ALLOWED.items():
        for path in (ROOT / package).rglob("*.py"):
            violations += [f"{path.relative_to(ROOT)} imports {n}" for n in _imports(path) if not _allowed(n, rules)]
    assert violations == []


def test_nothing_imports_the_composition_root() -> None:
    for package in PACKAGES - {"observatory"}:
        for path in (ROOT / package).rglob("*.py"):
            assert not any(n.startswith("observatory") for n in _imports(path)), path


def test_job_protocol_stays_free_of_torch_and_ray() -> None:
    for module in PROTOCOL:
        names: set[str] = set()
        for node in ast.walk(ast.parse((ROOT / (module.replace(".", "/") + ".py")).read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names |= {a.name for a in node.names} if isinstance(node, ast.Import) else {node.module or ""}
        assert not {n for n in names if n.split(".")[0] in {"torch", "ray", "diffusers"}}, module
        assert all(n.split(".")[0] != "jobs" or n in PROTOCOL for n in names), module
