"""What the analyses share: the model analysed (one checkpoint, a family of experts or one expert of it) and the
training images it is compared with, images as arrays in [0, 1], the tile grid, results rounded to compare byte
for byte, their command line and the outputs they write."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from pydantic import BaseModel

from jobs import dataset as datasets
from jobs import family, partition
from jobs.kinds import KINDS
from jobs.outputs import declare

DIGITS = 6
T = TypeVar("T", bound=BaseModel)


def rounded(value: Any) -> Any:
    """Numbers rounded to DIGITS significant places, recursively, so that results compare byte for byte."""
    if isinstance(value, float | np.floating):
        return float(f"{float(value):.{DIGITS}g}")
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [rounded(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    return value


def subject(cfg: Any, checkpoint: Path | None, inputs: dict[str, Path],
            device: torch.device) -> tuple[Any, Any, dict[str, Any]]:
    """The model a plan analyses: its family of experts (sampled as one ensemble), or its one checkpoint (a model,
    or one expert of a family)."""
    return family.subject(cfg.expert_checkpoints, checkpoint, inputs, device)


def cluster_of(cfg: Any, inputs: dict[str, Path], expert: int) -> set[str]:
    """The images (sha256) of one expert's cluster of the plan's partition."""
    if cfg.partition is None:
        raise ValueError("the plan names an expert but no partition")
    return partition.cluster_images(inputs, cfg.partition, cfg.dataset_digest, expert)


def training_set(cfg: Any, inputs: dict[str, Path], side: int) -> datasets.Dataset:
    """What the model is compared with: its training set (for one expert of a family, that expert's cluster alone),
    without the images withdrawn from the observatory."""
    expert = getattr(cfg, "expert", None)
    return datasets.load(inputs, cfg.dataset_digest, side, name=cfg.dataset or "",
                         only=None if expert is None else cluster_of(cfg, inputs, expert),
                         withdrawn=set(cfg.withdrawn_images))


def to_unit(images: torch.Tensor) -> np.ndarray:
    """N x 3 x H x W in [-1, 1] as N x H x W x 3 float32 in [0, 1]."""
    return ((images.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).contiguous().numpy().astype(np.float32)


def grid_for(side: int) -> int:
    return next(g for g in (4, 2, 1) if side % g == 0)


def arguments(prog: str, doc: str | None, argv: list[str] | None = None) -> tuple[str, dict[str, Path], Path]:
    """An analysis job's command line, as jobs.runner gives it: (the plan as JSON, the inputs by name, the output
    folder)."""
    parser = argparse.ArgumentParser(prog=prog, description=doc)
    parser.add_argument("--config", required=True, help="the job plan, as JSON")
    parser.add_argument("--inputs", required=True, help="the inputs fetched to this node, name -> path, as JSON")
    parser.add_argument("--output", required=True, type=Path)
    ns = parser.parse_args(argv)
    return ns.config, {name: Path(path) for name, path in json.loads(ns.inputs).items()}, ns.output


def plan_arguments(prog: str, doc: str | None, config_type: type[T],
                   argv: list[str] | None = None) -> tuple[T, dict[str, Path], Path]:
    """The command line of a job over a dataset version: (its plan, the inputs, the output folder)."""
    config, inputs, output = arguments(prog, doc, argv)
    return config_type.model_validate_json(config), inputs, output


def model_analysis_arguments(prog: str, doc: str | None, config_type: type[T],
                             argv: list[str] | None = None) -> tuple[T, Path, dict[str, Path], Path]:
    """The command line of an analysis of one model: (its plan, the checkpoint, the other inputs, the output)."""
    config, inputs, output = arguments(prog, doc, argv)
    return config_type.model_validate_json(config), inputs.pop("checkpoint_sha256", None), inputs, output


def write(output: Path, kind: str, results: dict[str, Any], page: str) -> None:
    """results.json (sorted keys: the same results give the same bytes), report.html, and their declaration."""
    output.mkdir(parents=True, exist_ok=True)
    (output / "results.json").write_text(json.dumps(results, indent=1, sort_keys=True, ensure_ascii=False) + "\n")
    (output / "report.html").write_text(page)
    declare(output, KINDS[kind].outputs)
