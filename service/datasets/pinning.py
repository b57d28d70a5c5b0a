"""What a job plan's names point to, fixed when the plan is accepted: the dataset version (its name@version and
digest), the model version to fine-tune or sample (its checkpoint), checked against each other, so that a run
trains on exactly what its reviewers read. And, for a run, the archived objects its job is sent."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from jobs.config import (
    AblationConfig,
    DescriptorConfig,
    DuplicationConfig,
    ModelAnalysis,
    QualityConfig,
    ReplicationConfig,
    RouterConfig,
    SampleConfig,
    TrainConfig,
)
from jobs.kinds import job_kind
from jobs.package import job_inputs
from service.archive import service as archive
from service.datasets import partitions
from service.datasets import service as datasets
from service.errors import Invalid, NotFound
from service.modelcards import service as models
from service.models import DatasetVersion, ModelVersion, Run, RunState, User, Withdrawal

# The fields a fine-tune takes over from its base: the UNet's shape and the noise schedule.
ARCHITECTURE = ("resolution", "block_out_channels", "layers_per_block", "num_train_timesteps", "conditioning")


def _model(session: Session, ref: str, field: str, family: bool = False) -> ModelVersion:
    """The model version named; a family of experts only where the plan can take one (`family`: sampling)."""
    name, _, number = ref.partition("@")
    try:
        version = models.find(session, name, int(number))
    except NotFound:
        raise Invalid(f"job_plan.{field}: no model version {ref!r}") from None
    if version.withdrawn_at is not None:
        raise Invalid(f"job_plan.{field}: {ref} was withdrawn: {version.withdrawn_reason}")
    if models.is_descriptor(version):
        raise Invalid(f"job_plan.{field}: {ref} is a copy descriptor, not a diffusion model; an analysis names it "
                      "as its descriptor")
    if version.family and not family:
        raise Invalid(f"job_plan.{field}: {ref} is a family of experts, which can be sampled; fine-tunes and "
                      "analyses take one model (an expert's run, or a model version of one)")
    return version


def descriptor_file(session: Session, ref: str) -> str | None:
    """The file of the plan's copy descriptor: None for the structure descriptor, else a registered descriptor
    version's."""
    if ref == "structure":
        return None
    name, _, number = ref.partition("@")
    try:
        version = models.find(session, name, int(number))
    except NotFound:
        raise Invalid(f"job_plan.descriptor: no descriptor version {ref!r} (structure, or a registered descriptor "
                      "run's name@N)") from None
    if not models.is_descriptor(version):
        raise Invalid(f"job_plan.descriptor: {ref} is a diffusion model, not a copy descriptor")
    if version.withdrawn_at is not None:
        raise Invalid(f"job_plan.descriptor: {ref} was withdrawn: {version.withdrawn_reason}")
    return version.checkpoint_sha256


def _dataset(session: Session, ref: str) -> DatasetVersion:
    try:
        return datasets.find(session, ref)
    except NotFound:
        raise Invalid(f"job_plan.dataset: no dataset version {ref!r} (see /datasets)") from None


def base_classes(session: Session, base: ModelVersion) -> list[str]:
    if base.config.get("conditioning") != "class":
        return []
    dataset = datasets.by_digest(session, base.dataset_digest)
    return list(dataset.classes) if dataset is not None else []


def _check_left_out(ref: str, known: list[str], exclude: list[str], leave_out: list[str], what: str,
                    relation: str) -> None:
    """Names left out of training (exclude_…) and out of a leave-out twin (leave_out_…) must be the dataset's own
    authors or classes (compared case-folded), and leave something to train on."""
    names = {name.casefold(): name for name in known}
    for field, wanted in ((f"exclude_{what}", exclude), (f"leave_out_{what}", leave_out)):
        unknown = [name for name in wanted if name.casefold() not in names]
        if unknown:
            have = f"; its {what} are {', '.join(sorted(names.values()))}" if names else f"; it has no {what}"
            raise Invalid(f"job_plan.{field}: no image in {ref} is {relation} {', '.join(map(repr, unknown))}"
                          f"{have}")
    if names and {name.casefold() for name in exclude} >= set(names):
        raise Invalid(f"job_plan.exclude_{what}: this leaves no image of {ref} to train on")
    if leave_out and names and {name.casefold() for name in [*exclude, *leave_out]} >= set(names):
        raise Invalid(f"job_plan.leave_out_{what}: the twin would have no image of {ref} left to train on")


def pin_train(session: Session, plan: TrainConfig) -> TrainConfig:
    dataset = _dataset(session, plan.dataset)
    if plan.dataset_digest and plan.dataset_digest != dataset.digest:
        raise Invalid(f"job_plan.dataset_digest: {plan.dataset} is {dataset.digest}, not {plan.dataset_digest}")
    ref = f"{dataset.name}@{dataset.version}"
    _check_left_out(ref, dataset.authors, plan.exclude_authors, plan.leave_out_authors, "authors", "by")
    _check_left_out(ref, dataset.classes, plan.exclude_classes, plan.leave_out_classes, "classes", "of class")
    if plan.conditioning == "class" and not dataset.classes:
        raise Invalid(f"job_plan.conditioning: {ref} has no classes (ingest several categories to make some)")
    changes: dict[str, Any] = {"dataset": ref, "dataset_digest": dataset.digest, "base_checkpoint_sha256": None,
                               "withdrawn_images": withdrawn_images(session, plan.withdrawn_images)}
    if plan.base_model:
        base = _model(session, plan.base_model, "base_model")
        differs = [f"{field} {getattr(plan, field)!r} (the base has {base.config.get(field, 'none')!r})"
                   for field in ARCHITECTURE if base.config.get(field, "none") != getattr(plan, field)]
        if differs:
            raise Invalid(f"job_plan: a fine-tune keeps its base's architecture; change {'; '.join(differs)}")
        if plan.conditioning == "class" and base_classes(session, base) != dataset.classes:
            raise Invalid(f"job_plan.dataset: {ref}'s classes ({', '.join(dataset.classes)}) are not those "
                          f"{plan.base_model} was trained on")
        changes["base_checkpoint_sha256"] = base.checkpoint_sha256
    if plan.experts > 1 and plan.cluster is None:
        changes.update(_family_partition(session, plan, dataset, ref))
    else:
        changes["partition_sha256"] = _partition(session, plan, dataset, ref) if plan.partition else None
    return plan.model_copy(update=changes)


def _family_partition(session: Session, plan: TrainConfig, dataset: DatasetVersion, ref: str) -> dict[str, str]:
    """A family's partition: the dataset's into `experts` clusters with `partition_seed`, recorded beforehand."""
    found = partitions.of_k(session, dataset, plan.experts, plan.partition_seed)
    if found is None:
        raise Invalid(f"job_plan.experts: {ref} has no partition into {plan.experts} clusters with seed "
                      f"{plan.partition_seed}; an admin makes one with `observatory dataset partition {ref} "
                      f"--clusters {plan.experts} --seed {plan.partition_seed}`")
    if plan.partition and plan.partition != found.digest:
        raise Invalid(f"job_plan.partition: {ref}'s partition into {plan.experts} clusters with seed "
                      f"{plan.partition_seed} is {found.digest}")
    return {"partition": found.digest, "partition_sha256": found.file_sha256}


def pin_router(session: Session, plan: RouterConfig) -> RouterConfig:
    dataset = _dataset(session, plan.dataset)
    ref = f"{dataset.name}@{dataset.version}"
    return plan.model_copy(update={"dataset": ref, "dataset_digest": dataset.digest,
                                   "partition_sha256": _partition(session, plan, dataset, ref),
                                   "withdrawn_images": withdrawn_images(session, plan.withdrawn_images)})


def withdrawn_images(session: Session, given: list[str]) -> list[str]:
    """Every image withdrawn so far (and those a rebuild names): no new training sees one."""
    return sorted(set(given) | set(session.exec(select(Withdrawal.image_sha256)).all()))


def _partition(session: Session, plan: TrainConfig | RouterConfig, dataset: DatasetVersion, ref: str) -> str:
    """The file of the plan's partition, which must be of the plan's dataset version (and, for an expert, have
    its cluster)."""
    try:
        found = partitions.find(session, str(plan.partition))
    except NotFound:
        raise Invalid(f"job_plan.partition: no partition {plan.partition} is recorded (see the dataset's page, or "
                      "`observatory dataset partition`)") from None
    if found.dataset_id != dataset.id:
        raise Invalid(f"job_plan.partition: {plan.partition} is a partition of another dataset version than {ref}")
    if isinstance(plan, TrainConfig) and (plan.cluster is None or plan.cluster >= found.k):
        raise Invalid(f"job_plan.cluster: the partition has clusters 0 to {found.k - 1}")
    if isinstance(plan, TrainConfig) and plan.experts > 1 and plan.experts != found.k:
        raise Invalid(f"job_plan.experts: the partition has {found.k} clusters, not {plan.experts}")
    return found.file_sha256


def pin_sample(session: Session, plan: SampleConfig) -> SampleConfig:
    if not plan.model:
        if plan.expert_checkpoints or plan.router_sha256:
            raise Invalid("job_plan.model: a family is sampled by naming its model version")
        return plan
    version = _model(session, plan.model, "model", family=True)
    if version.family:
        return plan.model_copy(update={
            "checkpoint_sha256": version.checkpoint_sha256, "router_sha256": version.family["router"]["sha256"],
            "expert_checkpoints": [e["checkpoint_sha256"] for e in version.family["experts"]]})
    if plan.checkpoint_sha256 and plan.checkpoint_sha256 != version.checkpoint_sha256:
        raise Invalid(f"job_plan.checkpoint_sha256: {plan.model}'s checkpoint is {version.checkpoint_sha256}")
    classes = base_classes(session, version)
    if plan.classes and not classes:
        raise Invalid(f"job_plan.classes: {plan.model} is not class-conditional")
    unknown = [name for name in plan.classes if name not in classes]
    if unknown:
        raise Invalid(f"job_plan.classes: {plan.model} has no class {', '.join(map(repr, unknown))}; its classes "
                      f"are {', '.join(classes)}")
    return plan.model_copy(update={"checkpoint_sha256": version.checkpoint_sha256})


def pin_model_analysis(session: Session, actor: User, plan: ModelAnalysis) -> Any:
    """An analysis measures a model against its own training set: a model version's, a finished training run's,
    or (a replication search of a sample run's images) the model that sample run drew from. Runs are only those
    whose outputs the actor may download."""
    extra: dict[str, Any] = {**NO_FAMILY, "withdrawn_images": withdrawn_images(session, [])}
    if plan.expert is not None and not plan.model:
        raise Invalid("job_plan.expert: name the family's model version (model) to analyse one of its experts")
    if plan.model:
        version = _model(session, plan.model, "model", family=True)
        checkpoint, digest, field = version.checkpoint_sha256, version.dataset_digest, "model"
        if version.family:
            checkpoint, family_files = _family_files(session, version, plan.model, plan.expert, "expert")
            extra.update(family_files)
        elif plan.expert is not None:
            raise Invalid(f"job_plan.expert: {plan.model} is one model, not a family of experts")
    elif plan.run:
        run = session.get(Run, plan.run)
        artifact = archive.find_artifact(session, run.id, "checkpoint.pt") if run else None
        if run is None or run.job_kind != "train" or run.state != RunState.succeeded or artifact is None \
                or not archive.can_download(session, actor, run.id):
            raise Invalid(f"job_plan.run: no finished training run {plan.run} whose checkpoint you may use")
        checkpoint, digest, field = artifact.sha256, run.job_plan.get("dataset_digest"), "run"
    else:
        checkpoint, digest, sampled = _sampled(session, actor, plan.samples_from)
        extra.update(sampled)
        field = "samples_from"
    dataset = datasets.by_digest(session, digest) if digest else None
    if dataset is None:
        raise Invalid(f"job_plan.{field}: {plan.subject} was trained on {digest or 'an unpinned dataset'}, which is "
                      "not a registered dataset version; its training set cannot be searched")
    if not isinstance(plan, QualityConfig):
        extra["descriptor_sha256"] = descriptor_file(session, plan.descriptor)
    if isinstance(plan, ReplicationConfig):
        extra.update(_adopted_threshold(session, plan))
    return plan.model_copy(update={"checkpoint_sha256": checkpoint, **extra,
                                   "dataset": f"{dataset.name}@{dataset.version}", "dataset_digest": dataset.digest})


def _adopted_threshold(session: Session, plan: ReplicationConfig) -> dict[str, Any]:
    """The ratio threshold people's marks on the latest marked search of the same model version suggest, when the
    plan adopts it (recorded with the run it came from and how many marks it rests on); none otherwise."""
    none = {"ratio_threshold": None, "threshold_from_run": None, "threshold_marks": None}
    if not plan.adopt_marked_threshold:
        return none
    from service.analyses.marks import latest_marked

    found = latest_marked(session, plan.model) if plan.model else None
    if found is None:
        raise Invalid(f"job_plan.adopt_marked_threshold: no earlier search of {plan.model or 'this run'} has marks "
                      "that suggest a threshold yet (mark its pairs copy or not a copy first)")
    run, suggestion = found
    return {"ratio_threshold": suggestion.ratio, "threshold_from_run": run.id, "threshold_marks": suggestion.marks}


def _sampled(session: Session, actor: User, run_id: int) -> tuple[str, str | None, dict[str, str]]:
    """A finished sample run's checkpoint, the digest of the set that checkpoint was trained on, and its images."""
    run = session.get(Run, run_id)
    grid = archive.find_artifact(session, run_id, "samples.png") if run else None
    metrics = archive.find_artifact(session, run_id, "metrics.json") if run else None
    if run is None or run.job_kind != "sample" or run.state != RunState.succeeded or grid is None \
            or metrics is None or not archive.can_download(session, actor, run_id):
        raise Invalid(f"job_plan.samples_from: no finished sample run {run_id} whose outputs you may use")
    checkpoint = str(run.job_plan.get("checkpoint_sha256"))
    files = {"samples_sha256": grid.sha256, "samples_metrics_sha256": metrics.sha256}
    version = session.exec(select(ModelVersion).where(ModelVersion.checkpoint_sha256 == checkpoint)).first()
    if version is not None:
        digest = version.dataset_digest
    else:
        made = archive.find_checkpoint(session, checkpoint)
        trained = session.get(Run, made.run_id) if made else None
        digest = trained.job_plan.get("dataset_digest") if trained else None
    if run.job_plan.get("expert_checkpoints"):  # a family's samples: its files come with them
        if version is None or not version.family:
            raise Invalid(f"job_plan.samples_from: run {run_id} sampled a family that is not a registered version")
        checkpoint, family_files = _family_files(session, version, run.job_plan.get("model") or "the family", None, "")
        files.update(family_files)
    return checkpoint, digest, files


# A plan about one model names no family's files: a person cannot point a job at checkpoints by hand.
NO_FAMILY: dict[str, Any] = {"expert_checkpoints": [], "router_sha256": None, "partition": None,
                             "partition_sha256": None}


def _family_files(session: Session, version: ModelVersion, ref: str, expert: int | None,
                  field: str) -> tuple[str, dict[str, Any]]:
    """What a job needs of a registered family: its checkpoint (the router's, or one expert's) and its files, the
    whole family's, or one expert's and the partition (to compare that expert with its own cluster)."""
    family = version.family or {}
    experts = family.get("experts", [])
    try:
        cut = partitions.find(session, str(family.get("partition")))
    except NotFound:
        raise Invalid(f"job_plan.{field or 'model'}: {ref}'s partition is no longer recorded") from None
    files: dict[str, Any] = {"partition": cut.digest, "partition_sha256": cut.file_sha256}
    if expert is None:
        return family["router"]["sha256"], {**files, "router_sha256": family["router"]["sha256"],
                                            "expert_checkpoints": [e["checkpoint_sha256"] for e in experts]}
    if expert >= len(experts):
        raise Invalid(f"job_plan.{field}: {ref} has experts 0 to {len(experts) - 1}")
    return experts[expert]["checkpoint_sha256"], {**files, "router_sha256": None, "expert_checkpoints": []}


# What twins may differ in: the authors and classes left out (the digest is the same when the dataset is, but a
# plan accepted before digests were pinned lacks it; the datasets themselves are compared by the versions' digests).
TWIN_FREE = ("exclude_authors", "leave_out_authors", "exclude_classes", "leave_out_classes", "dataset_digest")


def _left_out(config: dict[str, Any], key: str) -> dict[str, str]:
    return {name.casefold(): name for name in config.get(key, [])}


def pin_ablation(session: Session, plan: AblationConfig) -> AblationConfig:
    """The twins must be trained alike on one dataset version, the twin leaving out more authors or classes;
    those both left out are the control. A family's twin may be itself minus one expert (`without_expert`)."""
    if plan.without_expert is not None:
        return _pin_family_ablation(session, plan)
    seen, twin = _model(session, plan.with_model, "with_model"), _model(session, plan.without_model, "without_model")
    if seen.id == twin.id:
        raise Invalid("job_plan: name two different model versions, the one that saw the images and its twin")
    if seen.dataset_digest != twin.dataset_digest:
        raise Invalid(f"job_plan: {plan.with_model} and {plan.without_model} were trained on different datasets")
    differs = sorted(key for key in {*seen.config, *twin.config} - set(TWIN_FREE)
                     if seen.config.get(key) != twin.config.get(key))
    if differs:
        raise Invalid(f"job_plan: the twins were not trained alike: they differ in {', '.join(differs)}")
    seen_out, twin_out = ({key: _left_out(model.config, f"exclude_{key}") for key in ("authors", "classes")}
                          for model in (seen, twin))
    if not all(set(seen_out[k]) <= set(twin_out[k]) for k in seen_out) or seen_out == twin_out:
        raise Invalid(f"job_plan.without_model: {plan.without_model} must leave out every author and class "
                      f"{plan.with_model} left out, and more")
    if not seen_out["authors"] and not seen_out["classes"]:
        raise Invalid("job_plan: the twins leave out no author or class in common, so no image was seen by "
                      "neither: train both without a control author or class (exclude_authors, exclude_classes) "
                      "to compare against")
    dataset = datasets.by_digest(session, seen.dataset_digest)
    if dataset is None:
        raise Invalid(f"job_plan: the twins' dataset {seen.dataset_digest} is not a registered dataset version")

    def only_twin(key: str) -> list[str]:
        return sorted(twin_out[key][name] for name in set(twin_out[key]) - set(seen_out[key]))

    return plan.model_copy(update={
        **NO_FAMILY, "withdrawn_images": withdrawn_images(session, []),
        "with_checkpoint_sha256": seen.checkpoint_sha256, "without_checkpoint_sha256": twin.checkpoint_sha256,
        "dataset": f"{dataset.name}@{dataset.version}", "dataset_digest": dataset.digest,
        "left_out": only_twin("authors"), "control": sorted(seen_out["authors"].values()),
        "left_out_classes": only_twin("classes"), "control_classes": sorted(seen_out["classes"].values())})


def _pin_family_ablation(session: Session, plan: AblationConfig) -> AblationConfig:
    """A family and itself without one expert: the left-out images are that expert's cluster, the control the
    others (both saw them)."""
    version = _model(session, plan.with_model, "with_model", family=True)
    if not version.family:
        raise Invalid(f"job_plan.without_expert: {plan.with_model} is one model, not a family of experts; name its "
                      "twin (without_model)")
    experts = len(version.family["experts"])
    if int(plan.without_expert or 0) >= experts:
        raise Invalid(f"job_plan.without_expert: {plan.with_model} has experts 0 to {experts - 1}")
    dataset = datasets.by_digest(session, version.dataset_digest)
    if dataset is None:
        raise Invalid(f"job_plan: {plan.with_model}'s dataset {version.dataset_digest} is not a registered dataset "
                      "version")
    checkpoint, files = _family_files(session, version, plan.with_model, None, "with_model")
    return plan.model_copy(update={
        **files, "withdrawn_images": withdrawn_images(session, []),
        "with_checkpoint_sha256": checkpoint, "without_checkpoint_sha256": None,
        "dataset": f"{dataset.name}@{dataset.version}", "dataset_digest": dataset.digest,
        "left_out": [], "control": [], "left_out_classes": [], "control_classes": []})


def pin_duplication(session: Session, plan: DuplicationConfig) -> DuplicationConfig:
    dataset = _dataset(session, plan.dataset)
    return plan.model_copy(update={"dataset": f"{dataset.name}@{dataset.version}", "dataset_digest": dataset.digest,
                                   "descriptor_sha256": descriptor_file(session, plan.descriptor)})


def pin_descriptor(session: Session, plan: DescriptorConfig) -> DescriptorConfig:
    dataset = _dataset(session, plan.dataset)
    return plan.model_copy(update={"dataset": f"{dataset.name}@{dataset.version}", "dataset_digest": dataset.digest,
                                   "withdrawn_images": withdrawn_images(session, plan.withdrawn_images)})


def run_inputs(session: Session, run: Run) -> dict[str, str]:
    """The archived objects a run's job is sent, input name -> sha256: the plan's own (a checkpoint), and the
    files of its dataset version (`dataset:manifest.jsonl`, `dataset:shard-…`)."""
    kind = job_kind(run.job_kind)
    inputs = kind.input_digests(run.job_plan)
    if kind.uses_dataset:
        ref = run.job_plan.get("dataset_digest") or run.job_plan.get("dataset") or ""
        try:
            dataset = datasets.find(session, str(ref))
        except NotFound:
            raise NotFound(f"the run's dataset {ref!r} is not registered") from None
        inputs.update(job_inputs(dataset.files))
    return inputs


def job_config(session: Session, run: Run) -> dict[str, Any]:
    """The plan the job runs: a plan accepted before datasets were pinned gets its version's digest now."""
    plan = dict(run.job_plan)
    if job_kind(run.job_kind).uses_dataset and not plan.get("dataset_digest"):
        plan["dataset_digest"] = datasets.find(session, str(plan.get("dataset", ""))).digest
    return plan
