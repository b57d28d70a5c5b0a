"""A volunteer's agent that cheats, for the tests: the real agent, except that before its outputs are sent each PNG
is replaced by noise of the same size and declared anew (`python -m tests.cheating_agent` takes the arguments of
`observatory volunteer`)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from jobs import runner
from jobs.kinds import job_kind
from jobs.outputs import declare
from observatory.cli import app

honest_send = runner.Attempt.send_outputs


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


runner.Attempt.send_outputs = send_noise

if __name__ == "__main__":
    app(["volunteer", *sys.argv[1:]])
