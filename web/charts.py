"""Small inline SVG charts for the portal, so a run's loss can be seen rather than read."""

from __future__ import annotations

import json
import math
from typing import Any


def loss_chart(values: list[float], width: int = 360, height: int = 120, pad: int = 6) -> dict[str, Any] | None:
    """Polyline points for a loss curve on a log scale, with its first and last values; None if too short."""
    finite = [v for v in values if isinstance(v, int | float) and v > 0 and math.isfinite(v)]
    if len(finite) < 2:
        return None
    logs = [math.log10(v) for v in finite]
    low, high = min(logs), max(logs)
    span = (high - low) or 1.0
    step = (width - 2 * pad) / (len(logs) - 1)
    points = " ".join(
        f"{pad + i * step:.1f},{pad + (high - value) / span * (height - 2 * pad):.1f}" for i, value in enumerate(logs)
    )
    return {"points": points, "width": width, "height": height, "first": finite[0], "last": finite[-1],
            "low": 10**low, "high": 10**high}


def loss_chart_from_metrics(data: bytes) -> dict[str, Any] | None:
    """The chart of a run's thinned loss curve; its caption's last value is the run's own final loss, as
    metrics.json records it (the curve keeps every n-th step, so its last point is not the last step)."""
    try:
        metrics = json.loads(data)
    except ValueError:
        return None
    curve = metrics.get("loss_curve") if isinstance(metrics, dict) else None
    chart = loss_chart(curve) if isinstance(curve, list) else None
    final = metrics.get("final_loss") if chart else None
    if chart and isinstance(final, int | float) and math.isfinite(final):
        chart["last"] = final
    return chart


def scatter_log_x(points: list[tuple[float, float, str]], width: int = 420, height: int = 200,
                  pad: int = 30) -> dict[str, Any] | None:
    """Dots for (x, y, label) with x on a log scale and y from 0 to 1 (a share), and the x range's ends;
    None without a positive x."""
    usable = [(x, y, label) for x, y, label in points if x > 0 and math.isfinite(x) and math.isfinite(y)]
    if not usable:
        return None
    logs = [math.log10(x) for x, _, _ in usable]
    low, high = min(logs), max(logs)
    if high - low < 1e-9:
        low, high = low - 0.5, high + 0.5
    dots = [{"x": round(pad + (lx - low) / (high - low) * (width - 2 * pad), 1),
             "y": round(height - pad - max(0.0, min(1.0, y)) * (height - 2 * pad), 1), "label": label}
            for lx, (_, y, label) in zip(logs, usable, strict=True)]
    return {"dots": dots, "width": width, "height": height, "pad": pad, "low": 10**low, "high": 10**high}


def bars(values: list[float], level: float | None = None, width: int = 360, height: int = 120,
         pad: int = 6) -> dict[str, Any] | None:
    """Bars for values in [0, 1] (x, y, width, height each) and an optional level line (its y): None if empty."""
    finite = [min(max(float(v), 0.0), 1.0) for v in values if isinstance(v, int | float) and math.isfinite(v)]
    if not finite:
        return None
    step = (width - 2 * pad) / len(finite)
    inner = height - 2 * pad
    shapes = [{"x": round(pad + i * step + 1, 1), "y": round(pad + inner * (1 - v), 1),
               "w": round(max(step - 2, 1), 1), "h": round(inner * v, 1), "value": v} for i, v in enumerate(finite)]
    line = None if level is None else round(pad + inner * (1 - min(max(level, 0.0), 1.0)), 1)
    return {"bars": shapes, "level": line, "width": width, "height": height}


def burn_down(points: list[tuple[float, float]], total: float, width: int = 360, height: int = 140,
              pad: int = 8) -> dict[str, Any] | None:
    """An award's burn-down: (share of its period, hours left) as a step line, and the even pace (all the hours at
    the start, none at the end) as a straight one; None without hours."""
    if total <= 0 or not points:
        return None
    inner_w, inner_h = width - 2 * pad, height - 2 * pad

    def at(share: float, left: float) -> str:
        x = pad + min(max(share, 0.0), 1.0) * inner_w
        y = pad + (1 - min(max(left / total, 0.0), 1.0)) * inner_h
        return f"{x:.1f},{y:.1f}"

    steps = [at(*points[0])]
    for (_, before), (share, left) in zip(points, points[1:], strict=False):
        steps += [at(share, before), at(share, left)]
    return {"points": " ".join(steps), "ideal": f"{at(0, total)} {at(1, 0)}", "width": width, "height": height,
            "left": points[-1][1], "total": total}
