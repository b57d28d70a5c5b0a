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
