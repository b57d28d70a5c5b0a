"""The license policy: which Commons files may be trained on, decided from the file's own metadata.

By default it allows public-domain marks, CC0, CC BY and CC BY-SA, in any version or jurisdiction port
("CC BY-SA 3.0 de"). Everything else is refused with the reason recorded, and so is anything unclear: a missing or
unparseable LicenseShortName, a file marked NonFree, non-empty Restrictions (personality rights, trademarks, …), or
a license outside the policy (GFDL alone, NC, ND, …). The policy is a set of license families, so an operator can
narrow it (say, to public domain and CC0 only).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PUBLIC_DOMAIN = "public-domain"
CC0 = "cc0"
CC_BY = "cc-by"
CC_BY_SA = "cc-by-sa"
FAMILIES = (PUBLIC_DOMAIN, CC0, CC_BY, CC_BY_SA)
DEFAULT_POLICY = frozenset(FAMILIES)

_PD = re.compile(r"^(public domain|pd|pdm|public domain mark( \d\.\d)?|cc pdm( \d\.\d)?|pd [a-z0-9 .-]+)$")
_CC0 = re.compile(r"^(cc0|cc zero|cc0 \d\.\d|cc zero \d\.\d)( universal)?$")
_CC = re.compile(r"^cc (by(?: (?:sa|nc|nd|nc sa|nc nd))?) (\d\.\d)(?: ([a-z]{2,3}(?: [a-z]+)?))?(?: migrated)?$")


@dataclass(frozen=True)
class LicenseVerdict:
    accepted: bool
    reason: str  # why it was refused; "" when accepted
    family: str | None  # one of FAMILIES, or None when unknown or refused as such
    name: str  # the LicenseShortName as Commons gave it
    version: str | None = None
    port: str | None = None  # a jurisdiction port ("de"), None for the international version
    attribution_required: bool = True


def _normal(name: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[-_]", " ", name.strip().lower()))


def classify(name: str) -> tuple[str | None, str | None, str | None, str]:
    """(family, version, port, variant) of a license short name; family None when unrecognised. variant is the
    Creative Commons element list ("by-sa", "by-nc", …) or ""."""
    text = _normal(name)
    if _PD.match(text):
        return PUBLIC_DOMAIN, None, None, ""
    if _CC0.match(text):
        return CC0, "1.0", None, ""
    found = _CC.match(text)
    if found:
        elements, version, port = found.group(1).replace(" ", "-"), found.group(2), found.group(3)
        family = {"by": CC_BY, "by-sa": CC_BY_SA}.get(elements)
        return family, version, port, elements
    return None, None, None, ""


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in {"true", "1", "yes"}


def judge(metadata: dict[str, str], policy: frozenset[str] = DEFAULT_POLICY) -> LicenseVerdict:
    """The verdict on one file, from its extmetadata values (name -> value, HTML left as is)."""
    name = (metadata.get("LicenseShortName") or "").strip()
    required = metadata.get("AttributionRequired")
    attribution = _flag(required) if required is not None else True
    if not name:
        return LicenseVerdict(False, "no LicenseShortName: the license is unclear", None, name)
    if _flag(metadata.get("NonFree")):
        return LicenseVerdict(False, "marked NonFree", None, name)
    restrictions = (metadata.get("Restrictions") or "").strip()
    if restrictions:
        return LicenseVerdict(False, f"restrictions apply: {restrictions.replace('|', ', ')}", None, name)
    family, version, port, elements = classify(name)
    if family is None:
        if elements:
            return LicenseVerdict(False, f"license {name!r} (CC {elements.upper()}) is outside the policy", None,
                                  name, version, port, attribution)
        return LicenseVerdict(False, f"license {name!r} is not one the policy recognises", None, name)
    if family not in policy:
        return LicenseVerdict(False, f"license {name!r} ({family}) is outside the policy", family, name, version,
                              port, attribution)
    if family in (PUBLIC_DOMAIN, CC0) and required is None:
        attribution = False
    return LicenseVerdict(True, "", family, name, version, port, attribution)
