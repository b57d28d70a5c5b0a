"""Provenance the ingest must not get wrong: files with no author to credit, authors Commons does not record,
listings whose continuation never ends, ingests that keep nothing, sounds with a picture for a thumbnail, and image
info the API leaves out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.commons.client import CommonsClient, CommonsError
from jobs.commons.ingest import EmptyIngest, Rules, Source, ingest
from service.datasets.service import check_package
from service.errors import Invalid
from tests.commons_server import commons_api, extmetadata_with, fake_commons, picture, recorded

UA = "CommonsObservatoryTests/0.2 (ops@observatory.example)"
LACKING = ('<span class="plainlinks">This file is lacking author information.</span>')


def _client(url: str, **kwargs) -> CommonsClient:
    return CommonsClient(url, user_agent=UA, min_interval_s=0, sleep=lambda s: None, thumb_width=64, **kwargs)


def _ingest(tmp_path: Path, build) -> tuple:  # type: ignore[no-untyped-def]
    """Ingest the files `build(fake)` adds (their indices) as a category of their own."""
    with fake_commons() as (fake, url, _):
        fake.categories = {"Category:Provenance": build(fake)}
        version = ingest(_client(url), Source(categories=("Category:Provenance",)), Rules(resolution=16),
                         tmp_path / "work", "provenance")
    records = [json.loads(line) for line in (version.folder / "manifest.jsonl").read_text().splitlines()]
    rejected = [json.loads(line) for line in (version.folder / "rejected.jsonl").read_text().splitlines()]
    return version, {r["title"]: r for r in records}, {r["title"]: r["reason"] for r in rejected}


def test_a_file_without_an_author_to_credit_is_refused_when_its_license_asks_for_one(tmp_path: Path) -> None:
    def build(fake) -> list[int]:  # type: ignore[no-untyped-def]
        return [fake.add("File:Lacking.png", extmetadata_with(fake.ptrqs, Artist=LACKING), picture(21)),
                fake.add("File:No artist BY.png", extmetadata_with(fake.ptrqs, Artist=None), picture(22)),
                fake.add("File:Lacking PD.png", extmetadata_with(fake.pd, Artist=LACKING), picture(23)),
                fake.add("File:No artist CC0.png", extmetadata_with(fake.pd, Artist=None, LicenseShortName="CC0"),
                         picture(24)),
                fake.add("File:Anonymous.png", extmetadata_with(fake.pd, Artist="Anonymous"), picture(25))]

    version, kept, rejected = _ingest(tmp_path, build)
    for title in ("File:Lacking.png", "File:No artist BY.png"):
        assert rejected[title].startswith("no author to credit"), rejected
    assert kept["File:Lacking PD.png"]["author"] is None and kept["File:No artist CC0.png"]["author"] is None
    assert kept["File:Anonymous.png"]["author"] == "Anonymous"  # a statement on Commons, kept as it is
    attribution = (version.folder / "attribution.txt").read_text()
    assert "lacking author information" not in attribution.lower() and "by unknown" not in attribution
    assert attribution.count("by an author Commons does not record") == 2
    assert json.loads((version.folder / "dataset.json").read_text())["authors_not_recorded"] == 2


def test_sounds_and_videos_are_not_pictures_though_their_thumbnails_are(tmp_path: Path) -> None:
    def build(fake) -> list[int]:  # type: ignore[no-untyped-def]
        return [fake.add("File:Birdsong.ogg", fake.pd, picture(31), mime="audio/ogg"),
                fake.add("File:Drawing.svg", fake.pd, picture(32), mime="image/svg+xml"),
                fake.add("File:Photo.jpg", fake.pd, picture(33), mime="image/jpeg")]

    _, kept, rejected = _ingest(tmp_path, build)
    assert rejected == {"File:Birdsong.ogg": "not a picture: its media type is audio/ogg"}
    assert set(kept) == {"File:Drawing.svg", "File:Photo.jpg"}


def test_what_the_api_leaves_out_is_said_and_the_short_description_url_stands_in(tmp_path: Path) -> None:
    def build(fake) -> list[int]:  # type: ignore[no-untyped-def]
        return [fake.add("File:Bare.png", fake.pd, picture(41), mime=None, timestamp=None,
                         descriptionurl=None, descriptionshorturl="https://commons.wikimedia.org/w/index.php?curid=7"),
                fake.add("File:Personality.png", extmetadata_with(fake.ptrqs, Restrictions="personality"),
                         picture(42)),
                fake.add("File:Whole.png", fake.pd, picture(43))]

    version, kept, rejected = _ingest(tmp_path, lambda fake: _bare(fake, build))
    bare = kept["File:Bare.png"]
    assert bare["description_url"] == "https://commons.wikimedia.org/w/index.php?curid=7"
    assert bare["unverified"] == ["sha1", "mime", "timestamp"] and kept["File:Whole.png"]["unverified"] == []
    described = json.loads((version.folder / "dataset.json").read_text())
    assert described["unverified"] == {"sha1": 1, "mime": 1, "timestamp": 1}
    assert described["rejected"] == {"restrictions apply: personality": 1}, described["rejected"]
    assert rejected["File:Personality.png"] == "restrictions apply: personality"


def _bare(fake, build) -> list[int]:  # type: ignore[no-untyped-def]
    """The files `build` adds, the first without a sha1 (the fake gives every file one)."""
    indices = build(fake)
    info = fake.pages[indices[0]]["imageinfo"][0]
    info.pop("sha1", None)
    return indices


def test_an_ingest_that_keeps_nothing_makes_no_dataset_version(tmp_path: Path, lite_settings) -> None:
    def build(fake) -> list[int]:  # type: ignore[no-untyped-def]
        return [fake.add("File:Non commercial 2.png", extmetadata_with(fake.pd, LicenseShortName="CC BY-NC 2.0"),
                         picture(51))]

    with pytest.raises(EmptyIngest, match="kept no image .*outside the policy"):
        _ingest(tmp_path, build)
    assert not (tmp_path / "work" / "out" / "manifest.jsonl").exists()
    # Nor is an empty package registered, whoever made it.
    empty = tmp_path / "empty"
    empty.mkdir()
    from jobs.package import write_manifest, write_tar

    write_tar(empty / "shard-00000.tar", [])
    digest = write_manifest(empty / "manifest.jsonl", [])
    for name in ("attribution.txt", "rejected.jsonl", "duplicates.jsonl"):
        (empty / name).write_text("")
    (empty / "dataset.json").write_text(json.dumps({"name": "nothing", "digest": digest,
                                                   "shards": ["shard-00000.tar"]}))
    from service.archive.service import store_for

    with pytest.raises(Invalid, match="holds no image"):
        check_package(store_for(lite_settings), empty)


@pytest.mark.parametrize("continuation", [{}, {"gcmcontinue": ""}, "same"])
def test_a_continuation_that_would_list_again_for_ever_is_an_error(continuation) -> None:  # type: ignore[no-untyped-def]
    page = recorded("wmc_pretty123.json")["query"]["pages"]
    given = {"gcmcontinue": "file|again", "continue": "gcmcontinue||"} if continuation == "same" else continuation

    def answer(params: dict[str, str]):  # type: ignore[no-untyped-def]
        return 200, {}, {"continue": given, "query": {"pages": page}}

    with commons_api(answer) as (url, script), pytest.raises(CommonsError, match="continuation"):
        list(_client(url).category("Category:Loop"))
    assert len(script.requests) <= 2


def test_a_listing_stops_at_its_cap_of_answers() -> None:
    page = recorded("wmc_pretty123.json")["query"]["pages"]

    def answer(params: dict[str, str]):  # type: ignore[no-untyped-def]
        count = int(params.get("gcmcontinue", "0") or 0)
        return 200, {}, {"continue": {"gcmcontinue": str(count + 1)}, "query": {"pages": page}}

    with commons_api(answer) as (url, script), pytest.raises(CommonsError, match="did not end within 5 answers"):
        list(_client(url, max_batches=5).category("Category:Endless"))
    assert len(script.requests) == 5
