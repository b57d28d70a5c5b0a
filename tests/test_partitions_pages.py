"""A partition on the dataset's API and page: its clusters' sizes, licenses and contact sheets; refusals named."""

from __future__ import annotations

import io

from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import Session

import jobs.partition as partition_format
from service.archive.service import store_for
from service.datasets import partitions
from service.datasets.service import find
from service.errors import Invalid


def _recorded(session: Session, settings, k: int = 2):  # type: ignore[no-untyped-def]
    """A partition of the bundled set, cut round-robin (the cut itself is tested in test_partition)."""
    store = store_for(settings)
    version = find(session, "skimage-samples")
    records = partitions.manifest_records(store, version)
    assignment = {r["image_sha256"]: index % k for index, r in enumerate(records)}
    made = {"dataset_digest": version.digest, "k": k, "seed": 0, "descriptor": "round-robin",
            "assignment": assignment, "digest": partition_format.digest_of(version.digest, k, 0, assignment)}
    found = partitions.register(session, store, version, partition_format.encode(made))
    session.commit()
    return version, found, records


def test_the_partition_is_on_the_api_and_the_page_with_a_sheet_per_cluster(lite_session: Session, lite_settings,
                                                                            lite_client: TestClient) -> None:
    version, found, records = _recorded(lite_session, lite_settings)
    listed = lite_client.get("/api/datasets/skimage-samples/partitions")
    assert listed.status_code == 200
    (cut,) = listed.json()
    assert (cut["digest"], cut["k"], cut["dataset"]) == (found.digest, 2, "skimage-samples@1")
    assert [c["images"] for c in cut["clusters"]] == [(len(records) + 1) // 2, len(records) // 2]
    assert sum(sum(c["licenses"].values()) for c in cut["clusters"]) == len(records)
    page = lite_client.get("/datasets/skimage-samples@1")
    assert page.status_code == 200 and found.digest in page.text and cut["clusters"][1]["sheet_url"] in page.text
    sheet = lite_client.get(cut["clusters"][1]["sheet_url"])
    assert sheet.status_code == 200 and sheet.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(sheet.content)) as image:
        whole = Image.open(io.BytesIO(lite_client.get("/datasets/skimage-samples/sheet.png").content))
        assert image.size[0] * image.size[1] < whole.size[0] * whole.size[1]  # half the images, a smaller grid
    for bad in (f"/datasets/skimage-samples@1/partitions/{found.id}/clusters/2.png",
                "/datasets/skimage-samples@1/partitions/99999/clusters/0.png",
                "/datasets/skimage-samples@1/partitions/99999999999999999999/clusters/0.png",
                f"/datasets/skimage-samples@1/partitions/{found.id}/clusters/-1.png"):
        assert lite_client.get(bad).status_code in (404, 422), bad
    assert lite_client.get("/api/datasets/nothing@1/partitions").status_code == 404


def test_a_partition_must_be_of_the_version_and_assign_each_image_once(lite_session: Session,
                                                                       lite_settings) -> None:
    import pytest

    version, found, records = _recorded(lite_session, lite_settings)
    store = store_for(lite_settings)
    assert _recorded(lite_session, lite_settings)[1].id == found.id  # the same partition again: the one recorded
    short = {r["image_sha256"]: 0 for r in records[1:]}
    for assignment, digest, says in ((short, version.digest, "exactly the images"),
                                     ({r["image_sha256"]: 0 for r in records}, "sha256:" + "5" * 64, "not sha256")):
        made = {"dataset_digest": digest, "k": 1, "seed": 0, "assignment": assignment,
                "digest": partition_format.digest_of(digest, 1, 0, assignment)}
        with pytest.raises(Invalid, match=says):
            partitions.register(lite_session, store, version, partition_format.encode(made))


def test_a_plan_trains_one_cluster_and_its_attribution_names_exactly_that_clusters_images(
        lite_session: Session, lite_settings, tmp_path) -> None:
    import json

    import pytest

    from jobs import train
    from jobs.config import TrainConfig
    from service.archive.service import read_object
    from service.datasets.pinning import run_inputs
    from service.errors import DomainError
    from service.models import Role, Run
    from tests.factories import TINY_TRAIN, award, create_call, create_proposal, create_user

    version, found, records = _recorded(lite_session, lite_settings, k=3)
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin)
    plan = {**TINY_TRAIN, "dataset": "skimage-samples", "partition": found.digest, "cluster": 1}
    for wrong, says in (({"cluster": 3}, "clusters 0 to 2"), ({"partition": "sha256:" + "6" * 64}, "no partition"),
                        ({"cluster": None}, "name the cluster")):
        with pytest.raises(DomainError, match=says):
            create_proposal(lite_session, pi, call, job_plan={**plan, **wrong})
        lite_session.rollback()
    _, run = award(lite_session, admin, create_proposal(lite_session, pi, call, job_plan=plan))
    run = lite_session.get(Run, run.id)
    assert run.job_plan["partition_sha256"] == found.file_sha256
    inputs = run_inputs(lite_session, run)
    assert inputs["partition_sha256"] == found.file_sha256

    # The job, as a node runs it with its inputs fetched: it trains on cluster 1 alone.
    store = store_for(lite_settings)
    fetched = {}
    for name, sha in inputs.items():
        fetched[name] = tmp_path / "inputs" / name.replace(":", "_")
        fetched[name].parent.mkdir(exist_ok=True)
        fetched[name].write_bytes(read_object(store, sha, limit=1 << 30))
    cfg = TrainConfig.model_validate(run.job_plan)
    train.main(cfg, tmp_path / "out", inputs=fetched)
    attribution = json.loads((tmp_path / "out" / "attribution.json").read_text())
    cluster = {r["image_sha256"] for index, r in enumerate(records) if index % 3 == 1}
    assert {image["image_sha256"] for image in attribution["images"]} == cluster
    assert (attribution["partition"], attribution["cluster"]) == (found.digest, 1)
    # A partition file that is not the plan's is refused by the job.
    other = cfg.model_copy(update={"partition": "sha256:" + "7" * 64})
    with pytest.raises(ValueError, match="not the plan's"):
        train.cluster_images(other, fetched)
