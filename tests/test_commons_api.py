"""Reading Commons, offline: the license policy, file metadata made plain, and the API client's continuation,
merging, throttling and politeness, over recorded responses of the real API replayed from a local server."""

from __future__ import annotations

import pytest

from jobs.commons import licenses, metadata
from jobs.commons.client import CommonsClient, CommonsError
from tests.commons_server import commons_api, recorded, sequence

UA = "CommonsObservatoryTests/0.2 (ops@observatory.example)"


@pytest.mark.parametrize(("name", "family", "port"), [
    ("Public domain", licenses.PUBLIC_DOMAIN, None), ("PD-old-100", licenses.PUBLIC_DOMAIN, None),
    ("Public Domain Mark 1.0", licenses.PUBLIC_DOMAIN, None), ("CC0", licenses.CC0, None),
    ("CC-zero", licenses.CC0, None), ("CC BY 2.0", licenses.CC_BY, None), ("CC BY-SA 3.0 de", licenses.CC_BY_SA, "de"),
    ("CC BY-SA 4.0", licenses.CC_BY_SA, None), ("cc-by-sa-2.5-pl", licenses.CC_BY_SA, "pl"),
    ("CC BY-SA 3.0 migrated", licenses.CC_BY_SA, None),
])
def test_the_default_policy_accepts_open_licenses_in_any_version_or_port(name, family, port) -> None:
    verdict = licenses.judge({"LicenseShortName": name})
    assert verdict.accepted and verdict.family == family and verdict.port == port and verdict.reason == ""


@pytest.mark.parametrize(("fields", "reason"), [
    ({}, "no LicenseShortName"),
    ({"LicenseShortName": "   "}, "no LicenseShortName"),
    ({"LicenseShortName": "GFDL"}, "not one the policy recognises"),
    ({"LicenseShortName": "CC BY-NC 2.0"}, "(CC BY-NC) is outside the policy"),
    ({"LicenseShortName": "CC BY-NC-ND 4.0"}, "(CC BY-NC-ND) is outside the policy"),
    ({"LicenseShortName": "Copyrighted free use"}, "not one the policy recognises"),
    ({"LicenseShortName": "CC BY-SA 4.0", "NonFree": "true"}, "marked NonFree"),
    ({"LicenseShortName": "CC BY 4.0", "Restrictions": "personality|trademarked"},
     "restrictions apply: personality, trademarked"),
])
def test_anything_else_or_unclear_is_refused_with_its_reason(fields, reason) -> None:
    verdict = licenses.judge(fields)
    assert not verdict.accepted and reason in verdict.reason


def test_a_narrower_policy_refuses_share_alike() -> None:
    narrow = frozenset({licenses.PUBLIC_DOMAIN, licenses.CC0})
    verdict = licenses.judge({"LicenseShortName": "CC BY-SA 4.0"}, narrow)
    assert not verdict.accepted and "outside the policy" in verdict.reason
    assert licenses.judge({"LicenseShortName": "Public domain"}, narrow).accepted


def test_recorded_listing_licenses_and_authors() -> None:
    pages = list(recorded("wmc_pretty123.json")["query"]["pages"].values())
    read = [metadata.read(p) for p in pages]
    verdicts = [licenses.judge(m.raw) for m in read]
    assert all(v.accepted for v in verdicts)
    assert sorted(v.family for v in verdicts).count(licenses.PUBLIC_DOMAIN) == 3
    by_title = {m.title: (m, v) for m, v in zip(read, verdicts, strict=True)}
    heidelberg, verdict = next(x for t, x in by_title.items() if "Heidelberg" in t)
    assert verdict.port == "de" and verdict.version == "3.0" and verdict.family == licenses.CC_BY_SA
    assert heidelberg.license_url == "https://creativecommons.org/licenses/by-sa/3.0/de/deed.en"
    volcano, verdict = by_title["File:Minchinmavida Volcano.jpg"]
    assert volcano.author == "The original uploader was Elvezio at Italian Wikipedia."
    assert volcano.author_url == "https://en.wikipedia.org/wiki/it:User:Elvezio"
    assert volcano.credit == "Transferred from it.wikipedia to Commons by Baroc using CommonsHelper."
    assert volcano.license_url is None and not verdict.attribution_required
    assert "Michinmahuida" in volcano.categories and volcano.page_id == 18263872


def test_authors_from_user_links_red_links_and_plain_strings() -> None:
    example = metadata.read(recorded("image_data_example.json"))
    assert example.author == "PtrQs" and example.author_url == "https://commons.wikimedia.org/wiki/User:PtrQs"
    assert example.credit == "Own work" and licenses.judge(example.raw).attribution_required
    red = metadata.read({"imageinfo": [recorded("image_info_artist_internal_link.json")]})
    assert red.author == "NotaRealUser" and red.author_url == "https://commons.wikimedia.org/wiki/User:NotaRealUser"
    plain = metadata.read({"imageinfo": [recorded("image_info_artist_string.json")]})
    assert plain.author == "Artist Name" and plain.author_url is None
    missing_url = metadata.read({"imageinfo": [recorded("image_info_missing_license_url.json")]})
    assert missing_url.license_url is None and licenses.judge(missing_url.raw).accepted
    assert metadata.read(recorded("image_data_missing_imageinfo.json")) is None
    munch = metadata.read(recorded("page_44672212_left.json") | {"title": "File:Edvard Munch - Night in Nice.jpg"})
    assert munch.author == "Edvard Munch" and munch.author_url is None  # an encyclopaedia article, not a user page


def test_the_blocklist_finds_whole_names_in_title_description_author_and_categories() -> None:
    munch = metadata.read(recorded("page_44672212_left.json") | {"title": "File:Night in Nice (1891).jpg"})
    assert metadata.blocked(munch, ["edvard munch"]) == "blocklisted name 'edvard munch' in the author"
    volcano = metadata.read(next(iter(recorded("wmc_pretty123.json")["query"]["pages"].values())))
    assert metadata.blocked(volcano, ["Michinmahuida"]) == "blocklisted name 'Michinmahuida' in the categories"
    assert metadata.blocked(volcano, ["Michin", "Acme"]) is None  # whole words only


def _client(url: str, sleeps: list[float] | None = None, **kwargs) -> CommonsClient:
    return CommonsClient(url, user_agent=UA, min_interval_s=0, sleep=(sleeps.append if sleeps is not None
                                                                      else lambda s: None), **kwargs)


def test_continuation_is_followed_to_the_end_politely() -> None:
    answers = sequence((200, {}, recorded("wmc_pretty123.json")),
                       (200, {}, recorded("response_small_missing_continue.json")))
    with commons_api(answers) as (url, script):
        pages = list(_client(url, thumb_width=32).category("Volcanoes"))
    assert len(pages) == 10
    first, second = script.requests
    assert first["gcmtitle"] == "Category:Volcanoes" and first["gcmtype"] == "file" and first["maxlag"] == "5"
    assert first["iiprop"] == "url|sha1|size|mime|extmetadata|timestamp" and first["iiurlwidth"] == "32"
    assert second["gaicontinue"].startswith("20151031230201|") and second["continue"] == "gaicontinue||"
    assert all(h["User-Agent"] == UA for h in script.headers)


def test_a_page_spread_over_batches_is_merged_and_given_once() -> None:
    left, right = recorded("page_44672212_left.json"), recorded("page_44672212_right.json")
    answers = sequence(
        (200, {}, {"continue": {"gucontinue": "44672212|no.wikipedia.org", "continue": "||"},
                   "query": {"pages": {"44672212": {"pageid": 44672212, "title": "File:Munch.jpg", **left}}}}),
        (200, {}, {"batchcomplete": "", "query": {"pages": {"44672212": {"pageid": 44672212, **right}}}}))
    with commons_api(answers) as (url, script):
        pages = list(_client(url).titles(["Munch.jpg"]))
    assert len(pages) == 1 and script.requests[0]["titles"] == "File:Munch.jpg"
    assert len(pages[0]["imageinfo"]) == 1
    assert len(pages[0]["globalusage"]) == len(left["globalusage"]) + len(right["globalusage"])
    assert script.requests[1]["gucontinue"] == "44672212|no.wikipedia.org"


def test_throttling_and_overload_are_waited_out() -> None:
    sleeps: list[float] = []
    answers = sequence((429, {"Retry-After": "7"}, {}), (503, {}, {}),
                       (200, {"Retry-After": "5"}, {"error": {"code": "maxlag", "info": "Waiting for a replica"}}),
                       (200, {}, recorded("response_small_missing_continue.json")))
    with commons_api(answers) as (url, script):
        pages = list(_client(url, sleeps).search("lone tree"))
    assert [p["title"] for p in pages] == ["File:Ambassade1.jpg"] and len(script.requests) == 4
    assert sleeps == [7.0, 2.0, 5.0]  # Retry-After, then backoff, then the maxlag answer's Retry-After
    assert script.requests[0]["gsrnamespace"] == "6"


def test_errors_and_endless_refusals_end_with_a_clear_message() -> None:
    refusal = sequence((200, {}, {"error": {"code": "badvalue", "info": "Unrecognized value"}}))
    with commons_api(refusal) as (url, _), pytest.raises(CommonsError, match="refused: badvalue: Unrecognized"):
        list(_client(url).titles(["x.jpg"]))
    with commons_api(lambda params: (503, {"Retry-After": "0"}, {})) as (url, script):
        with pytest.raises(CommonsError, match="kept refusing \\(HTTP 503\\) after 2 retries"):
            list(_client(url, max_retries=2).titles(["x.jpg"]))
        assert len(script.requests) == 3
    with commons_api(sequence((404, {}, {}))) as (url, _), pytest.raises(CommonsError, match="HTTP 404"):
        list(_client(url).titles(["x.jpg"]))
    with pytest.raises(ValueError, match="how to reach you"):
        CommonsClient("http://x", user_agent="bot")


def test_requests_keep_to_the_rate_limit() -> None:
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    answers = sequence(*[(200, {}, recorded("response_small_missing_continue.json"))] * 3)
    with commons_api(answers) as (url, _):
        client = CommonsClient(url, user_agent=UA, min_interval_s=1.5, sleep=sleep, clock=lambda: now[0])
        for _ in range(3):
            list(client.titles(["Ambassade1.jpg"]))
    assert sleeps == [1.5, 1.5]


def test_a_category_is_walked_to_its_depth_and_each_file_given_once() -> None:
    def file(pageid: int, title: str) -> dict:
        return {"pageid": pageid, "title": title, "imageinfo": [{"url": f"https://upload.example/{pageid}"}]}

    def answer(params: dict[str, str]):
        category, kind = params["gcmtitle"], params["gcmtype"]
        if kind == "subcat":
            below = {"Category:Trees": ["Category:Oaks"], "Category:Oaks": ["Category:Old oaks"]}.get(category, [])
            return 200, {}, {"batchcomplete": "", "query": {"pages": {
                str(i): {"pageid": 1000 + i, "title": c} for i, c in enumerate(below)}}}
        files = {"Category:Trees": [file(1, "File:A.jpg"), file(2, "File:B.jpg")],
                 "Category:Oaks": [file(2, "File:B.jpg"), file(3, "File:C.jpg")],
                 "Category:Old oaks": [file(4, "File:D.jpg")]}[category]
        return 200, {}, {"batchcomplete": "", "query": {"pages": {str(f["pageid"]): f for f in files}}}

    with commons_api(answer) as (url, _):
        client = _client(url)
        assert [p["title"] for p in client.category("Trees")] == ["File:A.jpg", "File:B.jpg"]
        assert [p["title"] for p in client.category("Trees", depth=1)] == ["File:A.jpg", "File:B.jpg", "File:C.jpg"]
        assert len(list(client.category("Category:Trees", depth=5))) == 4
