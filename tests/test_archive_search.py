"""The archive's search: every data product catalogued as it appears, filters, facets with counts and pages that
hold at 100,000 products (on PostgreSQL), checked against a plain scan; clear refusals of bad searches."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from service.archive import catalog
from service.models import ArchiveProduct, Award, Role, Run, RunState
from service.runs.state import transition
from service.timeutil import utcnow
from tests.archive_products import JOB_KINDS, LICENSES, WORDS, fill
from tests.factories import archive_outputs, auth_headers, award, create_call, create_proposal, create_user

PNG = b"\x89PNG\r\n\x1a\n" + bytes(64)


def _succeeded(session: Session, settings, title: str, *, public: bool = False) -> Run:  # noqa: ANN001
    admin = create_user(session, Role.admin)
    pi = create_user(session, name="Ada Lovelace")
    proposal = create_proposal(session, pi, create_call(session, admin, title="Cycle 7"), title=title)
    _, run = award(session, admin, proposal)
    run = session.get(Run, run.id)
    archive_outputs(session, settings, run, {"checkpoint.pt": b"w" * 50, "samples.png": PNG})
    run.state = RunState.running
    session.add(run)
    session.flush()
    transition(session, run, RunState.succeeded, "finished")  # the catalogue's hook
    if public:
        granted = session.get(Award, run.award_id)
        granted.exclusive_until = utcnow() - timedelta(seconds=1)
        session.add(granted)
        product = session.exec(select(ArchiveProduct).where(ArchiveProduct.ref == f"obs:run/{run.id}")).one()
        product.public_from = granted.exclusive_until
        session.add(product)
    session.commit()
    return run


def test_products_are_catalogued_as_they_appear_and_found_by_anyone(lite_client: TestClient, lite_session: Session,
                                                                     lite_settings) -> None:  # noqa: ANN001
    run = _succeeded(lite_session, lite_settings, "Memorisation of Commons botany")
    found = lite_client.get("/api/archive").json()  # anonymous
    refs = {p["ref"]: p for p in found["items"]}
    assert f"obs:run/{run.id}" in refs and "obs:dataset/skimage-samples@1" in refs  # the bundled dataset too
    product = refs[f"obs:run/{run.id}"]
    assert product["title"] == "Memorisation of Commons botany" and product["job_kind"] == "train"
    assert product["dataset"] == run.job_plan["dataset"] and product["url"] == f"/archive/runs/{run.id}"
    assert product["license"] and not product["files_public"] and product["thumbnail_url"] is None  # exclusive
    assert lite_client.get("/api/archive", params={"q": "botany memorisation"}).json()["total"] == 1
    assert lite_client.get("/api/archive", params={"q": "botany zebra"}).json()["total"] == 0
    assert lite_client.get("/api/archive", params={"q": "100%_"}).json()["total"] == 0  # LIKE's wildcards are text
    assert lite_client.get("/api/archive", params={"q": "botany\x00", "dataset": "\x00"}).status_code == 200
    facets = lite_client.get("/api/archive").json()["facets"]
    assert {"value": "run", "label": "run", "count": 1} in facets["kind"]
    assert any(v["label"] == "Cycle 7" and v["count"] == 1 for v in facets["call_id"])
    assert catalog.sync(lite_session) == 0  # nothing left uncatalogued, and nothing twice
    page = lite_client.get("/archive", params={"q": "botany"}).text
    assert f"obs:run/{run.id}" in page and "1 product found" in page and "Cycle 7" in page


def test_the_catalogue_catches_up_with_products_written_around_it(lite_session: Session, lite_settings) -> None:  # noqa: ANN001
    run = _succeeded(lite_session, lite_settings, "Caught up")
    for product in lite_session.exec(select(ArchiveProduct)).all():
        lite_session.delete(product)
    lite_session.commit()
    assert catalog.sync(lite_session) == 2  # the run and the bundled dataset
    lite_session.commit()
    assert catalog.search(lite_session, catalog.Query(kind="run")).items[0].ref == f"obs:run/{run.id}"


def test_public_files_and_their_thumbnail_show_once_the_exclusive_period_is_over(
        lite_client: TestClient, lite_session: Session, lite_settings) -> None:  # noqa: ANN001
    closed = _succeeded(lite_session, lite_settings, "Still exclusive")
    opened = _succeeded(lite_session, lite_settings, "Already public", public=True)
    public = lite_client.get("/api/archive", params={"public": "true", "kind": "run"}).json()
    assert [p["ref"] for p in public["items"]] == [f"obs:run/{opened.id}"]
    assert public["items"][0]["thumbnail_url"] == f"/api/runs/{opened.id}/artifacts/samples.png"
    assert lite_client.get(public["items"][0]["thumbnail_url"]).status_code == 200
    waiting = lite_client.get("/api/archive", params={"public": "false", "kind": "run"}).json()
    assert [p["ref"] for p in waiting["items"]] == [f"obs:run/{closed.id}"]


@pytest.mark.parametrize("params, message", [
    ({"limit": 0}, "limit"), ({"limit": 201}, "limit"), ({"after": "not-a-cursor"}, "cursor"),
    ({"after": "MjAyNi0wMS0wMXw5OTk5OTk5OTk5OTk5OTk5OTk5OTk5"}, "cursor"),  # an id past any the archive gives
    ({"license": "gfdl"}, "license"), ({"since": "yesterday"}, "since"), ({"kind": "paper"}, "kind"),
    ({"cycle": -1}, "cycle"), ({"q": "x" * 201}, "q")])
def test_a_bad_search_is_refused_with_the_reason(lite_client: TestClient, params: dict, message: str) -> None:
    got = lite_client.get("/api/archive", params=params)
    assert got.status_code == 422 and message in got.json()["detail"], got.text
    page = lite_client.get("/archive", params=params)
    assert page.status_code == 422 and message in page.text


def _pages(session: Session, query: catalog.Query) -> list[str]:
    """Every ref the search gives, page after page."""
    refs: list[str] = []
    while True:
        page = catalog.search(session, query, facets=False)
        refs += [p.ref for p in page.items]
        if page.next_cursor is None:
            return refs
        query = catalog.Query(**{**query.__dict__, "after": page.next_cursor})


def _queries(session: Session, rng: random.Random) -> list[catalog.Query]:
    calls = [c for c in session.exec(select(ArchiveProduct.call_id).distinct()).all() if c]
    today = utcnow().date()
    return [
        catalog.Query(limit=50),
        catalog.Query(kind="run", job_kind="replication", limit=100),
        catalog.Query(license=rng.choice(LICENSES), call_id=rng.choice(calls), limit=100),
        catalog.Query(q=rng.choice(WORDS), since=today - timedelta(days=400), until=today - timedelta(days=30)),
        catalog.Query(dataset=f"commons-{rng.choice(WORDS)}@2", public=True, limit=200),
        catalog.Query(model="commons-model@3", job_kind=rng.choice(JOB_KINDS), limit=7),
    ]


def test_search_agrees_with_a_plain_scan(lite_session: Session) -> None:
    fill(lite_session, 3_000, seed=1)
    everything = list(lite_session.exec(select(ArchiveProduct)).all())
    for query in _queries(lite_session, random.Random(1)):
        searched, scanned = catalog.search(lite_session, query), catalog.scan(everything, query)
        assert searched.total == scanned.total and [p.ref for p in searched.items] == [p.ref for p in scanned.items]
        assert searched.facets == scanned.facets, query
        assert searched.total > 0, query  # each query finds something: the comparison means something
        refs = _pages(lite_session, query)
        assert len(refs) == len(set(refs)) == searched.total  # every product once, none skipped


@pytest.mark.postgres
def test_pages_hold_at_100000_products_on_postgresql(engine, session: Session) -> None:  # noqa: ANN001
    if engine.dialect.name != "postgresql":
        pytest.skip("the 100,000-product test runs on PostgreSQL")
    fill(session, 100_000, seed=2)
    assert session.exec(select(ArchiveProduct.id).offset(99_999)).first() is not None
    everything = list(session.exec(select(ArchiveProduct)).all())
    rng = random.Random(2)
    for query in _queries(session, rng):
        searched, scanned = catalog.search(session, query), catalog.scan(everything, query)
        assert searched.total == scanned.total > 0 and searched.facets == scanned.facets, query
        assert [p.ref for p in searched.items] == [p.ref for p in scanned.items]
    # Deep in the set: a page 90,000 products down is the scan's, and continues without a gap.
    ordered = catalog.scan(everything, catalog.Query(limit=100_000)).items
    cursor = catalog.encode_cursor(ordered[89_999])
    page = catalog.search(session, catalog.Query(after=cursor, limit=200), facets=False)
    assert [p.ref for p in page.items] == [p.ref for p in ordered[90_000:90_200]]
    assert len(_pages(session, catalog.Query(kind="run", job_kind="ablation", limit=200))) == \
        sum(p.kind == "run" and p.job_kind == "ablation" for p in everything)


def test_an_operator_records_a_doi_for_a_version(lite_client: TestClient, lite_session: Session) -> None:
    admin, someone = create_user(lite_session, Role.admin), create_user(lite_session)
    body = {"ref": "obs:dataset/skimage-samples@1", "doi": "https://doi.org/10.5281/zenodo.42"}
    assert lite_client.put("/api/archive/doi", json=body).status_code == 401
    assert lite_client.put("/api/archive/doi", json=body, headers=auth_headers(lite_session, someone)).status_code \
        == 403
    done = lite_client.put("/api/archive/doi", json=body, headers=auth_headers(lite_session, admin))
    assert done.status_code == 200 and done.json() == {"ref": body["ref"], "doi": "10.5281/zenodo.42"}
    missing = lite_client.put("/api/archive/doi", json={**body, "ref": "obs:model/nothing@1"},
                              headers=auth_headers(lite_session, admin))
    assert missing.status_code == 404
    bad = lite_client.put("/api/archive/doi", json={**body, "ref": "obs:run/1"}, headers=auth_headers(lite_session,
                                                                                                       admin))
    assert bad.status_code == 422 and "obs:model/NAME@N" in bad.json()["detail"]


def test_control_characters_in_a_search_are_no_error_on_either_database(client: TestClient) -> None:
    for params in ({"q": "botany\x00"}, {"dataset": "\x00x"}, {"model": "m\x1f"}, {"job_kind": "\x7f"}):
        got = client.get("/api/archive", params=params)
        assert got.status_code == 200 and got.json()["total"] == 0, (params, got.text)
