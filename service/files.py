"""Files and folders the observatory makes are its own user's alone from the moment they exist."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def private_dir(path: Path) -> Path:
    """Make `path` and any missing parents with mode 0700 (mkdir's mode covers only the last one)."""
    missing = []
    while not path.exists():
        missing.append(path)
        path = path.parent
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    return missing[0] if missing else path


def private_secret_file(path: Path, make: Callable[[], str]) -> str:
    """A secret kept in a file readable by its owner alone from the moment it exists; made once, then read."""
    private_dir(path.parent)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(descriptor, "w") as handle:
        handle.write(make())
    return path.read_text().strip()
