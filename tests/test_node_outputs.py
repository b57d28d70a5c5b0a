"""What a job leaves in its work folder on a node is untrusted: the runner sends only declared outputs the kind
allows, opened without following links, with digests that match the declaration."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from jobs.kinds import job_kind
from jobs.outputs import collect, declare
from tests.pools import TRAIN_FILES

ALLOWED = {spec.name: spec for spec in job_kind("train").outputs}


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    path = tmp_path / "secret_key"
    path.write_text("the portal's session key")
    return path


def _write(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def _collect(folder: Path) -> tuple[dict[str, bytes], list[str]]:
    found, problems = collect(folder, ALLOWED)
    taken = {}
    for entry, descriptor in found:
        with os.fdopen(descriptor, "rb") as handle:
            taken[entry.name] = handle.read()
    return taken, problems


def _redeclare(folder: Path, name: str, **fields) -> None:
    document = json.loads((folder / "outputs.json").read_text())
    for entry in document["outputs"]:
        if entry["name"] == name:
            entry.update(fields)
    (folder / "outputs.json").write_text(json.dumps(document))


def test_declared_outputs_are_taken_and_nothing_else(tmp_path: Path) -> None:
    work = tmp_path / "work"
    _write(work, {**TRAIN_FILES, "notes.txt": b"not declared"})
    declare(work, job_kind("train").outputs)
    assert _collect(work) == (TRAIN_FILES, [])


def test_a_planted_symlink_is_never_followed(tmp_path: Path, secret: Path) -> None:
    work = tmp_path / "work"
    _write(work, TRAIN_FILES)
    declare(work, job_kind("train").outputs)
    (work / "samples.png").unlink()
    os.symlink(secret, work / "samples.png")
    _redeclare(work, "samples.png", sha256=hashlib.sha256(secret.read_bytes()).hexdigest(),
               size=secret.stat().st_size)
    taken, problems = _collect(work)
    assert "samples.png" not in taken and secret.read_bytes() not in taken.values()
    assert any(p.startswith("samples.png") for p in problems)


def test_a_hard_link_to_a_secret_is_refused(tmp_path: Path, secret: Path) -> None:
    work = tmp_path / "work"
    _write(work, TRAIN_FILES)
    (work / "metrics.json").unlink()
    os.link(secret, work / "metrics.json")
    declare(work, job_kind("train").outputs)
    taken, problems = _collect(work)
    assert "metrics.json" not in taken and any(p.startswith("metrics.json") for p in problems)


def test_a_linked_folder_and_a_linked_declaration_are_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    _write(elsewhere, TRAIN_FILES)
    declare(elsewhere, job_kind("train").outputs)
    work = tmp_path / "work"
    os.symlink(elsewhere, work)
    assert _collect(work) == ({}, ["the job left no output folder (work)"])
    work.unlink()
    _write(work, TRAIN_FILES)
    os.symlink(elsewhere / "outputs.json", work / "outputs.json")
    taken, problems = _collect(work)
    assert taken == {} and problems[0].startswith("no valid output declaration")


def test_names_the_kind_does_not_allow_and_wrong_digests_are_refused(tmp_path: Path) -> None:
    work = tmp_path / "work"
    _write(work, {**TRAIN_FILES, "page.svg": b"<svg onload='alert(1)'/>"})
    declare(work, job_kind("train").outputs)
    document = json.loads((work / "outputs.json").read_text())
    document["outputs"].append({"name": "page.svg", "kind": "samples", "media_type": "image/svg+xml", "size": 24,
                                "sha256": "0" * 64})
    (work / "outputs.json").write_text(json.dumps(document))
    _redeclare(work, "checkpoint.pt", sha256="f" * 64)
    taken, problems = _collect(work)
    assert "page.svg: not an output this job may declare" in problems
    assert "checkpoint.pt: its sha256 or size does not match the declaration" in problems
    assert set(taken) == set(TRAIN_FILES) - {"checkpoint.pt"}
