"""Typed job plans: the configs the jobs run on, and the form a proposal's job plan must pass.

Pure pydantic, no torch and no Ray, so that the service validates a proposal with the very model the job parses.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from jobs.partition import MAX_CLUSTERS

MAX_WORKERS = 64  # nodes training one model together

DATASET_REF = r"^([a-z0-9][a-z0-9-]{0,79}(@[1-9][0-9]{0,8})?|sha256:[0-9a-f]{64})$"  # name, name@N or digest
MODEL_REF = r"^[a-z0-9][a-z0-9-]{0,79}@[1-9][0-9]{0,8}$"  # name@N
SHA256 = r"^[0-9a-f]{64}$"
# Fields the observatory fills in when it accepts a plan (what a name pointed to then), never a person.
PINNED = ("dataset_digest", "base_checkpoint_sha256", "partition_sha256", "withdrawn_images")
_FAMILY_PINNED = ("expert_checkpoints", "router_sha256", "partition")
PINNED_BY_KIND = {"replication": ("checkpoint_sha256", "dataset", "dataset_digest", "samples_sha256",
                                  "samples_metrics_sha256", "descriptor_sha256", "ratio_threshold",
                                  "threshold_from_run", "threshold_marks", *_FAMILY_PINNED),
                  "extraction": ("checkpoint_sha256", "dataset", "dataset_digest", "descriptor_sha256",
                                 *_FAMILY_PINNED),
                  "quality": ("checkpoint_sha256", "dataset", "dataset_digest", *_FAMILY_PINNED),
                  "duplication": ("dataset_digest", "descriptor_sha256"),
                  "descriptor": ("dataset_digest", "withdrawn_images"),
                  "router": ("dataset_digest", "partition_sha256"),
                  "sample": ("expert_checkpoints", "router_sha256"),
                  "ablation": ("with_checkpoint_sha256", "without_checkpoint_sha256", "dataset", "dataset_digest",
                               "left_out", "control", "left_out_classes", "control_classes", *_FAMILY_PINNED)}
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no NUL or other control characters (PostgreSQL refuses NUL)


class _Plan(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainConfig(_Plan):
    """Train a UNet2DModel (unconditional, or conditioned on the dataset's classes) with a DDPM noise schedule, from
    scratch or from a registered model version, then draw a sample grid."""

    kind: Literal["train"] = "train"
    dataset: str = Field("skimage-samples", pattern=DATASET_REF, title="Dataset",
                         description="A registered dataset version: name@version, a name (its latest version when "
                                     "the plan is accepted) or sha256:digest.")
    dataset_digest: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", title="Dataset digest",
                                       description="Filled in by the observatory: the version's digest.")
    conditioning: Literal["none", "class"] = Field("none", title="Conditioning",
        description="none, or class: a class-conditional model over the dataset's classes (the Commons categories "
                    "chosen at ingest), sampled class by class.")
    base_model: str | None = Field(None, pattern=MODEL_REF, title="Fine-tune from model version",
        description="A registered model version (name@version) to start from; the architecture comes with it "
                    "and must match this plan's.")
    base_checkpoint_sha256: str | None = Field(None, pattern=SHA256, title="Base checkpoint (sha256)",
                                               description="Filled in by the observatory: the base's checkpoint.")
    partition: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", title="Partition",
        description="A partition of the dataset into clusters (its digest, as the dataset's page shows it): the run "
                    "trains on one of its clusters alone, as one expert of a family.")
    cluster: int | None = Field(None, ge=0, lt=MAX_CLUSTERS, title="Cluster",
        description="With a partition: the cluster the run trains on (0 to K-1).")
    partition_sha256: str | None = Field(None, pattern=SHA256, title="Partition file (sha256)",
                                         description="Filled in by the observatory: the partition's file.")
    withdrawn_images: list[Annotated[str, Field(pattern=SHA256)]] = Field(
        default_factory=list, max_length=100_000, title="Withdrawn images (sha256)",
        description="Filled in by the observatory when it rebuilds a family: images withdrawn from the model, left "
                    "out of training.")
    experts: int = Field(1, ge=1, le=MAX_CLUSTERS, title="Experts",
        description="1: one model. K > 1: a family of K experts, each trained alone on one cluster of the dataset's "
                    "partition into K clusters (with partition_seed), and a router that weighs them when sampling; "
                    "each expert trains this plan's steps on its cluster.")
    partition_seed: int = Field(0, ge=0, le=2**31 - 1, title="Partition seed",
        description="For a family: the seed of the dataset's partition into `experts` clusters.")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field("auto", title="Precision on GPUs",
        description="Mixed precision for the forward and backward passes on a GPU (auto: bf16 where the card has "
                    "it, else fp16); the weights, their average and the optimizer stay in fp32. CPUs use fp32.")
    exclude_authors: list[Annotated[str, Field(min_length=1, max_length=200, pattern=PRINTABLE)]] = Field(
        default_factory=list, max_length=100, title="Leave out these authors",
        description="Their images are left out of training (names as the dataset's attribution gives them)."
    )
    leave_out_authors: list[Annotated[str, Field(min_length=1, max_length=200, pattern=PRINTABLE)]] = Field(
        default_factory=list, max_length=100, title="Leave-out twin without these authors",
        description="For a leave-out ablation: the award runs this plan twice with the same seeds, once as it is and "
                    "once without these authors' images too; an ablation analysis then compares the twins.")
    exclude_classes: list[Annotated[str, Field(min_length=1, max_length=300, pattern=PRINTABLE)]] = Field(
        default_factory=list, max_length=64, title="Leave out these classes",
        description="Images of these classes (the dataset's categories) are left out of training.")
    leave_out_classes: list[Annotated[str, Field(min_length=1, max_length=300, pattern=PRINTABLE)]] = Field(
        default_factory=list, max_length=64, title="Leave-out twin without these classes",
        description="As leave_out_authors, for classes: the twin trains without these classes' images too.")
    resolution: int = Field(16, ge=8, le=64, title="Image size",
        description="Side of the square training images, in pixels.")
    block_out_channels: list[Annotated[int, Field(ge=8, le=512)]] = Field(
        default_factory=lambda: [32, 64, 64], min_length=2, max_length=4, title="UNet channels per block",
        description="Channels of each UNet block; each halves the resolution after the first.",
    )
    layers_per_block: int = Field(1, ge=1, le=3, title="Layers per block",
        description="ResNet layers in each UNet block.")
    steps: int = Field(600, ge=1, le=200_000, title="Training steps",
        description="Optimizer steps, one batch each.")
    batch_size: int = Field(64, ge=1, le=1024, title="Batch size",
        description="Images per step (drawn with replacement).")
    learning_rate: float = Field(1e-3, gt=0, le=1, title="Learning rate", description="AdamW learning rate.")
    num_train_timesteps: int = Field(1000, ge=10, le=4000, title="Noise schedule length",
        description="Length of the DDPM noise schedule.")
    seed: int = Field(0, ge=0, le=2**31 - 1, title="Random seed",
        description="Seeds batches, noise and samples: same seed, same run.")
    checkpoint_every: int = Field(200, ge=1, title="Checkpoint every (steps)",
        description="Steps between resumable checkpoints.")
    sample_count: int = Field(16, ge=1, le=64, title="Samples drawn at the end",
        description="Images in the sample grid drawn at the end.")
    sample_inference_steps: int = Field(100, ge=1, le=4000, title="Denoising steps per sample",
                                        description="Denoising steps per sample.")
    sampler: Literal["ddpm", "ddim"] = Field("ddpm", title="Sampler",
        description="DDPM, or DDIM (deterministic, and good with far fewer denoising steps).")
    ema_decay: float = Field(0.999, ge=0, lt=1, title="EMA decay",
        description="The samples and the checkpoint use the weights averaged over the steps with this decay "
                    "(warmed up over the first steps); 0 uses the last step's weights.")
    workers: int = Field(1, ge=1, le=MAX_WORKERS, title="Nodes training together",
        description="1: one node trains the model. N > 1: up to N nodes train it together with DiLoCo, each on "
                    "its own shard of the data with its own optimizer and the plan's batch, exchanging only "
                    "pseudo-gradients every sync_every steps: up to N times the samples, and the GPU-hours, of one "
                    "node. Nodes that join later take part from the next round.")
    min_workers: int = Field(1, ge=1, le=MAX_WORKERS, title="Fewest nodes per round",
        description="With several nodes: the run starts once this many nodes are free at once, and a round waits "
                    "(up to its timeout) for at least this many contributions.")
    sync_every: int = Field(100, ge=1, le=100_000, title="Inner steps per round",
        description="With several nodes: the steps each node trains alone between two synchronisations (H).")
    sync_dtype: Literal["fp32", "fp16", "int8"] = Field("fp16", title="Pseudo-gradient precision",
        description="How each node's pseudo-gradient travels: fp32 (its weights, exact), fp16, or int8 with one "
                    "scale per tensor.")
    sync_down_dtype: Literal["fp32", "int8"] = Field("fp32", title="Global weights' precision on the way down",
        description="How the next global weights reach the nodes: fp32 (the weights, exact), or int8 (the "
                    "change from the last round's, one scale per tensor: a quarter of the bytes; the coordinator "
                    "keeps the exact weights and each round sends what the nodes' copy still lacks).")
    outer_lr: float = Field(0.7, gt=0, le=2, title="Outer learning rate",
                            description="DiLoCo's outer Nesterov step size (0.7 in the paper).")
    outer_momentum: float = Field(0.9, ge=0, lt=1, title="Outer momentum",
                                  description="DiLoCo's outer Nesterov momentum (0.9 in the paper).")
    sync_timeout_s: float = Field(300, ge=1, le=86_400, title="Round timeout (seconds)",
        description="How long a round waits for slower nodes after the first contribution; a node later than "
                    "that has its round dropped and continues from the next global weights.")
    gradient_accumulation: int = Field(1, ge=1, le=64, title="Batches per step",
        description="Batches whose gradients are summed into each optimizer step: an effective batch of batch "
                    "size times this.")

    @model_validator(mode="after")
    def _resolution_fits_unet(self) -> TrainConfig:
        if self.cluster is not None and self.partition is None:
            raise ValueError("a cluster is one of a partition's: name the partition too")
        if self.partition is not None and self.cluster is None and self.experts == 1:
            raise ValueError("with a partition, name the cluster to train on, or ask for a family (experts)")
        if self.experts > 1 and (self.leave_out_authors or self.leave_out_classes):
            raise ValueError("a family of experts cannot have a leave-out twin; leave out by withdrawing instead")
        if self.min_workers > self.workers:
            raise ValueError(f"min_workers ({self.min_workers}) cannot exceed workers ({self.workers})")
        if self.workers > 1 and (self.leave_out_authors or self.leave_out_classes):
            raise ValueError("a run trained by several nodes cannot have a leave-out twin")
        if any(channels % 8 for channels in self.block_out_channels):
            raise ValueError("block_out_channels must each be a multiple of 8 (the UNet's norm groups)")
        factor = 2 ** (len(self.block_out_channels) - 1)
        if self.resolution % factor:
            near = sorted({max(factor, self.resolution // factor * factor), self.resolution // factor * factor
                           + factor})
            raise ValueError(
                f"resolution: {self.resolution} is not divisible by {factor}, as {len(self.block_out_channels)} UNet "
                f"blocks need ({' or '.join(map(str, near))} would do)"
            )
        if self.sample_inference_steps > self.num_train_timesteps:
            raise ValueError("sample_inference_steps cannot exceed num_train_timesteps")
        return self


class SampleConfig(_Plan):
    """Draw an image grid from a registered model version or a checkpoint already in the archive."""

    kind: Literal["sample"] = "sample"
    model: str | None = Field(None, pattern=MODEL_REF, title="Model version",
                              description="A registered model version (name@version); or give a checkpoint.")
    checkpoint_sha256: str | None = Field(None, pattern=SHA256, title="Checkpoint (sha256)",
        description="sha256 of a checkpoint artifact; filled in from the model version when one is named.")
    count: int = Field(16, ge=1, le=256, title="Samples to draw")
    inference_steps: int = Field(100, ge=1, le=4000, title="Denoising steps per sample")
    sampler: Literal["ddpm", "ddim"] = Field("ddpm", title="Sampler",
        description="DDPM, or DDIM (deterministic, and good with far fewer denoising steps).")
    seed: int = Field(0, ge=0, le=2**31 - 1, title="Random seed",
                      description="The first image's seed; the others take the next ones.")
    seeds: list[Annotated[int, Field(ge=0, le=2**31 - 1)]] = Field(
        default_factory=list, max_length=256, title="Seeds",
        description="One seed per image, instead of a count and a first seed: the same seed (and class) always "
                    "gives the same image.")
    classes: list[Annotated[str, Field(min_length=1, max_length=300, pattern=PRINTABLE)]] = Field(
        default_factory=list, max_length=64, title="Classes",
        description="For a class-conditional model: the classes to draw, taken in turn image by image "
                    "(default: every class in turn).")
    routing: Literal["mixture", "top_k"] = Field("mixture", title="Routing (families)",
        description="For a family of experts: every expert weighted by the router (mixture), or only the top_k "
                    "experts the router weighs most at each step.")
    top_k: int = Field(1, ge=1, le=MAX_CLUSTERS, title="Experts per step (top_k routing)")
    expert_checkpoints: Sha256List = Field(
        default_factory=list, max_length=MAX_CLUSTERS, title="Experts' checkpoints (sha256)",
        description="Filled in by the observatory when the model is a family: its experts' checkpoints.")
    router_sha256: str | None = Field(None, pattern=SHA256, title="Router (sha256)",
                                      description="Filled in by the observatory when the model is a family.")

    @model_validator(mode="after")
    def _one_source_and_count(self) -> SampleConfig:
        if not self.model and not self.checkpoint_sha256:
            raise ValueError("name a model version (model) or a checkpoint (checkpoint_sha256)")
        if self.seeds and "count" in self.model_fields_set and self.count != len(self.seeds):
            raise ValueError(f"count {self.count} differs from the {len(self.seeds)} seeds given")
        if self.seeds:
            self.count = len(self.seeds)
        return self

    @property
    def image_seeds(self) -> list[int]:
        return list(self.seeds) or [self.seed + i for i in range(self.count)]


CommonsText = Annotated[str, Field(min_length=1, max_length=255, pattern=PRINTABLE)]


class IngestConfig(_Plan):
    """Ingest openly licensed files from Wikimedia Commons into a new version of a dataset, registered when the run
    succeeds. The node needs to reach Commons; what it asks and keeps is the same as `observatory dataset ingest`."""

    kind: Literal["ingest"] = "ingest"
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,79}$", title="Dataset name",
                      description="e.g. commons-trees; each ingest under a name is its next version.")
    categories: list[CommonsText] = Field(default_factory=list, max_length=20, title="Commons categories",
        description="Categories to take files from, e.g. Trees in Finistère; several become the dataset's classes.")
    depth: int = Field(0, ge=0, le=5, title="Subcategory depth",
                       description="How many levels of subcategories to include.")
    search: CommonsText | None = Field(None, title="Search",
                                       description="A search among Commons files instead of categories.")
    titles: list[CommonsText] = Field(default_factory=list, max_length=500, title="Named files",
                                      description="Files named File:… instead of categories or a search.")
    limit: int = Field(500, ge=1, le=100_000, title="At most this many files",
                       description="Files looked at, kept or not.")
    resolution: int = Field(64, ge=8, le=1024, title="Image size",
                            description="Side of the square images kept, in pixels.")
    licenses: list[Literal["public-domain", "cc0", "cc-by", "cc-by-sa"]] = Field(
        default_factory=lambda: ["public-domain", "cc0", "cc-by", "cc-by-sa"], min_length=1, max_length=4,
        title="License families allowed", description="Everything else, and anything unclear, is left out.")
    blocklist: list[CommonsText] = Field(default_factory=list, max_length=1000, title="Blocklist",
        description="People, artists, trademarks: a file that names one anywhere on its page (its name, "
                    "description, author or categories) is left out.")

    @model_validator(mode="after")
    def _one_source(self) -> IngestConfig:
        if sum(bool(x) for x in (self.categories, self.search, self.titles)) != 1:
            raise ValueError("name exactly one source: categories, a search, or titles")
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("categories: a category is named twice")
        return self


Sha256List = list[Annotated[str, Field(pattern=SHA256)]]


class _FamilyFiles(_Plan):
    """What the observatory fills in when a plan names a family of experts (or one expert of it), and the images
    withdrawn since, left out of whatever the job compares the model with."""

    expert_checkpoints: Sha256List = Field(
        default_factory=list, max_length=MAX_CLUSTERS, title="Experts' checkpoints (sha256)",
        description="Filled in by the observatory when the model is a family: its experts' checkpoints.")
    router_sha256: str | None = Field(None, pattern=SHA256, title="Router (sha256)",
                                      description="Filled in by the observatory when the model is a family.")
    partition: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", title="The experts' partition",
                                  description="Filled in by the observatory when the model is a family.")
    partition_sha256: str | None = Field(None, pattern=SHA256, title="Partition file (sha256)",
                                         description="Filled in by the observatory when the model is a family.")
    withdrawn_images: Sha256List = Field(
        default_factory=list, max_length=100_000, title="Withdrawn images (sha256)",
        description="Filled in by the observatory: images withdrawn from the observatory, left out of the "
                    "comparison.")


DESCRIPTOR_REF = r"^(structure|[a-z0-9][a-z0-9-]{0,79}@[1-9][0-9]{0,8})$"  # structure, or name@N


class _DescriptorChoice(_Plan):
    """The descriptor a copy search compares images with, beside the tiled distance."""

    descriptor: str = Field("structure", pattern=DESCRIPTOR_REF, title="Copy descriptor",
        description="structure: the offline structure descriptor, which reports similarity while the tiled distance "
                    "decides; or a learned copy descriptor registered as name@N (a descriptor run's version), whose "
                    "similarity above its operating threshold also counts as a copy: crops, mirror images and "
                    "colour changes that no pixel distance sees.")
    descriptor_sha256: str | None = Field(None, pattern=SHA256, title="Descriptor file (sha256)",
                                          description="Filled in by the observatory: the learned descriptor's file.")


class _CopyTest(_DescriptorChoice):
    """How a model's generations are tested against its training set: near-duplicate training images are one
    picture, and the descriptor may decide beside the tiled distance."""

    near_duplicate_rms: float = Field(0.04, gt=0, le=0.5, title="Near-duplicate tolerance",
        description="Training images whose every tile differs by at most this root-mean-square (0 to 1 scale), at "
                    "some shift, are one picture: calibrated, compared with and counted as one.")
    near_duplicate_shift: int = Field(1, ge=0, le=4, title="Near-duplicate shift",
        description="The largest shift, in pixels each way, at which two training images may be near duplicates.")


class _ModelAnalysisPlan(_FamilyFiles):
    """What the analyses of one model against its own training set share: the model (a registered version, or a
    finished training run's checkpoint) and, filled in when the plan is accepted, its checkpoint and training set."""

    model: str | None = Field(None, pattern=MODEL_REF, title="Model version",
                              description="name@version of the model analysed; or name a training run instead.")
    run: int | None = Field(None, ge=1, le=2**31 - 1, title="Training run",
                            description="A finished training run whose checkpoint is analysed, instead of a model "
                                        "version (one whose outputs you may download).")
    checkpoint_sha256: str | None = Field(None, pattern=SHA256, title="Checkpoint (sha256)",
                                          description="Filled in by the observatory: the model's checkpoint.")
    dataset: str | None = Field(None, pattern=DATASET_REF, title="Training set",
                                description="Filled in by the observatory: the dataset version the model was "
                                            "trained on.")
    dataset_digest: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", title="Dataset digest",
                                       description="Filled in by the observatory: that version's digest.")
    seed: int = Field(0, ge=0, le=2**31 - 1, title="Random seed",
                      description="The first sample's seed; the others take the next ones.")
    inference_steps: int = Field(50, ge=1, le=4000, title="Denoising steps per sample")
    sampler: Literal["ddpm", "ddim"] = Field("ddim", title="Sampler")
    expert: int | None = Field(None, ge=0, lt=MAX_CLUSTERS, title="One expert (families)",
        description="For a family of experts: analyse expert N alone, against its own cluster of the training set. "
                    "By default a family is analysed whole (its router-weighted ensemble) against the whole set.")

    @model_validator(mode="after")
    def _one_model(self) -> _ModelAnalysisPlan:
        if (self.model is None) == (self.run is None):
            raise ValueError("name the model analysed: a model version (model) or a training run (run), not both")
        return self

    @property
    def subject(self) -> str:
        """What is analysed, as people read it: name@version (or one expert of it), or run N."""
        named = self.model or f"run {self.run}"
        return named if self.expert is None else f"expert {self.expert} of {named}"


class ReplicationConfig(_ModelAnalysisPlan, _CopyTest):
    """Replication search: draw samples from a model and find each one's nearest training images, by pixel L2,
    tiled L2 (the largest tile distance) and an offline structure descriptor; a sample whose tiled distance falls
    below the threshold calibrated on the training set itself is counted as a copy."""

    kind: Literal["replication"] = "replication"
    samples: int = Field(64, ge=1, le=4096, title="Samples drawn", description="Generated images searched for.")
    samples_from: int | None = Field(None, ge=1, le=2**31 - 1, title="A sample run's images",
        description="Search the images a finished sample run drew (its seeds and classes) instead of drawing new "
                    "ones; the model is the one it sampled. Name no model or run with it.")
    samples_sha256: str | None = Field(None, pattern=SHA256, title="That run's samples.png",
                                       description="Filled in by the observatory.")
    samples_metrics_sha256: str | None = Field(None, pattern=SHA256, title="That run's metrics.json",
                                               description="Filled in by the observatory.")
    top_k: int = Field(3, ge=1, le=20, title="Neighbours kept per sample")
    calibration_percentile: float = Field(1.0, gt=0, lt=50, title="Threshold percentile",
        description="The copy threshold starts from this percentile of the same distance ratio among the distinct "
                    "training images themselves…")
    calibration_fraction: float = Field(0.5, gt=0, le=1, title="Threshold fraction",
        description="…times this: a copy must be this much nearer (relatively) to one training image than the "
                    "nearest pairs of distinct training images are to each other.")
    adopt_marked_threshold: bool = Field(False, title="Adopt the threshold people's marks suggest",
        description="Use, instead of the calibrated ratio threshold, the one that best agrees with the copy / not "
                    "copy marks people gave on the latest marked search of the same model version.")
    ratio_threshold: float | None = Field(None, gt=0, le=10, title="Adopted ratio threshold",
                                          description="Filled in by the observatory when a threshold is adopted.")
    threshold_from_run: int | None = Field(None, ge=1, le=2**31 - 1, title="Adopted from run",
                                           description="Filled in by the observatory: the marked search.")
    threshold_marks: int | None = Field(None, ge=0, title="Marks it rests on",
                                        description="Filled in by the observatory.")

    @model_validator(mode="after")
    def _one_model(self) -> ReplicationConfig:
        if sum(x is not None for x in (self.model, self.run, self.samples_from)) != 1:
            raise ValueError("name what is searched: a model version (model), a training run (run), or a sample "
                             "run's images (samples_from), one of them")
        if self.expert is not None and self.model is None:
            raise ValueError("expert: name the family's model version (model) to search one of its experts")
        return self

    @property
    def subject(self) -> str:
        return f"the samples of run {self.samples_from}" if self.samples_from else super().subject


class ExtractionConfig(_ModelAnalysisPlan, _CopyTest):
    """Extraction attack (after Carlini et al. 2023): draw many samples; groups of generations nearly identical to
    one another are what a model regenerates again and again; a group whose images match a training image is an
    extracted training image."""

    kind: Literal["extraction"] = "extraction"
    samples_per_class: int = Field(256, ge=2, le=4096, title="Samples per class",
                                   description="Samples drawn per class (in all, for an unconditional model).")
    inference_steps: int = Field(25, ge=1, le=4000, title="Denoising steps per sample")
    min_group: int = Field(5, ge=2, le=1000, title="Smallest group",
                           description="Generations nearly identical to one another that make a group.")


class QualityConfig(_ModelAnalysisPlan):
    """Sample quality: FID, KID, precision and recall of the model's samples against its training images, beside
    the same figures for two halves of the training set. On the project's offline descriptor (not comparable with
    published Inception figures), or on a local Inception network the node's operator provides."""

    kind: Literal["quality"] = "quality"
    samples: int = Field(256, ge=4, le=10_000, title="Samples drawn")
    features: Literal["descriptor", "inception"] = Field("descriptor", title="Features",
        description="descriptor: the project's offline structure descriptor; inception: the TorchScript Inception "
                    "network the node's operator keeps locally (nothing is downloaded).")
    kid_subsets: int = Field(50, ge=1, le=1000, title="KID subsets")
    nearest_k: int = Field(3, ge=1, le=20, title="Neighbours for precision and recall",
                           description="A point's manifold ball reaches its k-th nearest neighbour.")


class DuplicationConfig(_DescriptorChoice):
    """Duplication audit of a dataset version: images repeated in its manifest, and near duplicates among its
    distinct images (every tile within a small RMS difference)."""

    kind: Literal["duplication"] = "duplication"
    dataset: str = Field(pattern=DATASET_REF, title="Dataset", description="The dataset version audited.")
    dataset_digest: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", title="Dataset digest",
                                       description="Filled in by the observatory: the version's digest.")
    max_tile_rms: float = Field(0.04, gt=0, le=0.5, title="Near-duplicate tolerance",
        description="Two distinct images are near duplicates when every one of their 4x4 tiles differs by at most "
                    "this root-mean-square (on a 0 to 1 scale).")
    resolution: int = Field(32, ge=8, le=256, title="Compared at", description="Side the images are compared at.")
    max_shift: int = Field(1, ge=0, le=4, title="Near-duplicate shift",
        description="The largest shift, in pixels each way, at which two images may be near duplicates.")


class DescriptorConfig(_Plan):
    """Train a copy descriptor on a dataset version: a small network, SSCD-style, whose vectors bring a picture and
    its edited copies (crops, shifts, mirror images, colour, blur, JPEG) together and distinct pictures apart.
    Registered as a version like a model, the replication search, the extraction attack and the duplication audit
    can use it (`descriptor: name@N`). It measures itself on images it held out: copy-detection muAP, beside the
    structure descriptor's on the same queries."""

    kind: Literal["descriptor"] = "descriptor"
    dataset: str = Field(pattern=DATASET_REF, title="Dataset", description="The dataset version it learns from.")
    dataset_digest: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", title="Dataset digest",
                                       description="Filled in by the observatory: the version's digest.")
    withdrawn_images: list[Annotated[str, Field(pattern=SHA256)]] = Field(
        default_factory=list, max_length=100_000, title="Withdrawn images (sha256)",
        description="Filled in by the observatory: images withdrawn from the observatory, left out.")
    resolution: int = Field(16, ge=8, le=64, title="Image size",
                            description="Side the descriptor sees; images of other sizes are resized to it.")
    width: int = Field(32, ge=8, le=128, title="Channels",
                       description="Channels of the first stage (the next two have twice and four times as many).")
    dim: int = Field(64, ge=8, le=512, title="Descriptor length", description="Values in each image's vector.")
    steps: int = Field(600, ge=1, le=200_000, title="Descriptor steps", description="Optimizer steps, one batch each.")
    batch_size: int = Field(128, ge=4, le=1024, title="Descriptor batch size",
                            description="Images per step, each seen twice, differently edited.")
    learning_rate: float = Field(2e-3, gt=0, le=1, title="Learning rate", description="AdamW, cosine decay.")
    temperature: float = Field(0.1, ge=0.01, le=1, title="Temperature", description="Of the contrastive loss.")
    entropy_weight: float = Field(0.3, ge=0, le=100, title="Entropy weight",
                                  description="Weight of the KoLeo term that spreads distinct images apart.")
    held_out: float = Field(0.2, ge=0.05, le=0.5, title="Held out",
                            description="The share of distinct images kept out of training to measure it on.")
    seed: int = Field(0, ge=0, le=2**31 - 1, title="Random seed")

    @model_validator(mode="after")
    def _width_fits_norm(self) -> DescriptorConfig:
        if self.width % 8:
            raise ValueError("width must be a multiple of 8 (the network's norm groups)")
        return self


class RouterConfig(_Plan):
    """Train a family's router: a small classifier p(cluster | x_t, t) on noised images of the whole dataset, which
    tells, for a noisy image and a timestep, which experts know that region of the data. Its held-out accuracy by
    noise level is in its metrics."""

    kind: Literal["router"] = "router"
    dataset: str = Field(pattern=DATASET_REF, title="Dataset", description="The dataset version the experts split.")
    dataset_digest: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", title="Dataset digest",
                                       description="Filled in by the observatory: the version's digest.")
    partition: str = Field(pattern=r"^sha256:[0-9a-f]{64}$", title="The experts' partition",
                           description="The partition of the dataset whose clusters the experts trained on.")
    partition_sha256: str | None = Field(None, pattern=SHA256, title="Partition file (sha256)",
                                         description="Filled in by the observatory: the partition's file.")
    resolution: int = Field(16, ge=8, le=64, title="The experts' image size",
                            description="As the experts were trained.")
    num_train_timesteps: int = Field(1000, ge=10, le=4000, title="The experts' noise schedule length",
                                     description="The experts' DDPM noise schedule length.")
    steps: int = Field(400, ge=1, le=200_000, title="Steps of the router's training")
    batch_size: int = Field(64, ge=1, le=1024, title="Router batch size")
    learning_rate: float = Field(2e-3, gt=0, le=1, title="Router learning rate",
                                 description="Adam learning rate.")
    channels: int = Field(32, ge=8, le=256, title="Router channels",
                          description="Width of the classifier's first layer.")
    withdrawn_images: list[Annotated[str, Field(pattern=SHA256)]] = Field(
        default_factory=list, max_length=100_000, title="Withdrawn images (sha256)",
        description="Filled in by the observatory when it rebuilds a family: images left out of training.")
    held_out: float = Field(0.2, ge=0.05, le=0.5, title="Held out",
                            description="The share of images kept out of training to measure the accuracy on.")
    seed: int = Field(0, ge=0, le=2**31 - 1, title="Router seed")


class AblationConfig(_FamilyFiles):
    """Leave-out ablation: two model versions trained alike, one without some authors' images. Do the samples of
    the model that saw those images come closer to them than its twin's do, beyond what both do for images neither
    saw? With bootstrap confidence intervals, and one sentence saying what the numbers show. A family of experts
    is its own twin at no training cost: the family minus one expert has not seen that expert's cluster
    (`without_expert`); the control is then the other clusters, which both saw."""

    kind: Literal["ablation"] = "ablation"
    with_model: str = Field(pattern=MODEL_REF, title="Model that saw them", description="name@version")
    without_model: str | None = Field(None, pattern=MODEL_REF, title="Its twin that did not",
                                      description="name@version; or, for a family, name an expert to leave out.")
    without_expert: int | None = Field(None, ge=0, lt=MAX_CLUSTERS, title="Or: the family minus this expert",
        description="When the model is a family of experts: its twin is the family without expert N, which never "
                    "saw cluster N.")
    samples: int = Field(64, ge=2, le=4096, title="Samples per model",
                         description="Drawn from each model with the same seeds.")
    seed: int = Field(0, ge=0, le=2**31 - 1, title="Random seed",
                      description="Seeds the samples (seed, seed+1, …) and the bootstrap.")
    inference_steps: int = Field(50, ge=1, le=4000, title="Denoising steps per sample")
    sampler: Literal["ddpm", "ddim"] = Field("ddim", title="Sampler")
    bootstrap: int = Field(1000, ge=100, le=20_000, title="Bootstrap resamples")
    with_checkpoint_sha256: str | None = Field(None, pattern=SHA256, title="Its checkpoint",
                                               description="Filled in by the observatory.")
    without_checkpoint_sha256: str | None = Field(None, pattern=SHA256, title="The twin's checkpoint",
                                                  description="Filled in by the observatory.")
    dataset: str | None = Field(None, pattern=DATASET_REF, title="Dataset",
                                description="Filled in by the observatory: the twins' dataset version.")
    dataset_digest: str | None = Field(None, pattern=r"^sha256:[0-9a-f]{64}$", title="Dataset digest",
                                       description="Filled in by the observatory.")
    left_out: list[str] = Field(default_factory=list, title="Left out of the twin",
                                description="Filled in by the observatory: the authors only the twin did not see.")
    control: list[str] = Field(default_factory=list, title="Seen by neither",
                               description="Filled in by the observatory: the authors both left out (the control).")
    left_out_classes: list[str] = Field(default_factory=list, title="Classes left out of the twin",
                                        description="Filled in by the observatory: the classes only the twin did "
                                                    "not see.")
    control_classes: list[str] = Field(default_factory=list, title="Classes seen by neither",
                                       description="Filled in by the observatory: the classes both left out.")

    @model_validator(mode="after")
    def _one_twin(self) -> AblationConfig:
        if (self.without_model is None) == (self.without_expert is None):
            raise ValueError("name the twin: a model version (without_model) or, for a family, the expert left out "
                             "(without_expert), one of them")
        return self

    @property
    def twin(self) -> str:
        """The twin, as people read it."""
        return self.without_model or f"{self.with_model} without expert {self.without_expert}"


Plan = (TrainConfig | SampleConfig | IngestConfig | ReplicationConfig | DuplicationConfig | RouterConfig
        | AblationConfig | ExtractionConfig | QualityConfig | DescriptorConfig)
# The analyses of one model version against its own training set: pinned alike, sized by their samples.
ModelAnalysis = ReplicationConfig | ExtractionConfig | QualityConfig
JobPlan = Annotated[Plan, Field(discriminator="kind")]
JOB_KINDS: dict[str, type[_Plan]] = {"train": TrainConfig, "sample": SampleConfig, "ingest": IngestConfig,
                                     "replication": ReplicationConfig, "duplication": DuplicationConfig,
                                     "ablation": AblationConfig, "extraction": ExtractionConfig,
                                     "quality": QualityConfig, "router": RouterConfig,
                                     "descriptor": DescriptorConfig}
_adapter: TypeAdapter[Plan] = TypeAdapter(JobPlan)
SEGMENT_TOLERANCE = 0.01  # how far a re-run may land from a shipped state, as a share of the distance trained


class SegmentCheckConfig(_Plan):
    """A re-run of steps `from_step` to `to_step` of a training, to check a state a volunteer's machine shipped
    (proof of learning). The observatory makes these itself; no proposal may ask for one."""

    kind: Literal["segment-check"] = "segment-check"
    train: TrainConfig
    from_step: int = Field(ge=0)
    to_step: int = Field(ge=1)
    target: Literal["state", "checkpoint"] = Field(
        description="What the re-run is compared with: a resume state shipped while training, or the final "
                    "checkpoint.pt (the weights kept: the average where the plan keeps one).")
    tolerance: float = Field(default=SEGMENT_TOLERANCE, gt=0, le=1)

    @model_validator(mode="after")
    def _forward(self) -> SegmentCheckConfig:
        if not self.from_step < self.to_step <= self.train.steps:
            raise ValueError(f"a segment runs forward within the training: steps {self.from_step} to "
                             f"{self.to_step} of {self.train.steps}")
        return self
INGEST_SECONDS_PER_FILE = 2.5  # two polite API calls and a thumbnail at the default rate limit, with a margin


CUDA_CONTEXT_GB = 0.5  # what PyTorch's CUDA context takes on a card before the job allocates anything


def estimated_vram_gb(plan: Plan) -> float:
    """A rough upper estimate of the GPU memory a plan needs, rounded up to half a GB: used to place it on a card
    big enough, not to promise it fits.

    Training keeps each UNet weight four times (weights, gradients, AdamW's two moments), five with the weight
    average, and about 40 activation values per pixel per channel of each block for the batch (one batch at a time,
    however many are accumulated); sampling has a checkpoint of unknown size, so it asks for 2 GB; an ingest needs none.
    """
    if isinstance(plan, IngestConfig | DuplicationConfig):
        return 0.0
    if isinstance(plan, RouterConfig | DescriptorConfig):
        return 1.0
    if isinstance(plan, SampleConfig | AblationConfig | ModelAnalysis):
        return 2.0
    channels = plan.block_out_channels
    weights = sum(plan.layers_per_block * 2 * 9 * c * c for c in channels) * 4  # two 3x3 convs per ResNet layer
    pixels = [plan.resolution // 2**i for i in range(len(channels))]
    activations = sum(40 * p * p * c for p, c in zip(pixels, channels, strict=True)) * plan.batch_size
    copies = 5 if plan.ema_decay > 0 else 4
    gigabytes = CUDA_CONTEXT_GB + (copies * weights + 4 * activations) / 2**30
    return math.ceil(gigabytes * 2) / 2


def estimated_output_bytes(plan: Plan) -> int:
    """An upper estimate of what a plan's run keeps in the archive: its declared outputs (a checkpoint holds the
    weights and their average; pictures are counted uncompressed) and one resumable state (the weights, their
    average and AdamW's two moments), with 1 MB for its log, metrics and report. Checked against a proposal's
    storage quota before the run is placed."""
    small = 1 << 20
    if isinstance(plan, IngestConfig):
        return plan.limit * plan.resolution ** 2 * 3 + small
    if isinstance(plan, DuplicationConfig | RouterConfig | DescriptorConfig):
        return 16 * small
    if isinstance(plan, SampleConfig | AblationConfig | ModelAnalysis):
        images = (len(plan.image_seeds) if isinstance(plan, SampleConfig)
                  else plan.samples_per_class if isinstance(plan, ExtractionConfig) else plan.samples)
        side = getattr(plan, "resolution", None) or 64
        return images * (2 if isinstance(plan, AblationConfig) else 1) * side * side * 3 + small
    weights = sum(plan.layers_per_block * 2 * 9 * c * c for c in plan.block_out_channels) * 4
    copies = 2 + 4  # the checkpoint (weights and average) and one resumable state
    pictures = (plan.sample_count + 64) * plan.resolution ** 2 * 3  # samples and the training images' sheet
    one = copies * weights + pictures + small
    twins = 2 if plan.leave_out_authors or plan.leave_out_classes else 1
    return one * max(plan.experts if plan.cluster is None else 1, 1) * twins


# Measured with `python -m jobs.train` on the default train plan, one CPU core of this project's 2-core machines.
REFERENCE_SECONDS_PER_STEP = 0.31
DESCRIPTOR_SECONDS_PER_STEP = 0.4  # the descriptor job at its defaults, likewise


def _work(resolution: int, channels: list[int], layers: int, images: int) -> float:
    """A proxy for one forward and backward pass: convolution work over every block's pixels and channels."""
    return images * sum(layers * (resolution // 2**i) ** 2 * c * c for i, c in enumerate(channels))


def estimated_seconds(plan: Plan) -> float:
    """Wall-clock seconds the plan takes on one CPU core, scaled from the measured reference step by the plan's
    convolution work; sampling counts a third of a training step per image and denoising step. A GPU is faster,
    so this is an upper estimate of its GPU-hours there. An ingest is paced by Commons' rate limit, not the
    machine: a couple of seconds a file."""
    if isinstance(plan, IngestConfig):
        return plan.limit * INGEST_SECONDS_PER_FILE
    if isinstance(plan, DuplicationConfig):
        return 60.0  # a search over the distinct images: seconds for thousands, minutes for hundreds of thousands
    if isinstance(plan, DescriptorConfig):  # measured: 0.4 s a step at the defaults, two edited views an image
        return plan.steps * DESCRIPTOR_SECONDS_PER_STEP * plan.batch_size / 128 * (plan.resolution / 16) ** 2 \
            * (plan.width / 32) ** 2
    if isinstance(plan, RouterConfig):  # a classifier of a few layers: about a tenth of a small UNet's step
        return plan.steps * REFERENCE_SECONDS_PER_STEP * 0.1 * plan.batch_size / 64 * (plan.resolution / 16) ** 2
    reference = TrainConfig()
    ref = _work(reference.resolution, reference.block_out_channels, reference.layers_per_block, reference.batch_size)
    if isinstance(plan, SampleConfig | AblationConfig | ModelAnalysis):
        per_image = _work(reference.resolution, reference.block_out_channels, reference.layers_per_block, 1) / 3
        images = (len(plan.image_seeds) if isinstance(plan, SampleConfig)
                  else plan.samples_per_class if isinstance(plan, ExtractionConfig) else plan.samples)
        images *= 2 if isinstance(plan, AblationConfig) else 1  # an ablation samples both twins
        experts = len(plan.expert_checkpoints) or 1  # a family runs each of its experts at every step
        return images * experts * plan.inference_steps * REFERENCE_SECONDS_PER_STEP * per_image / ref
    step = _work(plan.resolution, plan.block_out_channels, plan.layers_per_block, plan.batch_size)
    per_image = _work(plan.resolution, plan.block_out_channels, plan.layers_per_block, 1) / 3
    # Several nodes training together each train every step (on their own shards): N times the compute.
    train = plan.steps * plan.gradient_accumulation * REFERENCE_SECONDS_PER_STEP * step / ref * plan.workers
    sample = plan.sample_count * plan.sample_inference_steps * REFERENCE_SECONDS_PER_STEP * per_image / ref
    if plan.experts > 1 and plan.cluster is None:  # a family: each expert trains the plan, and a router is trained
        router = RouterConfig(dataset=plan.dataset, partition="sha256:" + "0" * 64, resolution=plan.resolution)
        return (train + sample) * plan.experts + estimated_seconds(router)
    return (train + sample) * (2 if plan.leave_out_authors or plan.leave_out_classes else 1)  # a twin trains too


class JobPlanError(ValueError):
    """A job plan that fails validation, with one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def parse_job_plan(data: Any) -> Plan:
    """Validate a job plan, naming each field that is wrong."""
    try:
        return _adapter.validate_python(data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            where = ".".join(str(part) for part in error["loc"]) or "job_plan"
            problems.append(f"job_plan.{where}: {error['msg']}")
        raise JobPlanError(problems) from None


def job_plan_schema() -> dict[str, Any]:
    return _adapter.json_schema()
