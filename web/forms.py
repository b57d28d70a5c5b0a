"""Turning the proposal form's fields into a job plan, with the fields generated from the job configs."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel

from jobs.config import JOB_KINDS


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(annotation) is list or str(annotation).startswith("list")


def plan_fields() -> dict[str, list[dict[str, Any]]]:
    """For each job kind, its fields: name, default, description and whether it is a list."""
    kinds: dict[str, list[dict[str, Any]]] = {}
    for kind, model in JOB_KINDS.items():
        defaults = model.model_construct().model_dump() if kind == "train" else {}
        fields = []
        for name, info in model.model_fields.items():
            if name == "kind":
                continue
            default = defaults.get(name, None if info.is_required() else info.get_default(call_default_factory=True))
            is_list = _is_list(info.annotation)
            shown = ", ".join(str(v) for v in default) if is_list and default is not None else default
            fields.append({"name": name, "default": "" if shown is None else shown, "list": is_list,
                           "required": info.is_required(), "help": info.description or ""})
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
