"""The job-kind registry: for each kind, its typed config, the module that runs it and the outputs it may
declare. The scheduler and the archive read this, never a list of their own. Pure: no torch, no Ray."""

from __future__ import annotations

import re
from dataclasses import dataclass

from jobs.config import JOB_KINDS
from jobs.outputs import OutputSpec

PNG, JSON = "image/png", "application/json"
FAMILY_INPUTS = ("expert_checkpoints", "router_sha256", "partition_sha256")  # a family's files (or one expert's)


@dataclass(frozen=True)
class JobKind:
    """`inputs` names the plan's fields that hold an archived object's sha256: the job is sent those objects,
    fetched by digest. A kind that `uses_dataset` is also sent its dataset version's manifest and shards
    (jobs.package). `resumable` kinds ship a checkpoint (`RESUME_STATE`) and restart from it."""

    name: str
    module: str
    outputs: tuple[OutputSpec, ...]
    inputs: tuple[str, ...] = ()
    resumable: bool = False
    uses_dataset: bool = False
    makes_dataset: bool = False  # its `dataset.tar` is registered as a dataset version when the run succeeds
    uses_gpu: bool = True  # False: it runs on a CPU core of whichever node has one free, GPU or not
    # True: a volunteer's agent (an unvetted machine outside Ray) may take it; its result counts only once validated.
    volunteers: bool = False
    # How a volunteer's result is validated: "agreement" of two copies (service.volunteers.agreement), or
    # "segments" of its training re-run by others from the states it shipped (a SEGMENT_CHECK each).
    validated_by: str = "agreement"

    @property
    def config(self) -> type:
        return JOB_KINDS[self.name]

    def spec(self, name: str) -> OutputSpec | None:
        return next((spec for spec in self.outputs if spec.name == name), None)

    def input_digests(self, plan: dict) -> dict[str, str]:
        """The plan's inputs, field name -> sha256; a field holding a list gives `field:0`, `field:1`, …"""
        found: dict[str, str] = {}
        for field in self.inputs:
            value = plan.get(field)
            if isinstance(value, list):
                found.update({f"{field}:{index}": str(sha) for index, sha in enumerate(value)})
            elif value:
                found[field] = str(value)
        return found


KINDS: dict[str, JobKind] = {
    "train": JobKind("train", "jobs.train", (
        OutputSpec("checkpoint.pt", "checkpoint", "application/octet-stream"),
        OutputSpec("samples.png", "samples", PNG),
        OutputSpec("training_images.png", "dataset-preview", PNG),
        OutputSpec("metrics.json", "metrics", JSON),
        OutputSpec("attribution.json", "attribution", JSON),
    ), inputs=("base_checkpoint_sha256", "partition_sha256"), resumable=True, uses_dataset=True, volunteers=True,
        validated_by="segments"),
    "ingest": JobKind("ingest", "jobs.ingest", (
        OutputSpec("dataset.tar", "dataset-package", "application/x-tar"),
        OutputSpec("dataset.json", "dataset-summary", JSON),
        OutputSpec("attribution.txt", "attribution", "text/plain; charset=utf-8"),
    ), resumable=True, makes_dataset=True, uses_gpu=False),
    "replication": JobKind("replication", "jobs.analysis.replication", (
        OutputSpec("results.json", "analysis-results", JSON),
        OutputSpec("report.html", "report", "text/html; charset=utf-8"),
        OutputSpec("pairs.png", "pairs", PNG),
    ), inputs=("checkpoint_sha256", "samples_sha256", "samples_metrics_sha256", "descriptor_sha256", *FAMILY_INPUTS),
        uses_dataset=True, volunteers=True),
    "duplication": JobKind("duplication", "jobs.analysis.duplication", (
        OutputSpec("results.json", "analysis-results", JSON),
        OutputSpec("report.html", "report", "text/html; charset=utf-8"),
    ), inputs=("descriptor_sha256",), uses_dataset=True, uses_gpu=False),
    "extraction": JobKind("extraction", "jobs.analysis.extraction", (
        OutputSpec("results.json", "analysis-results", JSON),
        OutputSpec("report.html", "report", "text/html; charset=utf-8"),
    ), inputs=("checkpoint_sha256", "descriptor_sha256", *FAMILY_INPUTS), uses_dataset=True),
    "quality": JobKind("quality", "jobs.analysis.quality", (
        OutputSpec("results.json", "analysis-results", JSON),
        OutputSpec("report.html", "report", "text/html; charset=utf-8"),
    ), inputs=("checkpoint_sha256", *FAMILY_INPUTS), uses_dataset=True),
    "ablation": JobKind("ablation", "jobs.analysis.ablation", (
        OutputSpec("results.json", "analysis-results", JSON),
        OutputSpec("report.html", "report", "text/html; charset=utf-8"),
    ), inputs=("with_checkpoint_sha256", "without_checkpoint_sha256", *FAMILY_INPUTS), uses_dataset=True),
    "router": JobKind("router", "jobs.router", (
        OutputSpec("router.pt", "router", "application/octet-stream"),
        OutputSpec("metrics.json", "metrics", JSON),
        OutputSpec("accuracy.png", "accuracy-chart", PNG),
    ), inputs=("partition_sha256",), uses_dataset=True),
    "descriptor": JobKind("descriptor", "jobs.descriptor", (
        OutputSpec("descriptor.pt", "descriptor", "application/octet-stream"),
        OutputSpec("metrics.json", "metrics", JSON),
        OutputSpec("attribution.json", "attribution", JSON),
    ), uses_dataset=True),
    "sample": JobKind("sample", "jobs.sample", (
        OutputSpec("samples.png", "samples", PNG),
        OutputSpec("metrics.json", "metrics", JSON),
    ), inputs=("checkpoint_sha256", "expert_checkpoints", "router_sha256"), volunteers=True),
}
# Made by the observatory alone to check a volunteer's training (never a proposal's kind, so not in KINDS): it
# re-runs one segment between two states the volunteer's machine shipped, from the training's own inputs and the
# first state (sent as SEGMENT_FROM; none: from the seed), and compares where it lands with the second (SEGMENT_TO).
SEGMENT_CHECK = JobKind("segment-check", "jobs.segment", (OutputSpec("segment.json", "segment-check", JSON),),
                        inputs=("base_checkpoint_sha256", "partition_sha256"), uses_dataset=True, volunteers=True)
SEGMENT_FROM, SEGMENT_TO = "segment_from", "segment_to"
# A resumable job's state (weights, optimizer, random generator, step): shipped while it runs, kept as an output
# of a run that stopped before it finished.
RESUME_INPUT = "resume_state"  # the input name under which a resuming attempt is sent its state
# The runner's exit code when the observatory stayed away longer than its patience: not the job's failure, so the
# run resumes from its last shipped checkpoint (EX_TEMPFAIL).
UNREACHABLE_EXIT = 75
# Left in its folder by a worker of a run trained by several nodes that stopped at the end while another worker
# makes the outputs: the runner reports it stopped, with nothing to send.
WORKER_DONE = "worker-done.json"
RESUME_STATE = OutputSpec("state.pt", "resume-state", "application/octet-stream", required=False)
# Written by the observatory itself, never taken from a worker.
SERVICE_OUTPUTS = (
    OutputSpec("job.log", "log", "text/plain; charset=utf-8"),
    OutputSpec("manifest.json", "manifest", JSON),
)
ATTEMPT_LOG = re.compile(r"^attempt-[1-9][0-9]{0,3}\.log$")


def service_output(name: str) -> OutputSpec | None:
    """The spec of a file the observatory writes itself: the run's log and manifest, and each attempt's log."""
    if ATTEMPT_LOG.match(name):
        return OutputSpec(name, "attempt-log", "text/plain; charset=utf-8")
    return next((spec for spec in SERVICE_OUTPUTS if spec.name == name), None)


def job_kind(name: str) -> JobKind:
    if name == SEGMENT_CHECK.name:
        return SEGMENT_CHECK
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"no job kind {name!r}") from None
