"""Model and dataset versions as products of the archive: their identifiers and citations (a model's names its
images' authors in aggregate and links every one), the card's findings from the analyses (public ones to all, an
exclusive one to its team), and the card as a Hugging Face-style README.md downloadable beside the weights."""

from __future__ import annotations

import hashlib
import json

import yaml
from fastapi.testclient import TestClient
from sqlmodel import Session

from service.archive.service import store_for
from service.config import Settings
from service.modelcards import service as modelcards
from service.models import ModelVersion, Role, Run, RunState, User
from service.timeutil import utcnow
from tests.factories import (
    TINY_TRAIN,
    archive_outputs,
    auth_headers,
    award,
    create_call,
    create_proposal,
    create_user,
    succeeded_run,
)

IMAGES = [{"title": "File:Oak.jpg", "author": "Ada", "license": "CC BY-SA 4.0"},
          {"title": "File:Elm.jpg", "author": "Ada", "license": "CC BY 4.0"},
          {"title": "File:Ash.jpg", "author": "Brunel", "license": "CC0"}]
REPLICATION = {"kind": "replication", "config": {"samples": 64},
               "thresholds": {"ratio": 0.5, "similarity": 0.93, "percentile": 99},
               "summary": {"copy_fraction": 0.125, "copies": 8, "training_images_copied": 2}}
QUALITY = {"kind": "quality", "features": {"name": "structure descriptor"},
           "model_vs_training": {"fid": 12.5, "kid": 0.012, "kid_std": 0.003}}


def _model(session: Session, settings: Settings) -> tuple[ModelVersion, User]:
    admin = create_user(session, Role.admin)
    pi = create_user(session, name="Ada Lovelace")
    proposal = create_proposal(session, pi, create_call(session, admin), job_plan=dict(TINY_TRAIN))
    _, run = award(session, admin, proposal)
    run = session.get(Run, run.id)
    attribution = {"dataset": run.job_plan["dataset"], "digest": run.job_plan["dataset_digest"], "images": IMAGES}
    archive_outputs(session, settings, run, {"checkpoint.pt": b"weights", "samples.png": b"\x89PNG",
                                             "training_images.png": b"\x89PNG", "metrics.json": b"{}",
                                             "attribution.json": json.dumps(attribution).encode()})
    run.state = RunState.succeeded
    session.add(run)
    version = modelcards.register(session, store_for(settings), actor=admin, run_id=run.id, name="commons-trees")
    session.commit()
    return version, admin


def _analysis(session: Session, settings: Settings, admin: User, kind: str, results: dict, *, public: bool) -> Run:
    return succeeded_run(session, settings, admin, {"results.json": json.dumps(results).encode(),
                                                    "report.html": b"<html>report</html>"},
                         pi=create_user(session, name="Grace Hopper"), public=public, kind=kind,
                         plan={"model": "commons-trees@1"})


def test_a_card_without_analyses_says_so_and_cites_the_images_authors_in_aggregate(
        lite_client: TestClient, lite_session: Session, lite_settings: Settings) -> None:
    version, _ = _model(lite_session, lite_settings)
    card = lite_client.get("/api/models/commons-trees/1").json()  # anonymous
    assert card["identifier"] == "obs:model/commons-trees@1" and card["analyses"] == []
    assert card["analyses_exclusive"] == 0
    assert not card["weights_public"] and card["weights_public_from"]  # the run's award is still exclusive
    text = card["citation"]["text"]
    assert text.startswith(f"Ada Lovelace ({utcnow().year}). commons-trees@1: a diffusion model [Model weights]. "
                           "Commons Observatory. obs:model/commons-trees@1.")
    assert "3 images by 2 authors" in text and card["attribution_url"] in text
    served = lite_client.get(card["attribution_url"])
    assert served.status_code == 200 and [e["author"] for e in served.json()["images"]] == ["Ada", "Ada", "Brunel"]
    assert hashlib.sha256(served.content).hexdigest() == version.attribution_sha256
    page = lite_client.get("/models/commons-trees/1").text
    assert "No analysis of this version has been run yet" in page and "obs:model/commons-trees@1" in page
    assert "The weights are public from" in page
    cff = yaml.safe_load(lite_client.get("/models/commons-trees/1/CITATION.cff").text)
    assert cff["type"] == "software" and cff["authors"] == [{"name": "Ada Lovelace"}]
    bib = lite_client.get("/models/commons-trees/1/citation.bib").text
    assert bib.startswith("@misc{obs-model-commons-trees-1,") and "3 images by 2 authors" in bib
    readme = yaml.safe_load(lite_client.get(card["readme_url"]).text.split("---")[1])
    assert readme["license"] == "other" and readme["license_name"] == "training data: cc-by-sa"
    assert "model-index" not in readme  # nothing measured, nothing claimed


def test_the_card_shows_what_the_analyses_found_public_to_all_exclusive_to_their_team(
        lite_client: TestClient, lite_session: Session, lite_settings: Settings) -> None:
    _, admin = _model(lite_session, lite_settings)
    replication = _analysis(lite_session, lite_settings, admin, "replication", REPLICATION, public=True)
    quality = _analysis(lite_session, lite_settings, admin, "quality", QUALITY, public=False)
    card = lite_client.get("/api/models/commons-trees/1").json()
    assert [a["run_id"] for a in card["analyses"]] == [replication.id] and card["analyses_exclusive"] == 1
    figures = dict(card["analyses"][0]["figures"])
    assert figures["Replication rate"].startswith("12.50% of 64 samples are copies (8)")
    assert "ratio under 0.5, similarity over 0.93" in figures["Threshold"]
    assert card["analyses"][0]["report_url"] == f"/api/runs/{replication.id}/artifacts/report.html"
    team = auth_headers(lite_session, lite_session.get(User, quality_pi(lite_session, quality)))
    mine = lite_client.get("/api/models/commons-trees/1", headers=team).json()
    assert {a["run_id"] for a in mine["analyses"]} == {replication.id, quality.id}
    assert dict(next(a for a in mine["analyses"] if a["kind"] == "quality")["figures"])["FID"] == \
        "12.5 on structure descriptor"
    page = lite_client.get("/models/commons-trees/1").text
    assert "12.50% of 64 samples" in page and "1 more still in their exclusive period" in page
    # The README is the same for everyone: public results only, in the model-index.
    got = lite_client.get(card["readme_url"])
    assert hashlib.sha256(got.content).hexdigest() == card["readme_sha256"] == mine["readme_sha256"]
    front = yaml.safe_load(got.text.split("---")[1])
    metrics = front["model-index"][0]["results"][0]["metrics"]
    assert metrics == [{"type": "replication_rate", "name": "Replication rate (share of samples that copy a "
                                                            "training image)", "value": 0.125}]
    assert front["datasets"] == ["obs:dataset/skimage-samples@1"]
    assert "12.50% of 64 samples" in got.text and "FID" not in got.text


def quality_pi(session: Session, run: Run) -> int:
    from service.models import Proposal

    return session.get(Proposal, run.proposal_id).pi_id


def test_a_dataset_version_is_cited_by_its_images_authors_in_aggregate(lite_client: TestClient) -> None:
    found = lite_client.get("/api/datasets/skimage-samples@1").json()
    assert found["identifier"] == "obs:dataset/skimage-samples@1" and found["doi"] == ""
    cited = found["citation"]["text"]
    assert cited.startswith(f"{len(found['authors'])} {found['origin']} contributors (")
    assert "obs:dataset/skimage-samples@1" in cited
    bib = lite_client.get("/datasets/skimage-samples@1/citation.bib").text
    assert f"author = {{{{{len(found['authors'])} " in bib  # a collective author, kept whole
    cff = yaml.safe_load(lite_client.get("/datasets/skimage-samples@1/CITATION.cff").text)
    assert cff["identifiers"][0]["value"] == "obs:dataset/skimage-samples@1"
    page = lite_client.get("/datasets/skimage-samples@1").text
    assert "obs:dataset/skimage-samples@1" in page and "citation.bib" in page
