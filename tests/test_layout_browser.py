"""The portal's frame at a desk and on a phone: the admin's navigation on one line at 1280 px, nothing wider than
a 390 px screen, a page of its own for an unknown address, a title per page, a favicon, and a word on why the
sign-in page came up."""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, expect
from sqlmodel import Session

from service.models import Role
from tests.factories import create_call, create_proposal, create_user
from tests.test_browser import _sign_in, browser, portal  # noqa: F401  (the module's fixtures)

pytestmark = pytest.mark.browser


def test_the_frame_fits_a_desk_and_a_phone(browser: Browser, portal: str, lite_session: Session) -> None:  # noqa: F811
    admin = create_user(lite_session, Role.admin, name="Ada Admin-Lovelace")
    admin.roles = ["admin", "researcher", "reviewer", "owner"]
    lite_session.add(admin)
    lite_session.commit()
    for title in ("A call with a long title for the proposals of the second cycle", "Director's time"):
        create_call(lite_session, admin, title=title)

    desk = _sign_in(browser, portal, admin.email, viewport={"width": 1280, "height": 900})
    nav, link = desk.locator("header nav"), desk.locator("header nav a").first
    assert nav.bounding_box()["height"] < 2 * link.bounding_box()["height"], "the admin's navigation wraps"
    assert desk.title() == "Commons Observatory"
    desk.goto(f"{portal}/pool")
    assert desk.title() == "The pool · Commons Observatory"
    assert desk.request.get(f"{portal}/favicon.ico").status == 200

    phone = _sign_in(browser, portal, admin.email, viewport={"width": 390, "height": 900})
    for path in ("/", "/pool", "/proposals", "/runs", "/machines"):
        phone.goto(f"{portal}{path}")
        width = phone.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"{path} is {width} px wide on a 390 px screen"

    # An unknown address gets a page like every other error, not raw JSON; the API keeps its JSON.
    missing = phone.goto(f"{portal}/no/such/page")
    assert missing.status == 404 and phone.title() == "Not found · Commons Observatory"
    expect(phone.get_by_role("alert")).to_have_text("There is no page at this address.")
    assert phone.request.get(f"{portal}/api/no/such/thing").json() == {"detail": "Not Found"}


def test_an_anonymous_visit_is_told_why_it_must_sign_in(browser: Browser, portal: str,  # noqa: F811
                                                        lite_session: Session) -> None:
    admin, researcher = create_user(lite_session, Role.admin), create_user(lite_session)
    proposal = create_proposal(lite_session, researcher, create_call(lite_session, admin))
    page = browser.new_page()
    page.goto(f"{portal}/proposals/{proposal.id}")
    assert page.url.endswith(f"/login?next=/proposals/{proposal.id}")
    expect(page.get_by_role("status")).to_have_text("That page is for signed-in members: sign in and it opens.")
    assert "Title" not in page.title() and proposal.title not in page.content()
