"""The descriptor a copy search uses beside the tiled distance: the offline structure descriptor (it reports
similarity; the distance ratio decides), or a learned copy descriptor the plan names (its file among the inputs),
whose normalised score above its operating threshold decides too."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jobs.analysis import descriptors, learned


@dataclass(frozen=True)
class Descriptor:
    """Images (N x H x W x 3 in [0, 1]) to unit vectors, what it is, and, for a learned one, its operating
    threshold: the normalised score (a similarity less the best one for any other picture) above every false match
    it made on the images it held out."""

    describe: Callable[[np.ndarray], np.ndarray]
    name: str
    operating_threshold: float | None = None
    about: dict[str, Any] | None = None

    @property
    def decides(self) -> bool:
        return self.operating_threshold is not None


def descriptor_for(cfg: Any, inputs: dict[str, Path]) -> Descriptor:
    """The plan's descriptor: `structure`, or the learned one whose file was sent as `descriptor_sha256`."""
    name = getattr(cfg, "descriptor", "structure")
    if name == "structure":
        return Descriptor(descriptors.features, "structure")
    if "descriptor_sha256" not in inputs:
        raise ValueError(f"the plan names the descriptor {name}, but its file was not sent to the job")
    model, meta = learned.load(inputs["descriptor_sha256"])
    evaluation = (meta.get("evaluation") or {}).get("learned") or {}
    return Descriptor(lambda images: learned.embed(model, images), name, float(meta.get("threshold", 1.0)),
                      {"trained_on": meta.get("dataset"), "dataset_digest": meta.get("dataset_digest"),
                       "images": meta.get("images"), "held_out_muap": evaluation.get("muap"),
                       "operating_threshold": meta.get("threshold")})
