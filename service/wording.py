"""Validation problems in the words a person filling in a form would use, for pages and API answers alike."""

from __future__ import annotations

from typing import Any

from service.types import EMAIL_PATTERN


def plain_message(error: dict[str, Any]) -> str:
    """One validation error in the words a person filling in a form would use."""
    kind, ctx = error["type"], error.get("ctx") or {}
    simple = {"missing": "This is required.", "int_parsing": "Enter a whole number.",
              "int_from_float": "Enter a whole number.", "float_parsing": "Enter a number.",
              "finite_number": "Enter a finite number.", "extra_forbidden": "This is not part of the plan.",
              "string_pattern_mismatch": "This is not in the expected form."}
    if kind == "string_pattern_mismatch" and ctx.get("pattern") == EMAIL_PATTERN:
        return "Enter an e-mail address, like name@example.org."
    if kind in simple:
        return simple[kind]
    worded = {
        "string_too_short": lambda: "This cannot be empty." if ctx.get("min_length") == 1
        else f"Use at least {ctx.get('min_length')} characters.",
        "string_too_long": lambda: f"Use at most {ctx.get('max_length')} characters.",
        "too_short": lambda: f"Give at least {ctx.get('min_length')}.",
        "too_long": lambda: f"Give at most {ctx.get('max_length')}.",
        "greater_than": lambda: f"Enter a number above {ctx.get('gt')}.",
        "greater_than_equal": lambda: f"Enter {ctx.get('ge')} or more.",
        "less_than": lambda: f"Enter a number below {ctx.get('lt')}.",
        "less_than_equal": lambda: f"Enter {ctx.get('le')} or less.",
        "literal_error": lambda: f"Choose {ctx.get('expected')}.",
    }
    if kind in worded:
        return worded[kind]()
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    return message[:1].upper() + message[1:] + ("" if message.endswith(".") else ".")
