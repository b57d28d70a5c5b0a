"""Model versions and their cards: registered by admins from succeeded train runs only, once per run, with the
training data's license breakdown and the terms that follow from it; public to read."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from service.models import Role, Run, RunState
from tests.factories import archive_outputs, auth_headers, award, create_call, create_proposal, create_user, post_form
from tests.pools import TRAIN_FILES

ATTRIBUTION = {"dataset": "commons-trees", "digest": "sha256:" + "ab" * 32, "images": [
    {"title": "File:Oak.jpg", "author": "PtrQs", "license": "CC BY-SA 4.0", "attribution_required": True},
    {"title": "File:Elm.jpg", "author": "Ana", "license": "CC BY 2.0", "attribution_required": True},
    {"title": "File:Ash.jpg", "author": "NASA", "license": "Public domain", "attribution_required": False},
    {"title": "File:Yew.jpg", "author": "Bo", "license": "CC BY-SA 3.0 de", "attribution_required": True},
]}


def _run(session: Session, settings, admin, *, state: RunState = RunState.succeeded, attribution=ATTRIBUTION) -> Run:
    _, run = award(session, admin, create_proposal(session, create_user(session), create_call(session, admin)))
    archive_outputs(session, settings, run, {**TRAIN_FILES, "attribution.json": json.dumps(attribution).encode()})
    run = session.get(Run, run.id)
    run.state = state
    session.add(run)
    session.commit()
    return run


def test_a_version_is_registered_from_a_succeeded_run_and_its_card_says_what_the_licenses_ask(
        lite_client: TestClient, lite_session: Session, lite_settings) -> None:
    admin = create_user(lite_session, Role.admin)
    run = _run(lite_session, lite_settings, admin)
    headers = auth_headers(lite_session, admin)
    made = lite_client.post("/api/models", headers=headers, json={"run_id": run.id, "name": "commons-model",
                                                                  "notes": "First light."})
    assert made.status_code == 201, made.text
    card = made.json()
    assert card["ref"] == "commons-model@1" and card["dataset"] == "commons-trees" and card["images"] == 4
    assert card["licenses"] == {"CC BY-SA 4.0": 1, "CC BY 2.0": 1, "Public domain": 1, "CC BY-SA 3.0 de": 1}
    assert card["attribution_required"] == 3 and card["share_alike"] == 2
    assert card["terms"][0].startswith("Attribution: 3 of the 4 training images")
    assert "Whether share-alike reaches a model's weights, or what it generates, is an open question" in \
        card["terms"][1]
    assert card["terms"][-1].endswith("it is not legal advice.")
    assert card["steps"] == 2 and card["config"]["kind"] == "train"
    again = lite_client.post("/api/models", headers=headers, json={"run_id": run.id, "name": "commons-model"})
    assert again.status_code == 409 and "already registered" in again.json()["detail"]
    bundled = {"dataset": "skimage-samples", "digest": "x", "images": [{"license": "PD"}, {"license": "CC0-1.0"}]}
    second = _run(lite_session, lite_settings, admin, attribution=bundled)
    made = lite_client.post("/api/models", headers=headers, json={"run_id": second.id, "name": "commons-model"})
    assert made.json()["ref"] == "commons-model@2" and made.json()["share_alike"] == 0
    assert made.json()["terms"][0].startswith("No training image's license requires attribution")

    # Public: the list, the card as JSON and as a page.
    assert [m["ref"] for m in lite_client.get("/api/models").json()] == ["commons-model@2", "commons-model@1"]
    assert lite_client.get("/api/models/commons-model/1").json()["notes"] == "First light."
    page = lite_client.get("/models/commons-model/1").text
    assert "CC BY-SA 3.0 de: 1" in page and "open question" in page and "not legal advice" in page
    assert "commons-model@2" in lite_client.get("/models").text
    assert lite_client.get("/api/models/commons-model/9").status_code == 404
    assert lite_client.get("/api/models/Bad Name/1").status_code == 422


@pytest.mark.parametrize(("state", "who", "status", "message"), [
    (RunState.running, "admin", 409, "a model version comes from a succeeded train run"),
    (RunState.succeeded, "researcher", 403, "this needs the role admin"),
])
def test_only_admins_register_and_only_from_succeeded_runs(lite_client: TestClient, lite_session: Session,
                                                           lite_settings, state, who, status, message) -> None:
    admin = create_user(lite_session, Role.admin)
    run = _run(lite_session, lite_settings, admin, state=state)
    person = admin if who == "admin" else create_user(lite_session)
    response = lite_client.post("/api/models", headers=auth_headers(lite_session, person),
                                json={"run_id": run.id, "name": "commons-model"})
    assert response.status_code == status and message in response.json()["detail"]


def test_the_run_page_registers_a_version_for_admins(lite_client: TestClient, lite_session: Session,
                                                     lite_settings) -> None:
    from tests.factories import PASSWORD

    admin = create_user(lite_session, Role.admin)
    run = _run(lite_session, lite_settings, admin)
    post_form(lite_client, "/login", {"email": admin.email, "password": PASSWORD, "next": "/"})
    assert 'id="register-model"' in lite_client.get(f"/runs/{run.id}").text
    # First the confirmation, saying what is published; nothing is registered until it is confirmed.
    asked = post_form(lite_client, f"/runs/{run.id}/register-model", {"name": "commons-model", "notes": "first"})
    assert asked.status_code == 200 and "Publish commons-model@1?" in asked.text and "is public" in asked.text
    assert 'name="confirmed" value="yes"' in asked.text and 'name="notes" value="first"' in asked.text
    assert lite_client.get("/api/models").json() == []
    done = post_form(lite_client, f"/runs/{run.id}/register-model", {"name": "commons-model", "notes": "",
                                                                     "confirmed": "yes"})
    assert done.status_code == 200 and "Registered commons-model@1." in done.text and "Model card" in done.text
    refused = post_form(lite_client, f"/runs/{run.id}/register-model", {"name": "commons-model",
                                                                        "confirmed": "yes"})
    assert "already registered" in refused.text
