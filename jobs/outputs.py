"""Output declarations: what a job says it produced, so that the observatory accepts exactly that and no more.

A job writes its files, then `declare` writes `outputs.json` beside them: for each declared file its name, kind,
media type, size and sha256. The observatory reads the declaration, takes only the names the job's kind allows
(see jobs.kinds), verifies each digest, and never follows a link. Pure Python: no torch, no Ray.
"""

from __future__ import annotations

import hashlib
import json
import re
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
