"""A dataset version on the node: the package's manifest and shards that the runner fetched by digest, checked
against the version's digest and each image's sha256, decoded and resized for training.

Run by hand (no runner, no inputs), a job packages the bundled set itself (jobs.data.bundled), so that
`python -m jobs.train` works on a checkout without an observatory."""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from jobs.data import bundled
from jobs.package import INPUT_PREFIX, MANIFEST, read_images


@dataclass(frozen=True)
class Dataset:
    name: str
    images: torch.Tensor  # N x 3 x R x R in [-1, 1]
    entries: list[dict[str, Any]]  # manifest records of the images used, in order
    digest: str  # the dataset version's digest (sha256 over its whole manifest)
    classes: list[str]  # class names, when the model is class-conditional; empty otherwise
    labels: torch.Tensor | None = None  # N class indices into `classes`


def local_inputs(name: str, folder: Path) -> dict[str, Path]:
    """The bundled set packaged into `folder`, as the inputs a runner would have fetched."""
    if name.partition("@")[0] != bundled.NAME:
        raise ValueError(f"dataset {name!r} is fetched from the observatory; only {bundled.NAME} is bundled")
    bundled.package(folder)
    return {f"{INPUT_PREFIX}{file.name}": file for file in folder.iterdir()
            if file.name == MANIFEST or file.suffix == ".tar"}


def load(inputs: dict[str, Path], digest: str | None, resolution: int, *, name: str = "",
         exclude_authors: list[str] | None = None, conditional: bool = False,
         exclude_classes: list[str] | None = None, only: set[str] | None = None,
         withdrawn: set[str] | None = None) -> Dataset:
    """Check and load a fetched package, leaving out the named authors' and classes' images (compared
    case-folded), the `withdrawn` images (by sha256), and, when `only` names images (by sha256: one cluster of a
    partition), every other. With no package among the inputs (a job run by hand), the bundled set `name` is
    packaged here and loaded."""
    files = {key.removeprefix(INPUT_PREFIX): Path(path) for key, path in inputs.items()
             if key.startswith(INPUT_PREFIX)}
    if not files:
        with tempfile.TemporaryDirectory(prefix="bundled-") as folder:
            return load(local_inputs(name, Path(folder)), digest, resolution, name=name,
                        exclude_authors=exclude_authors, conditional=conditional, exclude_classes=exclude_classes,
                        only=only, withdrawn=withdrawn)
    if MANIFEST not in files:
        raise ValueError("the dataset's manifest was not sent to the job")
    digest, records = read_images(files[MANIFEST], files, digest)
    excluded = {author.casefold() for author in exclude_authors or []}
    excluded_classes = {name.casefold() for name in exclude_classes or []}
    kept = [(record, data) for record, data in records if str(record.get("author") or "").casefold() not in excluded
            and str(record.get("class") or "").casefold() not in excluded_classes
            and (only is None or str(record.get("image_sha256")) in only)
            and str(record.get("image_sha256")) not in (withdrawn or set())]
    if not kept:
        raise ValueError(f"dataset {name or digest} has no images left after excluding "
                         f"{sorted(excluded | excluded_classes)}")
    classes: list[str] = []
    labels = None
    if conditional:
        classes = sorted({str(record["class"]) for record, _ in records if record.get("class")})
        if not classes or any(not record.get("class") for record, _ in kept):
            raise ValueError(f"dataset {name or digest} has no class for every image: it cannot train a "
                             "class-conditional model")
        labels = torch.tensor([classes.index(str(record["class"])) for record, _ in kept])
    arrays = []
    for _, data in kept:
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB").resize((resolution, resolution), Image.Resampling.BICUBIC)
            arrays.append(np.asarray(image, dtype=np.float32) / 127.5 - 1.0)
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return Dataset(name=name, images=images, entries=[record for record, _ in kept], digest=digest,
                   classes=classes, labels=labels)

