"""A Commons file page's metadata, made plain: author and credit as text (HTML removed) with the author's user
page, the license, categories and description; and the name blocklist."""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

COMMONS = "https://commons.wikimedia.org"
# What Commons' "author information missing" box renders as, in the Artist field: it names no author.
LACKING_AUTHOR = re.compile(r"lacking author information|author information is missing", re.IGNORECASE)


class _Text(HTMLParser):
    """Collects text and the links' targets and titles."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.links: list[tuple[str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            found = dict(attrs)
            self.links.append((found.get("href") or "", found.get("title") or ""))
        elif tag in ("br", "p", "div", "li"):
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        self.parts.append(data)


def plain(value: str | None) -> str:
    """HTML reduced to its text, white space collapsed."""
    parser = _Text()
    parser.feed(value or "")
    parser.close()
    return re.sub(r"\s+", " ", html.unescape("".join(parser.parts))).strip()


def user_page(value: str | None) -> str | None:
    """The Commons (or other wiki) user page the Artist field links to, as an absolute URL; red links included."""
    parser = _Text()
    parser.feed(value or "")
    parser.close()
    for href, title in parser.links:
        url = "https:" + href if href.startswith("//") else href
        parts = urlsplit(url)
        if "/wiki/" in parts.path and ("User:" in parts.path or title.startswith("User:")):
            return url
        target = parse_qs(parts.query).get("title", [""])[0]
        if target.startswith("User:"):  # a red link to a user page that does not exist yet
            host = f"{parts.scheme or 'https'}://{parts.netloc}" if parts.netloc else COMMONS
            return f"{host}/wiki/{quote(target.replace(' ', '_'), safe=':/')}"
    return None


def values(extmetadata: dict[str, Any] | None) -> dict[str, str]:
    """extmetadata's {name: {"value": …}} as {name: value-as-text} (numbers too)."""
    out = {}
    for key, entry in (extmetadata or {}).items():
        value = entry.get("value") if isinstance(entry, dict) else entry
        out[key] = "" if value is None else str(value)
    return out


@dataclass(frozen=True)
class FileMetadata:
    title: str
    page_id: int | None
    author: str | None  # None: Commons records no author (no Artist, or its "lacking author information" box)
    author_url: str | None
    credit: str
    license_name: str
    license_url: str | None
    categories: list[str] = field(default_factory=list)
    description: str = ""
    raw: dict[str, str] = field(default_factory=dict)  # every extmetadata value, for the license policy


def read(page: dict[str, Any]) -> FileMetadata | None:
    """A page's metadata, or None when it has no imageinfo (deleted, or not a file)."""
    infos = page.get("imageinfo") or []
    if not infos:
        return None
    raw = values(infos[0].get("extmetadata"))
    categories = [c for c in raw.get("Categories", "").split("|") if c]
    author = plain(raw.get("Artist")) or None
    if author is not None and LACKING_AUTHOR.search(author):
        author = None
    return FileMetadata(
        title=page.get("title", ""), page_id=page.get("pageid"), author=author,
        author_url=user_page(raw.get("Artist")), credit=plain(raw.get("Credit")),
        license_name=raw.get("LicenseShortName", "").strip(), license_url=raw.get("LicenseUrl") or None,
        categories=categories, description=plain(raw.get("ImageDescription")), raw=raw)


def blocked(meta: FileMetadata, names: list[str]) -> str | None:
    """The first blocklisted name (a person, an artist, a trademark) found as a whole word in the title, the
    description, the author or a category, with where; None when there is none."""
    places = {"title": meta.title, "description": meta.description, "author": meta.author or "",
              "categories": " | ".join(meta.categories)}
    for name in names:
        pattern = re.compile(r"(?<!\w)" + re.escape(name.strip()).replace(r"\ ", r"[\s_]+") + r"(?!\w)", re.IGNORECASE)
        for where, text in places.items():
            if name.strip() and pattern.search(text):
                return f"blocklisted name {name.strip()!r} in the {where}"
    return None
