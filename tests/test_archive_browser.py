"""The archive as an anonymous visitor uses it, in a browser: search, open a public run's landing page, copy its
BibTeX, download a file whose sha256 matches; and a run still exclusive refused on every route (its landing page,
the API, a range request, the download command)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, expect
from sqlmodel import Session

from service.archive import catalog
from service.config import Settings
from service.models import Role, Run
from tests.factories import create_user, succeeded_run
from tests.test_browser import browser, portal  # noqa: F401  (the module's fixtures)
from tests.test_download import _download, _finish

pytestmark = pytest.mark.browser
PNG = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")


def _run(session: Session, settings: Settings, admin, title: str, *, public: bool) -> Run:  # noqa: ANN001
    return succeeded_run(session, settings, admin, {"checkpoint.pt": f"weights of {title}".encode() * 500,
                                                    "samples.png": PNG, "metrics.json": b"{}"},
                         title=title, pi=create_user(session, name="Mary Anning"), public=public)


def test_a_visitor_finds_cites_and_downloads_a_public_run_and_an_exclusive_one_is_refused_everywhere(
        browser: Browser, portal: str, lite_session: Session, lite_settings: Settings,  # noqa: F811
        tmp_path: Path) -> None:
    admin = create_user(lite_session, Role.admin)
    public = _run(lite_session, lite_settings, admin, "Ammonite memorisation", public=True)
    exclusive = _run(lite_session, lite_settings, admin, "Ammonite extraction", public=False)
    catalog.sync(lite_session)
    lite_session.commit()
    page = browser.new_context(permissions=["clipboard-read", "clipboard-write"],
                               accept_downloads=True).new_page()
    page.goto(f"{portal}/")
    page.get_by_role("link", name="Archive").first.click()
    page.get_by_label("Words").fill("ammonite")
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#total")).to_contain_text("2 products found")
    results = page.locator("#products")
    expect(results).to_contain_text(f"obs:run/{exclusive.id}")
    expect(results.locator("tr", has_text=f"obs:run/{exclusive.id}")).to_contain_text("from ")  # not public yet
    page.locator("#facets").get_by_role("link", name="train").click()  # a facet narrows, and keeps the words
    expect(page.locator("#total")).to_contain_text("2 products found")
    page.get_by_label("files public now").check()
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#total")).to_contain_text("1 product found")
    page.get_by_role("link", name=f"obs:run/{public.id}").click()

    expect(page.locator("h1")).to_have_text("Ammonite memorisation")
    expect(page.locator("#identifier")).to_have_text(f"obs:run/{public.id}")
    page.get_by_role("button", name="Copy BibTeX").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    cited = httpx.get(f"{portal}/archive/runs/{public.id}/citation.bib").text
    assert copied.strip() == cited.strip() and "Mary Anning" in copied and f"obs:run/{public.id}" in copied
    with page.expect_download() as arrived:
        page.locator("#files").get_by_role("link", name="checkpoint.pt").click()
    saved = tmp_path / "checkpoint.pt"
    arrived.value.save_as(saved)
    listed = {f["name"]: f for f in httpx.get(f"{portal}/api/archive/runs/{public.id}").json()["files"]}
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == listed["checkpoint.pt"]["sha256"]

    # The exclusive run: its metadata is public, its files are refused on every route.
    page.goto(f"{portal}/archive/runs/{exclusive.id}")
    expect(page.locator("#public-from")).to_contain_text("to its team alone")
    expect(page.locator("#files a")).to_have_count(0)
    assert all(f["url"] is None for f in httpx.get(f"{portal}/api/archive/runs/{exclusive.id}").json()["files"])
    file_url = f"{portal}/api/runs/{exclusive.id}/artifacts/checkpoint.pt"
    for headers in ({}, {"Range": "bytes=0-99"}, {"Range": "bytes=100-"}):
        refused = httpx.get(file_url, headers=headers)
        assert refused.status_code == 404 and b"weights" not in refused.content, headers
    code, said = _finish(_download(portal, f"obs:run/{exclusive.id}", tmp_path / "exclusive"))
    assert code == 2 and "no outputs of run" in said and "you may read" in said, said
    assert not (tmp_path / "exclusive").exists() or not any((tmp_path / "exclusive").iterdir())
    code, said = _finish(_download(portal, f"obs:run/{public.id}", tmp_path / "public"))
    assert code == 0 and (tmp_path / "public" / "checkpoint.pt").read_bytes() == saved.read_bytes(), said
