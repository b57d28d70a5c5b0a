"""Turning the proposal form's fields into a job plan, with the fields generated from the job configs."""

from __future__ import annotations

import re
import typing
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from jobs.config import JOB_KINDS, PINNED, PINNED_BY_KIND
from service.wording import plain_message


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list or str(annotation).startswith("list")


def plan_fields() -> dict[str, list[dict[str, Any]]]:
    """For each job kind, its fields: name, default, description and whether it is a list."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for kind, model in JOB_KINDS.items():
        defaults = model.model_construct().model_dump() if kind == "train" else {}
        fields = []
        for name, info in model.model_fields.items():
            if name == "kind" or name in PINNED or name in PINNED_BY_KIND.get(kind, ()):
                continue
            default = defaults.get(name, None if info.is_required() else info.get_default(call_default_factory=True))
            is_list = _is_list(info.annotation)
            shown = ", ".join(str(v) for v in default) if is_list and default is not None else default
            choices = list(typing.get_args(info.annotation)) if typing.get_origin(info.annotation) is Literal else []
            help_text = info.description or ""
            fields.append({"name": name, "label": info.title or name, "default": "" if shown is None else shown,
                           "list": is_list, "required": info.is_required(), "help": help_text, "choices": choices})
        kinds[kind] = fields
    return kinds


def plan_from_form(form: dict[str, str]) -> dict[str, Any]:
    """The plan a submitted form describes; blank fields take the job's defaults, validation is the job's."""
    kind = form.get("job_kind", "")
    model: type[BaseModel] | None = JOB_KINDS.get(kind)
    if model is None:
        return {"kind": kind}
    plan: dict[str, Any] = {"kind": kind}
    for field in plan_fields()[kind]:
        raw = form.get(f"{kind}.{field['name']}", "").strip()
        if raw == "":
            continue
        plan[field["name"]] = [part.strip() for part in raw.split(",") if part.strip()] if field["list"] else raw
    return plan


def field_errors(exc: ValidationError, prefix: str = "", only: set[str] | None = None) -> dict[str, str]:
    """Each field's first problem in plain words, keyed by the form's field name (`prefix` + the field); problems
    of the whole model go under `prefix` without its dot. Fields outside `only` (when given) are left out."""
    found: dict[str, str] = {}
    for error in exc.errors():
        loc = [str(part) for part in error["loc"]]
        if only is not None and (not loc or loc[0] not in only):
            continue
        message = plain_message(error)
        raw = str(error.get("msg", "")).removeprefix("Value error, ")
        named = re.match(r"^([a-z_]+): (.+)$", raw, re.S) if not loc else None
        if named:  # a rule of the whole model about one field ("exclude_authors: …") is shown at that field
            loc, message = [named[1]], named[2][:1].upper() + named[2][1:]
        key = f"{prefix}{loc[0]}" if loc else prefix.rstrip(".") or "form"
        if len(loc) > 1 and loc[1].isdigit():
            message = f"Item {int(loc[1]) + 1}: {message[:1].lower()}{message[1:]}"
        found.setdefault(key, message)
    return found


def service_plan_error(message: str, kind: str) -> dict[str, str] | None:
    """A problem the service found with a plan ("job_plan.FIELD: …", or "job_plan: …" for the whole plan), keyed by
    the form's field; None when the message is about something else."""
    named = re.match(r"^job_plan(?:\.([a-z_]+))?: (.+)$", message, re.S)
    if named is None or kind not in JOB_KINDS:
        return None
    key = f"{kind}.{named[1]}" if named[1] else kind
    return {key: named[2][:1].upper() + named[2][1:]}


def comma_list(text: str) -> list[str]:
    """A comma-separated form field as its items (blank ones dropped)."""
    return [part.strip() for part in text.split(",") if part.strip()]
