"""Every bench runs to its end at its smallest settings, so that a change that breaks one is red here (the figures
themselves are for people: nothing here times anything)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
# Each bench with its smallest settings and a line its output must hold.
SMALLEST = {
    "train_overhead.py": (["--steps", "2", "--rounds", "1", "--batch-size", "4", "--resolution", "8",
                           "--channels", "8,16"], "ratio job/bare"),
    "run_page_load.py": (["--clients", "2", "--seconds", "1", "--configs", "now", "--paths", "run"], "/runs/1"),
    "scheduling.py": (["200", "20"], "both passes agree"),
    "ingest.py": (["4", "320", "16"], "ratio:"),
    "nn_search.py": (["--base", "500", "--queries", "10", "--dim", "16", "--cells", "8", "--probes", "2", "--k",
                      "3"], "recall@3"),
    "dose_response.py": (["--copies", "2", "--steps", "2", "--distinct", "8", "--planted", "1", "--samples", "4",
                          "--batch-size", "4"], "regenerated at step 2: k=2"),
    "copy_descriptor.py": (["--train", "16", "--held-out", "8", "--steps", "2", "--batch-size", "8"],
                           "copy detection: learned muAP"),
    "train_on_ray.py": (["--steps", "2", "--ray-cpus", "1"], "through Ray, run given 1 CPU(s)"),
    "pooled.py": (["--ks", "2", "--images", "24", "--held-out", "16", "--themes", "4", "--side", "8", "--steps", "4",
                   "--batch-size", "4", "--router-steps", "4", "--samples", "8", "--inference-steps", "2",
                   "--workers", "2", "--diloco-hs", "2", "--diloco-dtypes", "int8"], "diloco: "),
    "archive_search.py": (["--products", "300", "--repeats", "1"], "archive search: "),
    "volunteer.py": (["--agents", "4", "--units", "8", "--seconds", "2", "--wait", "1"],
                     "validation overhead: "),
}


def test_every_bench_has_a_smoke_test() -> None:
    assert {p.name for p in BENCH.glob("*.py")} == {*SMALLEST, "gpu_path.py"}


@pytest.mark.parametrize("script", sorted(SMALLEST))
def test_the_bench_runs_at_its_smallest_settings(script: str) -> None:
    arguments, expected = SMALLEST[script]
    result = subprocess.run([sys.executable, str(BENCH / script), *arguments], capture_output=True, text=True,
                            timeout=600, cwd=BENCH.parent, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert expected in result.stdout and "failed" not in result.stdout.lower(), result.stdout[-3000:]


def test_the_gpu_bench_imports_and_says_it_needs_a_card() -> None:
    """Without CUDA the GPU path's bench can only load (its imports are what rots) and say why it stops."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA card is here: run bench/gpu_path.py itself")
    result = subprocess.run([sys.executable, str(BENCH / "gpu_path.py")], capture_output=True, text=True,
                            timeout=300, cwd=BENCH.parent)
    assert result.returncode == 1 and "no CUDA card here" in result.stderr, result.stderr[-2000:]
