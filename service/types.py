"""Constrained types for everything that enters the observatory: ids, text, e-mail addresses and GPU-hours.

One set, used by the JSON API's schemas, the portal's forms and the services alike, so that a value refused in one
place is refused in all: ids fit the database's integer columns, text holds no NUL or other control characters
(PostgreSQL refuses NUL), and quantities are finite numbers in range (NaN would pass any `>` check).
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import Path, Query
from pydantic import AfterValidator, Field, TypeAdapter, ValidationError

from service.errors import Invalid

MAX_ID = 2**31 - 1  # INTEGER on PostgreSQL; SQLite's are wider
MAX_GPU_HOURS = 1_000_000.0
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _no_control_characters(value: str) -> str:
    if _CONTROL.search(value):
        raise ValueError("must not contain NUL or other control characters")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be blank")
    return value


def clean_text(value: str, max_length: int) -> str:
    """Text from outside that is not ours to refuse (an identity provider's claims): control characters dropped,
    cut to length."""
    return _CONTROL.sub("", value)[:max_length]


def text(max_length: int, min_length: int = 0) -> Any:
    """A string of at most `max_length` characters with no control characters other than tab and newlines; when
    `min_length` is set, more than white space."""
    checks = [AfterValidator(_no_control_characters)] + ([AfterValidator(_not_blank)] if min_length else [])
    return Annotated[str, Field(min_length=min_length, max_length=max_length), *checks]


Email = Annotated[str, Field(max_length=320, pattern=EMAIL_PATTERN), AfterValidator(_no_control_characters)]
Title = text(200, 1)
Abstract = text(5_000, 1)
Justification = text(20_000, 1)
Description = text(10_000)
Name = text(200, 1)
Password = text(200)
Reason = text(2000)  # why a decision was made, as recorded
LoginEmail = text(320)  # not checked for shape: a sign-in attempt with any text is simply wrong
GpuHours = Annotated[float, Field(gt=0, le=MAX_GPU_HOURS, allow_inf_nan=False)]
Keywords = Annotated[list[text(60, 1)], Field(max_length=20, description="Up to 20 keywords or subject areas.")]


def words(values: list[str]) -> list[str]:
    """Keywords as kept: white space collapsed, lower-case, each once, in order."""
    out: list[str] = []
    for value in values:
        word = " ".join(str(value).split()).casefold()
        if word and word not in out:
            out.append(word)
    return out
DOI = re.compile(r"^10\.\d{4,9}/[^\s\"<>{}\\]{1,180}$")  # a DOI's name (no quotes, braces or spaces: safe to quote)


def doi_name(text: str) -> str:
    """A DOI as given (bare, doi:…, or a doi.org link) reduced to its name; "" stays ""; anything else refused."""
    value = text.strip().removeprefix("https://doi.org/").removeprefix("doi:")
    if value and not DOI.match(value):
        raise ValueError(f"{value[:60]!r} is not a DOI (10.NNNN/suffix)")
    return value


SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,79}$"  # the names of datasets and models: lower-case letters, digits, dashes
IdInt = Annotated[int, Field(ge=1, le=MAX_ID)]
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdQuery = Annotated[int, Query(ge=1, le=MAX_ID)]
ArtifactName = Annotated[str, Path(max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")]

_adapters: dict[int, TypeAdapter] = {}


def parse(kind: Any, value: Any, field: str) -> Any:
    """A value from any source (a form's text, a service's caller) checked as one of the types above, or Invalid
    naming the field."""
    adapter = _adapters.get(id(kind)) or _adapters.setdefault(id(kind), TypeAdapter(kind))
    try:
        return adapter.validate_python(value.strip() if isinstance(value, str) else value)
    except ValidationError as exc:
        from service.wording import plain_message  # (it reads this module's patterns)

        message = plain_message(exc.errors()[0])
        raise Invalid(f"{field}: {message[:1].lower()}{message[1:]}") from None


def gpu_hours(value: Any, field: str = "gpu_hours") -> float:
    return parse(GpuHours, value, field)
