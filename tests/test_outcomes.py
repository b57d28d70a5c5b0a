"""Outcomes of an award: papers, preprints, datasets and software its team records (a DOI or a URL), public with
the accepted proposal, on `/accepted` and on its runs' landing pages."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlmodel import Session

from service.config import Settings
from service.models import Role, Run, RunState
from tests.factories import (
    PASSWORD,
    add_coi,
    archive_outputs,
    auth_headers,
    award,
    create_call,
    create_proposal,
    create_user,
    post_form,
)


def test_a_team_records_what_came_of_its_award_and_everyone_sees_it(lite_client: TestClient, lite_session: Session,
                                                                    lite_settings: Settings) -> None:
    session = lite_session
    admin, pi, coi, other = (create_user(session, Role.admin), create_user(session), create_user(session),
                             create_user(session))
    call = create_call(session, admin)
    proposal = create_proposal(session, pi, call, title="Does it copy?")
    add_coi(session, pi, proposal, coi)
    pending = create_proposal(session, pi, call)
    _, run = award(session, admin, proposal)
    run = session.get(Run, run.id)
    run.state = RunState.succeeded
    session.add(run)
    archive_outputs(session, lite_settings, run, {"checkpoint.pt": b"w", "metrics.json": b"{}"})
    url = f"/api/proposals/{proposal.id}/outcomes"
    paper = {"kind": "paper", "title": "Memorisation in small diffusion models", "doi": "https://doi.org/10.1234/abc",
             "year": 2027}
    made = lite_client.post(url, headers=auth_headers(session, pi), json=paper)
    assert made.status_code == 201, made.text
    assert made.json()["doi"] == "10.1234/abc" and made.json()["link"] == "https://doi.org/10.1234/abc"
    preprint = {"kind": "preprint", "title": "A preprint", "url": "https://arxiv.org/abs/2712.00001"}
    assert lite_client.post(url, headers=auth_headers(session, coi), json=preprint).status_code == 201
    for bad, why in (({"kind": "paper", "title": "t"}, "Give a DOI or a URL"),
                     ({"kind": "paper", "title": "t", "doi": "11.1/x"}, "doi: '11.1/x' is not a DOI"),
                     ({"kind": "paper", "title": "t", "url": "javascript:alert(1)"}, "http(s)"),
                     ({"kind": "poem", "title": "t", "url": "https://x.org"}, "kind")):
        refused = lite_client.post(url, headers=auth_headers(session, pi), json=bad)
        assert refused.status_code == 422 and why in refused.text and '": ' not in refused.text[:12], refused.text
    assert lite_client.post(url, headers=auth_headers(session, other), json=paper).status_code == 404
    not_yet = lite_client.post(f"/api/proposals/{pending.id}/outcomes", headers=auth_headers(session, pi),
                               json=paper)
    assert not_yet.status_code == 409 and "outcomes are recorded for an award" in not_yet.json()["detail"]
    # Public: the list, /accepted, and the run's landing page.
    listed = lite_client.get(url).json()
    assert [o["title"] for o in listed] == ["Memorisation in small diffusion models", "A preprint"]
    assert lite_client.get(f"/api/proposals/{pending.id}/outcomes").status_code == 404
    accepted = next(a for a in lite_client.get("/api/accepted").json() if a["proposal_id"] == proposal.id)
    assert len(accepted["outcomes"]) == 2
    assert "Memorisation in small diffusion models" in lite_client.get("/accepted").text
    landing = lite_client.get(f"/api/archive/runs/{run.id}").json()
    assert {o["kind"] for o in landing["outcomes"]} == {"paper", "preprint"}
    assert 'href="https://doi.org/10.1234/abc"' in lite_client.get(f"/archive/runs/{run.id}").text
    # Removed by its team or an admin, and by nobody else.
    first = listed[0]["id"]
    assert lite_client.delete(f"/api/outcomes/{first}", headers=auth_headers(session, other)).status_code == 404
    assert lite_client.delete(f"/api/outcomes/{first}", headers=auth_headers(session, coi)).status_code == 204
    second = listed[1]["id"]
    assert lite_client.delete(f"/api/outcomes/{second}", headers=auth_headers(session, admin)).status_code == 204
    assert lite_client.get(url).json() == []


def test_the_proposal_page_records_an_outcome_with_its_csrf_token(lite_client: TestClient,
                                                                  lite_session: Session) -> None:
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    proposal = create_proposal(lite_session, pi, create_call(lite_session, admin))
    award(lite_session, admin, proposal)
    signed_in = post_form(lite_client, "/login", {"email": pi.email, "password": PASSWORD, "next": "/"},
                          follow_redirects=False)
    assert signed_in.status_code == 303
    assert "Record an outcome" in lite_client.get(f"/proposals/{proposal.id}").text
    forged = lite_client.post(f"/proposals/{proposal.id}/outcomes", follow_redirects=False,
                              data={"kind": "dataset", "title": "Our marks", "url": "https://zenodo.org/r/1"})
    assert forged.status_code == 403
    bad = post_form(lite_client, f"/proposals/{proposal.id}/outcomes", {"kind": "dataset", "title": "Our marks"})
    assert "Give a DOI or a URL where it can be read" in bad.text and "Value error" not in bad.text
    done = post_form(lite_client, f"/proposals/{proposal.id}/outcomes",
                     {"kind": "dataset", "title": "Our marks", "url": "https://zenodo.org/r/1", "year": "2027"})
    assert "The outcome is recorded." in done.text and 'href="https://zenodo.org/r/1"' in done.text
