"""How a data product is cited, as text, BibTeX and CITATION.cff: its authors (a team, or image authors in
aggregate), the facility, its stable identifier, its DOI when an operator registered one, and its landing page."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel

FACILITY = "Commons Observatory"


class Citation(BaseModel):
    text: str
    bibtex: str
    cff: str


@dataclass(frozen=True)
class Cited:
    """What a citation says of a product."""

    authors: list[str]  # people by name, or one collective author ("32 Wikimedia Commons contributors")
    title: str
    identifier: str  # obs:run/12, obs:model/NAME@N, obs:dataset/NAME@N
    doi: str
    landing_url: str
    released: datetime | None
    kind: str = "dataset"  # the CITATION.cff type: dataset or software (a model's weights)
    note: str = ""  # e.g. whose images a model learned from, and where they are credited one by one


def cite(product: Cited) -> Citation:
    released = product.released or datetime.now()
    where = f"https://doi.org/{product.doi}" if product.doi else product.landing_url
    medium = "Data set" if product.kind == "dataset" else "Model weights"
    note = f". {product.note}" if product.note else ""
    text = (f"{', '.join(product.authors)} ({released.year}). {product.title} [{medium}]. {FACILITY}. "
            f"{product.identifier}. {where}{note}")
    key = product.identifier.replace(":", "-").replace("/", "-").replace("@", "-")
    fields = {"author": " and ".join("{" + _bib(name) + "}" if " contributors" in name else _bib(name)
                                     for name in product.authors),
              "title": "{" + _bib(product.title) + "}", "year": str(released.year), "publisher": FACILITY,
              "howpublished": product.identifier, "url": where}
    if product.doi:
        fields["doi"] = product.doi
    if product.note:
        fields["note"] = _bib(product.note)
    bibtex = f"@misc{{{key},\n" + ",\n".join(f"  {k} = {{{v}}}" for k, v in fields.items()) + "\n}\n"
    cff = ["cff-version: 1.2.0", 'message: "If you use this, please cite it as below."', f"type: {product.kind}",
           f"title: {json.dumps(product.title)}", "authors:"]
    cff += [f"  - name: {json.dumps(name)}" for name in product.authors]
    cff += [f"url: {json.dumps(product.landing_url)}", f"date-released: {json.dumps(str(released.date()))}",
            "identifiers:", "  - type: other", f"    value: {json.dumps(product.identifier)}",
            f"    description: {json.dumps(FACILITY + ' identifier')}"]
    if product.doi:
        cff += ["  - type: doi", f"    value: {json.dumps(product.doi)}"]
    if product.note:
        cff += [f"abstract: {json.dumps(product.note)}"]
    return Citation(text=text, bibtex=bibtex, cff="\n".join(cff) + "\n")


def _bib(text: str) -> str:
    """Text safe inside a BibTeX brace group: braces and backslashes escaped, no control characters."""
    cleaned = re.sub(r"[\x00-\x1f\x7f]", " ", text)
    return re.sub(r"([{}\\%&#$_^~])", r"\\\1", cleaned)
