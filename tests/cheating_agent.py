"""A volunteer's agent that cheats, for the tests (`python -m tests.cheating_agent` takes the arguments of
`observatory volunteer`): the real agent, except that, as OBSERVATORY_CHEAT says,
- `noise` (the default): before its outputs are sent each PNG is replaced by noise of the same size and declared
  anew;
- `skip`: its training jobs do one optimizer step where they count two, so every state they ship, and the final
  checkpoint, claims twice the training done."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from jobs import runner
from jobs.kinds import job_kind
from jobs.outputs import declare
from observatory.cli import app

honest_send = runner.Attempt.send_outputs
honest_popen = subprocess.Popen
SKIPPING_TRAIN = """
import jobs.train as train
honest = train.Trainer.step_once
def skipping(self):
    honest(self)
    if self.step % 2 == 1 and self.step < self.cfg.steps:
        self.step += 1  # one step done, two counted
train.Trainer.step_once = skipping
args = train.parse()
train.main(args.cfg, args.output, args.inputs)
"""


def send_noise(self: runner.Attempt, workdir: Path, kind_name: str) -> list[str]:
    for path in workdir.glob("*.png"):
        with Image.open(path) as image:
            width, height = image.size
        noise = np.random.default_rng().integers(0, 256, (height, width, 3), dtype=np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(noise).save(buffer, format="PNG")
        path.unlink()
        path.write_bytes(buffer.getvalue())
    declare(workdir, job_kind(kind_name).outputs)
    return honest_send(self, workdir, kind_name)


def skipping_popen(command, *args, **kwargs):  # type: ignore[no-untyped-def]  # noqa: ANN001, ANN002, ANN003
    """The training job swapped for one that skips steps, wherever it sits in the command (the sandbox wraps it)."""
    if isinstance(command, list):
        for index in range(len(command) - 1):
            if command[index:index + 2] == ["-m", "jobs.train"]:
                command = [*command[:index], "-c", SKIPPING_TRAIN, *command[index + 2:]]
                break
    return honest_popen(command, *args, **kwargs)


if os.environ.get("OBSERVATORY_CHEAT", "noise") == "skip":
    subprocess.Popen = skipping_popen  # type: ignore[misc]
else:
    runner.Attempt.send_outputs = send_noise

if __name__ == "__main__":
    app(["volunteer", *sys.argv[1:]])
