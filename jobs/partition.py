"""A dataset version cut into K clusters, for a family of experts that each train on one cluster alone (the cut
itself is made by jobs.clusters). Pure: no numpy, no torch.

A partition is data, not code: `partition.json` holds the dataset's digest, K, the seed, the assignment (image
sha256 -> cluster) and its digest, one sha256 over (dataset digest, K, seed, assignment), which names it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

MAX_CLUSTERS = 64


def digest_of(dataset_digest: str, k: int, seed: int, assignment: dict[str, int]) -> str:
    body = json.dumps({"dataset": dataset_digest, "k": k, "seed": seed,
                       "assignment": sorted(assignment.items())}, separators=(",", ":"))
    return "sha256:" + hashlib.sha256(body.encode()).hexdigest()


def encode(partition: dict[str, Any]) -> bytes:
    return json.dumps(partition, sort_keys=True, indent=1).encode()


def read(data: bytes, dataset_digest: str | None = None) -> dict[str, Any]:
    """A partition file, checked: its digest matches its content, and its dataset is the one expected."""
    try:
        partition = json.loads(data)
        k, seed, assignment = int(partition["k"]), int(partition["seed"]), partition["assignment"]
        if not isinstance(assignment, dict) or any(not 0 <= int(c) < k for c in assignment.values()):
            raise ValueError("an image is in no cluster of the partition")
        expected = digest_of(str(partition["dataset_digest"]), k, seed, {str(s): int(c) for s, c in
                                                                         assignment.items()})
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"not a readable partition file ({exc})") from None
    if partition.get("digest") != expected:
        raise ValueError("the partition file does not match its digest")
    if dataset_digest is not None and partition["dataset_digest"] != dataset_digest:
        raise ValueError(f"the partition is of dataset {partition['dataset_digest']}, not {dataset_digest}")
    return partition


def from_inputs(inputs: dict[str, Path], expected: str, dataset_digest: str | None) -> dict[str, Any]:
    """The partition a job was sent (its `partition_sha256` input), checked to be the plan's and of its dataset."""
    if "partition_sha256" not in inputs:
        raise ValueError("the plan names a partition, but the partition was not sent to the job")
    found = read(Path(inputs["partition_sha256"]).read_bytes(), dataset_digest)
    if found["digest"] != expected:
        raise ValueError(f"the partition sent is {found['digest']}, not the plan's {expected}")
    return found


def cluster_images(inputs: dict[str, Path], expected: str, dataset_digest: str | None,
                   cluster: int | None) -> set[str]:
    """The images (sha256) of one cluster of the partition a job was sent, checked as `from_inputs` checks it."""
    found = from_inputs(inputs, expected, dataset_digest)
    return {sha for sha, index in found["assignment"].items() if index == cluster}


def sizes(partition: dict[str, Any]) -> list[int]:
    counts = [0] * int(partition["k"])
    for cluster in partition["assignment"].values():
        counts[int(cluster)] += 1
    return counts
