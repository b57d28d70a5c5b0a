"""The job-kind registry: for each kind, its typed config, the module that runs it and the outputs it may
declare. The scheduler and the archive read this, never a list of their own. Pure: no torch, no Ray."""

from __future__ import annotations

from dataclasses import dataclass

from jobs.config import JOB_KINDS
from jobs.outputs import OutputSpec

PNG, JSON = "image/png", "application/json"


@dataclass(frozen=True)
class JobKind:
    name: str
    module: str
    outputs: tuple[OutputSpec, ...]

    @property
    def config(self) -> type:
        return JOB_KINDS[self.name]

    def spec(self, name: str) -> OutputSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)


KINDS: dict[str, JobKind] = {
    "train": JobKind("train", "jobs.train", (
        OutputSpec("checkpoint.pt", "checkpoint", "application/octet-stream"),
        OutputSpec("samples.png", "samples", PNG),
        OutputSpec("training_images.png", "dataset-preview", PNG),
        OutputSpec("metrics.json", "metrics", JSON),
        OutputSpec("attribution.json", "attribution", JSON),
    )),
    "sample": JobKind("sample", "jobs.sample", (
        OutputSpec("samples.png", "samples", PNG),
        OutputSpec("metrics.json", "metrics", JSON),
    )),
}
# Written by the observatory itself, never taken from a worker.
SERVICE_OUTPUTS = (
    OutputSpec("job.log", "log", "text/plain; charset=utf-8"),
    OutputSpec("manifest.json", "manifest", JSON),
)


def job_kind(name: str) -> JobKind:
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"no job kind {name!r}") from None
