"""Commons ingest: from a source (a category, a search, a list of titles) to a dataset version on disk.

Each file is judged before anything is downloaded: its license against the policy, its title, description, author
and categories against the name blocklist. Then its thumbnail at the training size is downloaded (the original,
checked against the API's sha1 and size, when Commons gives no smaller rendition), cropped to a centred square and
resized, and compared with what was already kept: the same bytes, or an image a few bits of perceptual hash away,
is a duplicate and is reported with the image it duplicates. Every outcome is appended to `state.jsonl` in the
work folder as it happens, so an interrupted ingest resumes where it stopped and downloads nothing twice.

The dataset version is written to `out/` as a package (see jobs.package): tar shards of PNGs, `manifest.jsonl`
(one provenance record per image), `attribution.txt` (for people), `rejected.jsonl`, `duplicates.jsonl` and
`dataset.json`, named by one digest over the manifest. An ingest of several categories makes them the dataset's
classes: each image's class is the first category it was found in.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from jobs.commons import licenses, metadata
from jobs.commons.client import CommonsClient, CommonsError
from jobs.package import write_manifest, write_tar


@dataclass(frozen=True)
class Source:
    """What to ingest: categories (with the depth of subcategories), a search, or named files."""

    categories: tuple[str, ...] = ()
    depth: int = 0
    search: str | None = None
    titles: tuple[str, ...] = ()
    limit: int | None = None

    def __post_init__(self) -> None:
        if sum(bool(x) for x in (self.categories, self.search, self.titles)) != 1:
            raise ValueError("name exactly one source: categories, a search, or titles")
        if len(set(self.categories)) != len(self.categories):
            raise ValueError("a category is named twice")

    def describe(self) -> dict[str, Any]:
        described = {k: v for k, v in asdict(self).items()
                     if v not in (None, (), 0) or k == "depth" and self.categories}
        return json.loads(json.dumps(described))

    @property
    def classes(self) -> list[str]:
        """The dataset's classes: its categories, when there are several."""
        return list(self.categories) if len(self.categories) > 1 else []


@dataclass(frozen=True)
class Rules:
    resolution: int = 64
    policy: frozenset[str] = licenses.DEFAULT_POLICY
    blocklist: tuple[str, ...] = ()
    near_duplicate_bits: int = 4  # dHash distance at or below which two images are one
    shard_size: int = 1000
    max_pixels: int = 40_000_000  # larger images are skipped before they are decoded (a 12500 x 12500 PNG: 1.9 GB)


@dataclass
class DatasetVersion:
    name: str
    digest: str
    images: int
    licenses: dict[str, int]
    rejected: dict[str, int]
    duplicates: int
    folder: Path
    source: dict[str, Any] = field(default_factory=dict)


def _by_category(client: CommonsClient, source: Source) -> Iterator[dict[str, Any]]:
    for category in source.categories:
        for page in client.category(category, source.depth):
            yield {**page, "found_in": category}


def _pages(client: CommonsClient, source: Source) -> Iterator[dict[str, Any]]:
    if source.categories:
        found = _by_category(client, source)
    elif source.search:
        found = client.search(source.search)
    else:
        found = client.titles(source.titles)
    for count, page in enumerate(found):
        if source.limit is not None and count >= source.limit:
            return
        yield page


def square(image: Image.Image, size: int) -> tuple[Image.Image, list[dict[str, Any]]]:
    """The image cropped to a centred square and resized to `size`, with the steps taken."""
    if image.format == "JPEG":
        image.draft("RGB", (size, size))  # decode at the smallest scale that still covers the size
    image = image.convert("RGB")
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    steps: list[dict[str, Any]] = [{"op": "decode", "size": [width, height]}]
    if (width, height) != (side, side):
        steps.append({"op": "crop", "box": list(box)})
    if side != size:
        steps.append({"op": "resize", "size": [size, size], "filter": "lanczos"})
    return image.crop(box).resize((size, size), Image.Resampling.LANCZOS), steps


def dhash(image: Image.Image) -> int:
    """A 64-bit difference hash: near-identical pictures differ in a few bits."""
    pixels = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.LANCZOS), dtype=np.int16)
    bits = (pixels[:, 1:] > pixels[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


def _png(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


# The media types kept: bitmaps and drawings (a sound or a video has a picture for a thumbnail, and is not one).
MEDIA_TYPES = ("image/",)
UNVERIFIED = ("sha1", "mime", "timestamp")  # image info the record relies on; its absence is recorded


class Ingest:
    """One ingest's work folder: its state so far, and the steps that add to it."""

    def __init__(self, client: CommonsClient, source: Source, rules: Rules, work: Path,
                 progress: Callable[[int, int], None] | None = None) -> None:
        self.client, self.source, self.rules, self.work = client, source, rules, work
        self.progress = progress or (lambda kept, seen: None)
        (work / "images").mkdir(parents=True, exist_ok=True)
        settled = {"source": source.describe(), "resolution": rules.resolution, "policy": sorted(rules.policy),
                   "blocklist": list(rules.blocklist), "near_duplicate_bits": rules.near_duplicate_bits}
        settled = json.loads(json.dumps(settled, sort_keys=True))
        recorded = work / "ingest.json"
        if recorded.exists() and json.loads(recorded.read_text()) != settled:
            raise ValueError(f"the work folder {work} holds an ingest with other options; resume it with the same "
                             "ones, or use another folder")
        recorded.write_text(json.dumps(settled, sort_keys=True))
        self.state_path = work / "state.jsonl"
        self.done: dict[str, dict[str, Any]] = {}
        if self.state_path.exists():
            for line in self.state_path.read_text().splitlines():
                if line.strip():
                    entry = json.loads(line)
                    self.done[entry["key"]] = entry
        self.kept = [e["record"] for e in self.done.values() if e["outcome"] == "kept"]
        self.by_bytes = {r["downloaded_sha256"]: r["title"] for r in self.kept}
        self.by_sha1 = {r["original_sha1"]: r["title"] for r in self.kept if r.get("original_sha1")}
        self.hashes = [(int(r["dhash"], 16), r["title"]) for r in self.kept]

    def _note(self, key: str, outcome: str, **entry: Any) -> None:
        line = {"key": key, "outcome": outcome, **entry}
        with self.state_path.open("a") as state:
            state.write(json.dumps(line, sort_keys=True) + "\n")
        self.done[key] = line

    def run(self) -> None:
        for seen, page in enumerate(_pages(self.client, self.source), start=1):
            key = str(page.get("pageid") or page.get("title"))
            if key not in self.done:
                self._one(key, page)
            self.progress(len(self.kept), seen)

    def _one(self, key: str, page: dict[str, Any]) -> None:
        title = page.get("title", key)
        meta = metadata.read(page)
        if meta is None:
            return self._note(key, "rejected", title=title, reason="no image info: deleted, or not a file")
        verdict = licenses.judge(meta.raw, self.rules.policy)
        if not verdict.accepted:
            return self._note(key, "rejected", title=title, reason=verdict.reason)
        if meta.author is None and verdict.attribution_required:
            return self._note(key, "rejected", title=title, reason=(
                "no author to credit: Commons records none, and the license requires attribution"))
        blocked = metadata.blocked(meta, list(self.rules.blocklist))
        if blocked:
            return self._note(key, "rejected", title=title, reason=blocked)
        info = page["imageinfo"][0]
        mime = str(info.get("mime") or "")
        if mime and not mime.startswith(MEDIA_TYPES):
            return self._note(key, "rejected", title=title, reason=f"not a picture: its media type is {mime}")
        if info.get("sha1") and info["sha1"] in self.by_sha1:
            return self._note(key, "duplicate", title=title, of=self.by_sha1[info["sha1"]], how="same original sha1")
        url = info.get("thumburl") or info.get("url")
        if not url:
            return self._note(key, "rejected", title=title, reason="the API gave no URL for the file")
        pixels = _pixels(info, "thumb" if info.get("thumburl") else "")
        if pixels > self.rules.max_pixels:
            return self._note(key, "rejected", title=title, reason=f"{pixels} pixels, over the "
                                                                    f"{self.rules.max_pixels} an image may have")
        try:
            data = self.client.fetch(url)
        except CommonsError as exc:
            return self._note(key, "rejected", title=title, reason=f"download failed: {exc}")
        original = url == info.get("url")
        if original and info.get("size") is not None and len(data) != int(info["size"]):
            return self._note(key, "rejected", title=title, reason=f"downloaded {len(data)} bytes, the API said "
                                                                    f"{info['size']}")
        if original and info.get("sha1") and hashlib.sha1(data).hexdigest() != info["sha1"]:  # noqa: S324 - Commons' own
            return self._note(key, "rejected", title=title, reason="the downloaded bytes' sha1 is not the API's")
        downloaded = hashlib.sha256(data).hexdigest()
        if downloaded in self.by_bytes:
            return self._note(key, "duplicate", title=title, of=self.by_bytes[downloaded], how="same bytes")
        try:
            with Image.open(io.BytesIO(data)) as opened:  # reads the header alone: the size is known undecoded
                if opened.width * opened.height > self.rules.max_pixels:
                    return self._note(key, "rejected", title=title, reason=(
                        f"{opened.width}x{opened.height} pixels, over the {self.rules.max_pixels} an image may "
                        "have"))
                image, steps = square(opened, self.rules.resolution)
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            return self._note(key, "rejected", title=title, reason=f"not a readable image ({exc})")
        near = dhash(image)
        for other, other_title in self.hashes:
            if bin(near ^ other).count("1") <= self.rules.near_duplicate_bits:
                return self._note(key, "duplicate", title=title, of=other_title,
                                  how=f"perceptual hash {bin(near ^ other).count('1')} bits away")
        png = _png(image)
        image_sha = hashlib.sha256(png).hexdigest()
        (self.work / "images" / f"{image_sha}.png").write_bytes(png)
        record = {
            "title": title, "page_id": meta.page_id, "file_timestamp": info.get("timestamp"),
            "description_url": info.get("descriptionurl") or info.get("descriptionshorturl"),
            "original_url": info.get("url"),
            "original_sha1": info.get("sha1"), "original_size": info.get("size"), "original_mime": info.get("mime"),
            "downloaded_url": url, "downloaded_sha256": downloaded, "downloaded_bytes": len(data),
            "author": meta.author, "author_url": meta.author_url, "credit": meta.credit,
            "license": verdict.name, "license_family": verdict.family, "license_version": verdict.version,
            "license_port": verdict.port, "license_url": meta.license_url,
            "attribution_required": verdict.attribution_required, "categories": meta.categories,
            "retrieved_at": datetime.now(UTC).isoformat(timespec="seconds"), "transformations": steps,
            "image_sha256": image_sha, "dhash": f"{near:016x}", "width": self.rules.resolution,
            "height": self.rules.resolution,
            # What the API did not give, so could not be checked or kept: said, not passed over.
            "unverified": [name for name in UNVERIFIED if not info.get(name)],
        }
        if self.source.classes:
            record["class"] = page["found_in"]
        self.kept.append(record)
        self.by_bytes[downloaded] = title
        if info.get("sha1"):
            self.by_sha1[info["sha1"]] = title
        self.hashes.append((near, title))
        self._note(key, "kept", record=record)


def _pixels(info: dict[str, Any], prefix: str) -> int:
    """The pixels the API says a file (or its thumbnail) has; 0 when it does not say."""
    try:
        return max(0, int(info.get(f"{prefix}width") or 0)) * max(0, int(info.get(f"{prefix}height") or 0))
    except (TypeError, ValueError):
        return 0


def _attribution(name: str, records: list[dict[str, Any]]) -> str:
    lines = [f"{name}: {len(records)} images from Wikimedia Commons, each under the license named with it.", ""]
    for r in records:
        if r["author"] is None:
            author = "an author Commons does not record"
        else:
            author = f"{r['author']} ({r['author_url']})" if r["author_url"] else r["author"]
        license_ = f"{r['license']} ({r['license_url']})" if r["license_url"] else r["license"]
        lines.append(f"{r['title']} — by {author} — {license_} — {r['description_url'] or ''}".rstrip(" —"))
        if r["credit"]:
            lines.append(f"    credit: {r['credit']}")
        lines.append(f"    changed: cropped to a centred square and resized to {r['width']}x{r['height']} pixels")
    return "\n".join(lines) + "\n"


class EmptyIngest(ValueError):
    """An ingest that kept no image: there is no dataset version to make."""


def reason_kind(reason: str) -> str:
    """A refusal's reason as the dataset's summary counts it: its words before the details, except restrictions,
    which are kept whole (personality rights are not trademarks)."""
    return reason if reason.startswith("restrictions apply") else reason.split(":")[0]


def write_version(ingest: Ingest, name: str, out: Path) -> DatasetVersion:
    """Write the dataset version from the work folder's state."""
    records = sorted(ingest.kept, key=lambda r: r["title"])
    if not records:
        reasons = Counter(reason_kind(e["reason"]) for e in ingest.done.values() if e["outcome"] == "rejected")
        why = "; ".join(f"{reason}: {count}" for reason, count in reasons.most_common(5)) or "nothing was found"
        raise EmptyIngest(f"the ingest kept no image ({why}); no dataset version is made of nothing")
    out.mkdir(parents=True, exist_ok=True)
    size = ingest.rules.shard_size
    manifest = []
    for index in range(0, len(records), size):
        shard = f"shard-{index // size:05d}.tar"
        chunk = records[index:index + size]
        write_tar(out / shard, [(f"{r['image_sha256']}.png", (ingest.work / "images" / f"{r['image_sha256']}.png")
                            .read_bytes()) for r in chunk])
        manifest += [{**r, "shard": shard, "member": f"{r['image_sha256']}.png"} for r in chunk]
    digest = write_manifest(out / "manifest.jsonl", manifest)
    (out / "attribution.txt").write_text(_attribution(name, records))
    rejected = [e for e in ingest.done.values() if e["outcome"] == "rejected"]
    duplicates = [e for e in ingest.done.values() if e["outcome"] == "duplicate"]
    (out / "rejected.jsonl").write_text("".join(json.dumps({"title": e["title"], "reason": e["reason"]},
                                                           sort_keys=True) + "\n" for e in rejected))
    (out / "duplicates.jsonl").write_text("".join(json.dumps({"title": e["title"], "of": e["of"], "how": e["how"]},
                                                             sort_keys=True) + "\n" for e in duplicates))
    version = DatasetVersion(
        name=name, digest=digest, images=len(records),
        licenses=dict(Counter(r["license"] for r in records)),
        rejected=dict(Counter(reason_kind(e["reason"]) for e in rejected)), duplicates=len(duplicates),
        folder=out, source=ingest.source.describe())
    (out / "dataset.json").write_text(json.dumps({
        "name": name, "digest": digest, "images": version.images, "licenses": version.licenses,
        "rejected": version.rejected, "duplicates": version.duplicates, "source": version.source,
        "resolution": ingest.rules.resolution, "shards": sorted({r["shard"] for r in manifest}),
        "origin": "Wikimedia Commons", "classes": ingest.source.classes,
        "authors_not_recorded": sum(1 for r in records if r["author"] is None),
        "unverified": dict(Counter(name for r in records for name in r["unverified"]))},
        indent=2, sort_keys=True) + "\n")
    return version


def ingest(client: CommonsClient, source: Source, rules: Rules, work: Path, name: str,
           progress: Callable[[int, int], None] | None = None) -> DatasetVersion:
    """Run (or resume) an ingest in `work`, and write its dataset version to `work/out`."""
    job = Ingest(client, source, rules, work, progress)
    job.run()
    return write_version(job, name, work / "out")
