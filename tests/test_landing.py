"""A run as a data product of the archive: its landing page (obs:run/ID), public metadata at once, files after the
exclusive period, citations as text, BibTeX and CITATION.cff, and a DOI an operator records."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

import yaml
from fastapi.testclient import TestClient
from sqlmodel import Session

from service.config import Settings
from service.models import Award, Role, Run, RunState
from service.timeutil import utcnow
from tests.factories import (
    add_coi,
    archive_outputs,
    auth_headers,
    award,
    create_call,
    create_proposal,
    create_user,
)

PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def _product(session: Session, settings: Settings, title: str = "Memorisation at small scale"):  # noqa: ANN202
    admin = create_user(session, Role.admin)
    pi, coi = create_user(session, name="Ada Lovelace"), create_user(session, name="Grace Hopper")
    proposal = create_proposal(session, pi, create_call(session, admin, title="Cycle 1"), title=title)
    add_coi(session, pi, proposal, coi)
    _, run = award(session, admin, proposal)
    run = session.get(Run, run.id)
    run.state, run.finished_at = RunState.succeeded, utcnow()
    session.add(run)
    archive_outputs(session, settings, run, {"checkpoint.pt": b"weights" * 100, "samples.png": PNG,
                                             "metrics.json": b"{}"})
    session.commit()
    return run, admin, pi


def test_metadata_is_public_at_once_and_files_after_the_exclusive_period(lite_client: TestClient,
                                                                         lite_session: Session,
                                                                         lite_settings: Settings) -> None:
    run, _, pi = _product(lite_session, lite_settings)
    url = f"/api/archive/runs/{run.id}"
    product = lite_client.get(url).json()  # anonymous
    assert product["identifier"] == f"obs:run/{run.id}" and product["team"] == ["Ada Lovelace", "Grace Hopper"]
    assert product["title"] == "Memorisation at small scale" and product["call"] == "Cycle 1"
    assert product["dataset_digest"] == run.job_plan["dataset_digest"] and product["job_kind"] == "train"
    assert not product["files_public"] and product["thumbnail_url"] is None
    assert {f["name"] for f in product["files"]} >= {"checkpoint.pt", "samples.png", "manifest.json"}
    assert all(f["url"] is None for f in product["files"])  # listed with their digests, not linked
    page = lite_client.get(f"/archive/runs/{run.id}").text
    assert f"obs:run/{run.id}" in page and "to its team alone" in page and "/artifacts/" not in page
    assert lite_client.get(f"/api/runs/{run.id}/artifacts/checkpoint.pt").status_code == 404  # still exclusive
    mine = lite_client.get(url, headers=auth_headers(lite_session, pi)).json()
    assert mine["files_public"] and all(f["url"] for f in mine["files"])  # the team has them already
    granted = lite_session.get(Award, run.award_id)
    granted.exclusive_until = utcnow() - timedelta(seconds=1)
    lite_session.add(granted)
    lite_session.commit()
    product = lite_client.get(url).json()
    assert product["files_public"] and product["thumbnail_url"] == f"/api/runs/{run.id}/artifacts/samples.png"
    listed = {f["name"]: f for f in product["files"]}
    got = lite_client.get(listed["checkpoint.pt"]["url"])
    assert got.status_code == 200 and hashlib.sha256(got.content).hexdigest() == listed["checkpoint.pt"]["sha256"]
    page = lite_client.get(f"/archive/runs/{run.id}").text
    assert f'href="/api/runs/{run.id}/artifacts/checkpoint.pt"' in page and "sample grid" in page


def test_citations_name_the_team_the_facility_and_the_identifier(lite_client: TestClient, lite_session: Session,
                                                                 lite_settings: Settings) -> None:
    run, admin, pi = _product(lite_session, lite_settings, title="Copies {at} 50% & more")
    product = lite_client.get(f"/api/archive/runs/{run.id}").json()
    year = str(utcnow().year)
    text = product["citation"]["text"]
    assert text.startswith(f"Ada Lovelace, Grace Hopper ({year}). Copies {{at}} 50% & more: run {run.id} (train)")
    assert f"Commons Observatory. obs:run/{run.id}." in text
    bib = lite_client.get(f"/archive/runs/{run.id}/citation.bib")
    assert bib.status_code == 200 and "attachment" in bib.headers["content-disposition"]
    assert bib.text.startswith(f"@misc{{obs-run-{run.id},\n") and "author = {Ada Lovelace and Grace Hopper}" in bib.text
    assert r"title = {{Copies \{at\} 50\% \& more: run" in bib.text  # braces and specials escaped
    unescaped = re.sub(r"\\[{}]", "", bib.text)
    assert unescaped.count("{") == unescaped.count("}")  # balanced, so a title cannot end the entry early
    cff = yaml.safe_load(lite_client.get(f"/archive/runs/{run.id}/CITATION.cff").text)
    assert cff["cff-version"] == "1.2.0" and cff["type"] == "dataset"
    assert [a["name"] for a in cff["authors"]] == ["Ada Lovelace", "Grace Hopper"]
    assert cff["identifiers"][0]["value"] == f"obs:run/{run.id}" and "doi" not in bib.text
    # An operator records the DOI it registered; it shows in every form.
    url = f"/api/archive/runs/{run.id}/doi"
    assert lite_client.put(url, headers=auth_headers(lite_session, pi), json={"doi": "10.5281/x"}).status_code == 403
    bad = lite_client.put(url, headers=auth_headers(lite_session, admin), json={"doi": "not a doi"})
    assert bad.status_code == 422 and "is not a DOI" in bad.json()["detail"]
    done = lite_client.put(url, headers=auth_headers(lite_session, admin),
                           json={"doi": "https://doi.org/10.5281/zenodo.1234"})
    assert done.status_code == 200 and done.json()["doi"] == "10.5281/zenodo.1234"
    assert "doi = {10.5281/zenodo.1234}" in lite_client.get(f"/archive/runs/{run.id}/citation.bib").text
    cff = yaml.safe_load(lite_client.get(f"/archive/runs/{run.id}/CITATION.cff").text)
    assert {"type": "doi", "value": "10.5281/zenodo.1234"} in cff["identifiers"]
    assert "https://doi.org/10.5281/zenodo.1234" in lite_client.get(f"/archive/runs/{run.id}").text


def test_only_a_succeeded_run_is_a_product(lite_client: TestClient, lite_session: Session) -> None:
    admin = create_user(lite_session, Role.admin)
    _, queued = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                           create_call(lite_session, admin)))
    for path in (f"/api/archive/runs/{queued.id}", f"/archive/runs/{queued.id}", "/api/archive/runs/999999",
                 f"/archive/runs/{queued.id}/citation.bib"):
        response = lite_client.get(path)
        assert response.status_code == 404, path
    assert "only a run that succeeded" in lite_client.get(f"/api/archive/runs/{queued.id}").json()["detail"]
