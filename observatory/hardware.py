"""Measure this machine for `observatory pool join`: its GPUs (model, memory, CUDA capability), CPUs and memory.

The GPUs are read through PyTorch's CUDA runtime, which the jobs use too: a GPU that PyTorch cannot see would run
nothing, so it is not declared. A machine without one joins as CPU-only.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from jobs.version import installed_version


def gpus_seen() -> list[Any]:
    """The CUDA devices' properties as PyTorch reports them (empty without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    return [torch.cuda.get_device_properties(i) for i in range(torch.cuda.device_count())]


def memory_gb() -> float:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def measure(devices: Sequence[Any] | None = None) -> dict[str, Any]:
    """The measurement the portal records: the first GPU's model, the smallest card's memory, and the lowest CUDA
    capability (a run placed here must fit every card)."""
    devices = gpus_seen() if devices is None else list(devices)
    found: dict[str, Any] = {"cpus": usable_cpus(), "memory_gb": memory_gb(), "release": installed_version(),
                             "gpu_count": len(devices)}
    if devices:
        found["gpu_model"] = str(devices[0].name)[:120]
        found["vram_gb"] = round(min(d.total_memory for d in devices) / 2**30, 1)
        low = min((d.major, d.minor) for d in devices)
        found["cuda_capability"] = f"{low[0]}.{low[1]}"
    return found
