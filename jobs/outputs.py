"""Output declarations: what a job says it produced, so that the observatory accepts exactly that and no more.

A job writes its files, then `declare` writes `outputs.json` beside them: for each declared file its name, kind,
media type, size and sha256. The runner on the node reads the declaration and sends each declared file, opened
without following links (`collect`); the observatory takes only the names the job's kind allows (see jobs.kinds)
and verifies each digest again. Pure Python: no torch, no Ray.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DECLARATION = "outputs.json"
MAX_DECLARATION_BYTES = 64 << 10
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class OutputSpec:
    """A file a job kind may produce; `required` ones must all arrive for a run to succeed."""

    name: str
    kind: str
    media_type: str
    required: bool = True


@dataclass(frozen=True)
class DeclaredOutput:
    name: str
    kind: str
    media_type: str
    size: int
    sha256: str


def sha256_of(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def declare(output: Path, specs: tuple[OutputSpec, ...]) -> list[DeclaredOutput]:
    """Write outputs.json for the specs' files present in `output` (the job's own folder); returns them."""
    declared = []
    for spec in specs:
        path = output / spec.name
        if path.is_file():
            sha, size = sha256_of(path)
            declared.append(DeclaredOutput(spec.name, spec.kind, spec.media_type, size, sha))
    tmp = output / (DECLARATION + ".tmp")
    tmp.write_text(json.dumps({"outputs": [asdict(d) for d in declared]}, indent=2))
    tmp.replace(output / DECLARATION)
    return declared


class DeclarationError(ValueError):
    pass


def parse_declaration(data: bytes) -> list[DeclaredOutput]:
    """The declared outputs, each checked for shape; DeclarationError says what is wrong."""
    try:
        document: Any = json.loads(data)
        entries = document["outputs"]
        if not isinstance(entries, list):
            raise TypeError
        declared = [DeclaredOutput(name=str(e["name"]), kind=str(e["kind"]), media_type=str(e["media_type"]),
                                   size=int(e["size"]), sha256=str(e["sha256"])) for e in entries]
    except (ValueError, KeyError, TypeError) as exc:
        raise DeclarationError(f"{DECLARATION} is not a valid declaration ({exc.__class__.__name__})") from None
    for entry in declared:
        if not NAME_PATTERN.match(entry.name) or not re.fullmatch(r"[0-9a-f]{64}", entry.sha256):
            raise DeclarationError(f"{DECLARATION} declares a malformed entry {entry.name[:100]!r}")
    if len({entry.name for entry in declared}) != len(declared):
        raise DeclarationError(f"{DECLARATION} declares a name twice")
    return declared


def open_plain(directory: int, name: str) -> int:
    """A file descriptor for `name` inside the open directory: never through a link, only a plain file."""
    descriptor = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=directory)
    info = os.fstat(descriptor)
    if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
        os.close(descriptor)
        raise OSError(f"{name} is not a plain file of the job's own")
    return descriptor


def open_folder(folder: Path) -> int:
    """The output folder, opened so that nothing below can be reached through a link to it."""
    return os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def collect(folder: Path, allowed: dict[str, OutputSpec]) -> tuple[list[tuple[DeclaredOutput, int]], list[str]]:
    """The declared outputs the kind allows, each with an open file descriptor (the caller closes them), and the
    problems found: a missing or malformed declaration, a name not allowed, a link, a file whose digest differs."""
    problems: list[str] = []
    try:
        directory = open_folder(folder)
    except OSError:
        return [], [f"the job left no output folder ({folder.name})"]
    found: list[tuple[DeclaredOutput, int]] = []
    try:
        try:
            with os.fdopen(open_plain(directory, DECLARATION), "rb") as handle:
                data = handle.read(MAX_DECLARATION_BYTES + 1)
            if len(data) > MAX_DECLARATION_BYTES:
                raise DeclarationError(f"{DECLARATION} is larger than {MAX_DECLARATION_BYTES} bytes")
            declared = parse_declaration(data)
        except (OSError, DeclarationError) as exc:
            return [], [f"no valid output declaration: {exc}"]
        for entry in declared:
            spec = allowed.get(entry.name)
            if spec is None or (entry.kind, entry.media_type) != (spec.kind, spec.media_type):
                problems.append(f"{entry.name}: not an output this job may declare")
                continue
            try:
                descriptor = open_plain(directory, entry.name)
            except OSError as exc:
                problems.append(f"{entry.name}: {exc.strerror or exc}")
                continue
            if sha256_of_fd(descriptor) != (entry.sha256, entry.size):
                os.close(descriptor)
                problems.append(f"{entry.name}: its sha256 or size does not match the declaration")
                continue
            found.append((entry, descriptor))
    finally:
        os.close(directory)
    return found, problems


def sha256_of_fd(descriptor: int) -> tuple[str, int]:
    """The sha256 and size of an open file, read from its start; it is left at its start again."""
    digest, size = hashlib.sha256(), 0
    os.lseek(descriptor, 0, os.SEEK_SET)
    while block := os.read(descriptor, 1 << 20):
        digest.update(block)
        size += len(block)
    os.lseek(descriptor, 0, os.SEEK_SET)
    return digest.hexdigest(), size
