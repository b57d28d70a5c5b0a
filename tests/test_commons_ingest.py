"""Commons ingest end to end, offline: a stand-in Commons API (recorded metadata, generated images) on loopback.
Accepted and refused licenses, the blocklist, a sha mismatch, duplicates exact and near, throttling, an interrupted
and resumed ingest, and the dataset version's manifest, attribution file and digest."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from jobs.commons.client import CommonsClient
from jobs.commons.ingest import Rules, Source, ingest
from tests.commons_server import fake_commons

UA = "CommonsObservatoryTests/0.2 (ops@observatory.example)"


@pytest.fixture
def commons():
    with fake_commons() as served:
        yield served


class Interrupting(CommonsClient):
    """Stops the process (as Ctrl-C or a lost node would) at its n-th download."""

    def __init__(self, *args, stop_at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop_at, self.downloads = stop_at, 0

    def fetch(self, url: str) -> bytes:
        self.downloads += 1
        if self.downloads == self.stop_at:
            raise KeyboardInterrupt
        return super().fetch(url)


RULES = Rules(resolution=32, blocklist=("Edvard Munch",), shard_size=3)
SOURCE = Source(categories=("Test images",))


def _client(url: str, sleeps: list[float], cls=CommonsClient, **kwargs) -> CommonsClient:
    return cls(url, user_agent=UA, min_interval_s=0, sleep=sleeps.append, thumb_width=64, **kwargs)


def test_an_ingest_keeps_what_the_policy_allows_and_says_why_it_left_the_rest(commons, tmp_path: Path) -> None:
    fake, url, script = commons
    sleeps: list[float] = []
    progress: list[tuple[int, int]] = []
    version = ingest(_client(url, sleeps), SOURCE, RULES, tmp_path / "work", "commons-test",
                     progress=lambda kept, seen: progress.append((kept, seen)))
    out = version.folder
    assert version.images == 5 and version.duplicates == 2
    assert version.licenses == {"Public domain": 2, "CC BY-SA 3.0 de": 1, "CC BY-SA 4.0": 2}
    rejected = {json.loads(line)["title"]: json.loads(line)["reason"]
                for line in (out / "rejected.jsonl").read_text().splitlines()}
    assert rejected == {
        "File:Non commercial.png": "license 'CC BY-NC 2.0' (CC BY-NC) is outside the policy",
        "File:Logo.png": "restrictions apply: trademarked",
        "File:Night in Nice.png": "blocklisted name 'Edvard Munch' in the author",
        "File:Tampered.png": "the downloaded bytes' sha1 is not the API's",
        "File:Deleted.png": "no image info: deleted, or not a file",
    }
    duplicates = [json.loads(line) for line in (out / "duplicates.jsonl").read_text().splitlines()]
    assert {(d["title"], d["of"], d["how"].split(" ")[0]) for d in duplicates} == {
        ("File:Volcano copy.png", "File:Volcano.png", "same"),
        ("File:Volcano brighter.png", "File:Volcano.png", "perceptual")}
    # Nothing refused on its metadata was downloaded; the throttled download was waited out once.
    assert fake.fetches["/upload/thumb/1003.png"] == fake.fetches["/upload/thumb/1004.png"] == 0
    assert fake.fetches["/upload/thumb/1001.png"] == 2 and sleeps == [1.0]
    assert progress[-1] == (5, 12)
    assert all(h["User-Agent"] == UA for h in script.headers)

    # The manifest, field by field, for one image; its bytes are in its shard.
    manifest = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert [r["title"] for r in manifest] == sorted(r["title"] for r in manifest)
    tree = next(r for r in manifest if r["title"] == "File:Lone tree.png")
    served = fake.images["/upload/thumb/1002.png"]
    assert tree["page_id"] == 1002 and tree["file_timestamp"] == "2019-09-01T00:38:47Z"
    assert tree["author"] == "PtrQs" and tree["author_url"] == "https://commons.wikimedia.org/wiki/User:PtrQs"
    assert tree["credit"] == "Own work" and tree["attribution_required"] is True
    assert tree["license"] == "CC BY-SA 4.0" and tree["license_family"] == "cc-by-sa"
    assert tree["license_url"] == "https://creativecommons.org/licenses/by-sa/4.0" and tree["license_version"] == "4.0"
    assert "Trees in Finistère" in tree["categories"]
    assert tree["downloaded_sha256"] == hashlib.sha256(served).hexdigest()
    assert tree["downloaded_bytes"] == len(served) and tree["downloaded_url"].endswith("/upload/thumb/1002.png")
    assert tree["original_sha1"] and tree["original_mime"] == "image/png" and tree["retrieved_at"]
    assert tree["transformations"] == [{"op": "decode", "size": [96, 72]}, {"op": "crop", "box": [12, 0, 84, 72]},
                                       {"op": "resize", "size": [32, 32], "filter": "lanczos"}]
    with tarfile.open(out / tree["shard"]) as tar:
        member = tar.extractfile(tree["member"]).read()
    assert hashlib.sha256(member).hexdigest() == tree["image_sha256"]
    assert Image.open(io.BytesIO(member)).size == (32, 32)
    small = next(r for r in manifest if r["title"] == "File:Small original.png")
    assert small["downloaded_url"] == small["original_url"] and small["transformations"][-1]["op"] == "resize"
    assert len(list(out.glob("shard-*.tar"))) == 2  # five images, three to a shard

    attribution = (out / "attribution.txt").read_text()
    assert attribution.startswith("commons-test: 5 images from Wikimedia Commons")
    assert ("File:Lone tree.png — by PtrQs (https://commons.wikimedia.org/wiki/User:PtrQs) — CC BY-SA 4.0 "
            "(https://creativecommons.org/licenses/by-sa/4.0)") in attribution
    described = json.loads((out / "dataset.json").read_text())
    assert described["digest"] == version.digest and described["source"] == {"categories": ["Test images"], "depth": 0}
    assert described["origin"] == "Wikimedia Commons" and described["images"] == 5


def test_an_interrupted_ingest_resumes_without_downloading_anything_twice(commons, tmp_path: Path) -> None:
    fake, url, _ = commons
    sleeps: list[float] = []
    with pytest.raises(KeyboardInterrupt):
        ingest(_client(url, sleeps, Interrupting, stop_at=4), SOURCE, RULES, tmp_path / "work", "commons-test")
    before = Counter(fake.fetches)
    assert sum(before.values()) == 4  # three downloads (one throttled twice), then the stop
    resumed = ingest(_client(url, sleeps), SOURCE, RULES, tmp_path / "work", "commons-test")
    assert all(count == 1 for path, count in fake.fetches.items() if path != "/upload/thumb/1001.png")
    assert fake.fetches["/upload/thumb/1001.png"] == 2  # its throttled first try, then once

    # A second, uninterrupted ingest of the same data elsewhere names the same version.
    fresh = ingest(_client(url, sleeps), SOURCE, RULES, tmp_path / "again", "commons-test")
    assert fresh.digest == resumed.digest and fresh.digest.startswith("sha256:") and resumed.images == 5
    assert (tmp_path / "again/out/shard-00000.tar").read_bytes() == (tmp_path / "work/out/shard-00000.tar").read_bytes()


def test_a_source_names_one_thing() -> None:
    with pytest.raises(ValueError, match="exactly one source"):
        Source(categories=("A",), search="b")
    with pytest.raises(ValueError, match="exactly one source"):
        Source()


def _png_header(width: int, height: int) -> bytes:
    """A PNG that says it is width x height (all that opening it reads); its pixels are never there to decode."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_a_malicious_commons_answer_skips_files_with_a_reason_and_the_ingest_goes_on(tmp_path: Path) -> None:
    """Thumbnails on the node's own network (directly and through a redirect), pictures of 15000 and 12500 pixels
    square, and a body larger than allowed: each file is skipped with its reason, nothing else is fetched, and the
    rest of the ingest is kept."""
    from tests.commons_server import FakeCommons, commons_api

    with commons_api(lambda params: (200, {}, b"the node's secret")) as (inside_url, inside):
        inside_base = inside_url.rsplit("/w/api.php", 1)[0]
        fake = FakeCommons()
        served = {page["title"]: page for page in fake.pages}
        served["File:Volcano.png"]["imageinfo"][0]["thumburl"] = f"{inside_base}/latest/meta-data"
        served["File:Lone tree.png"]["imageinfo"][0]["thumburl"] = "BASE/upload/redirect/1002.png"
        fake.images["/upload/thumb/1001.png"] = _png_header(15000, 15000)
        fake.images["/upload/thumb/1011.png"] = _png_header(12500, 12500)
        fake.images["/upload/thumb/1008.png"] = b"\x89PNG" + b"\0" * 5000  # over the limit below
        answer = fake.answer

        def with_redirect(params: dict[str, str]):  # type: ignore[no-untyped-def]
            if params["_path"].startswith("/upload/redirect/"):
                return 302, {"Location": f"{inside_base}/redirected"}, b""
            return answer(params)

        with commons_api(with_redirect) as (url, _):
            fake.base = url.rsplit("/w/api.php", 1)[0]
            client = _client(url, [], max_file_bytes=4000)
            version = ingest(client, SOURCE, RULES, tmp_path / "work", "commons-test")
    assert inside.requests == []  # the inside address was never asked anything
    rejected = {json.loads(line)["title"]: json.loads(line)["reason"]
                for line in (version.folder / "rejected.jsonl").read_text().splitlines()}
    assert "127.0.0.1 is not a host files are fetched from" in rejected["File:Volcano.png"]
    assert "127.0.0.1 is not a host files are fetched from" in rejected["File:Lone tree.png"]
    assert "decompression bomb" in rejected["File:Heidelberg street.png"]  # Pillow refuses it on opening
    assert "12500x12500 pixels, over the 40000000 an image may have" in rejected["File:Harbour.png"]
    assert "5004 bytes, over the 4000 allowed" in rejected["File:Volcano copy.png"]
    kept = [json.loads(line)["title"] for line in (version.folder / "manifest.jsonl").read_text().splitlines()]
    assert kept == ["File:Small original.png", "File:Volcano brighter.png"]  # the files that were fine


def test_a_file_larger_than_allowed_is_not_read_to_its_end(commons) -> None:
    from jobs.commons.client import FileRefused

    fake, url, _ = commons
    client = _client(url, [], max_file_bytes=100)
    with pytest.raises(FileRefused, match="over the 100"):
        client.fetch(f"{fake.base}/upload/thumb/1000.png")
    with pytest.raises(FileRefused, match="not a host files are fetched from"):
        client.fetch("http://169.254.169.254/latest/meta-data")
    with pytest.raises(FileRefused, match="not a host"):
        client.fetch("file:///etc/passwd")
