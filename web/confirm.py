"""A second step before what cannot be undone: the first POST answers with a page that says what will happen, and
only its "Yes" button (the same form with confirmed=yes) acts. Works without a script."""

from __future__ import annotations

from fastapi import Request

from web.render import render

CONFIRMED = "yes"


def confirmed(form: dict[str, str]) -> bool:
    return form.get("confirmed") == CONFIRMED


def confirmation(request: Request, *, title: str, points: list[str], action: str, button: str, back: str,
                 fields: dict[str, str] | None = None, warnings: list[str] | None = None):  # type: ignore[no-untyped-def]
    """The page that asks: `points` say what will happen, `warnings` what the person may not expect; `fields` are
    the form's values, sent again with the confirmation."""
    return render(request, "confirm.html", {"title": title, "points": points, "warnings": warnings or [],
                                            "action": action, "button": button, "back": back,
                                            "fields": {k: v for k, v in (fields or {}).items()
                                                       if k not in ("csrf_token", "confirmed")}})
