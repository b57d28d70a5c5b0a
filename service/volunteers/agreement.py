"""When two volunteers' results agree: every output a unit sends is compared, each in its own way.

Two machines that run the same seeded job rarely write the same bytes (another GPU, another BLAS, another order of
floating-point sums), so agreement allows for float noise and nothing more:
- images (PNG): the same size; the mean absolute difference of their channel values at most 2/255, and at most
  0.5% of the values off by more than 32/255 (a picture of noise, or another picture, is off everywhere);
- JSON: the same keys, lists and strings; numbers within a relative 1e-3 (or 1e-4 absolute); `device` (which kind of
  processor ran it) is not compared;
- text and HTML reports: the same words and markup, numbers within the same tolerance, and each picture inlined as
  a data: URI compared as an image;
- anything else: the same bytes.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
from typing import Any

import numpy as np
from PIL import Image

MEAN_TOLERANCE = 2 / 255
OFF_BY = 32 / 255
OFF_SHARE = 0.005
REL_TOLERANCE, ABS_TOLERANCE = 1e-3, 1e-4
NOT_COMPARED = frozenset({"device"})
NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")
DATA_URI = re.compile(r"data:image/png;base64,([A-Za-z0-9+/=]+)")


class Disagreement(Exception):
    """What differs between two results, in one line."""


def compare(name: str, media_type: str, a: bytes, b: bytes) -> str | None:
    """None when the two versions of output `name` agree; otherwise what differs."""
    if a == b:
        return None
    try:
        if media_type == "image/png":
            _images(a, b)
        elif media_type == "application/json":
            _json(json.loads(a), json.loads(b), "")
        elif media_type.startswith("text/"):
            _text(a.decode(), b.decode())
        else:
            raise Disagreement("the bytes differ")
    except Disagreement as exc:
        return f"{name}: {exc}"
    except (ValueError, UnicodeDecodeError, OSError) as exc:  # one of them is not what its name says
        return f"{name}: unreadable ({exc.__class__.__name__})"
    return None


def _pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def _images(a: bytes, b: bytes) -> None:
    first, second = _pixels(a), _pixels(b)
    if first.shape != second.shape:
        raise Disagreement(f"pictures of different sizes ({first.shape[1]}x{first.shape[0]} and "
                           f"{second.shape[1]}x{second.shape[0]})")
    difference = np.abs(first - second)
    mean, off = float(difference.mean()), float((difference > OFF_BY).mean())
    if mean > MEAN_TOLERANCE or off > OFF_SHARE:
        raise Disagreement(f"pictures differ (mean difference {mean * 255:.1f}/255, {off:.1%} of values off by more "
                           f"than {OFF_BY * 255:.0f}/255)")


def _close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL_TOLERANCE, abs_tol=ABS_TOLERANCE) or (math.isnan(a) and math.isnan(b))


def _json(a: Any, b: Any, where: str) -> None:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        if a != b:
            raise Disagreement(f"{where or 'the value'}: {a!r} against {b!r}")
    elif isinstance(a, int | float) and isinstance(b, int | float):
        if not _close(float(a), float(b)):
            raise Disagreement(f"{where or 'the value'}: {a!r} against {b!r}")
    elif isinstance(a, dict) and isinstance(b, dict):
        keys_a, keys_b = set(a) - NOT_COMPARED, set(b) - NOT_COMPARED
        if keys_a != keys_b:
            raise Disagreement(f"{where or 'the top level'} has other keys ({sorted(keys_a ^ keys_b)[:5]})")
        for key in sorted(keys_a):
            _json(a[key], b[key], f"{where}.{key}" if where else key)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise Disagreement(f"{where or 'the list'}: {len(a)} items against {len(b)}")
        for index, (x, y) in enumerate(zip(a, b, strict=True)):
            _json(x, y, f"{where}[{index}]")
    elif type(a) is not type(b) or a != b:
        raise Disagreement(f"{where or 'the value'}: {str(a)[:60]!r} against {str(b)[:60]!r}")


def _text(a: str, b: str) -> None:
    pictures_a, pictures_b = DATA_URI.findall(a), DATA_URI.findall(b)
    if len(pictures_a) != len(pictures_b):
        raise Disagreement(f"{len(pictures_a)} pictures against {len(pictures_b)}")
    for index, (x, y) in enumerate(zip(pictures_a, pictures_b, strict=True)):
        try:
            _images(base64.b64decode(x), base64.b64decode(y))
        except binascii.Error:
            raise Disagreement(f"picture {index + 1} is not base64") from None
        except Disagreement as exc:
            raise Disagreement(f"picture {index + 1}: {exc}") from None
    words_a, words_b = DATA_URI.sub("", a), DATA_URI.sub("", b)
    if NUMBER.split(words_a) != NUMBER.split(words_b):
        raise Disagreement("the words differ")
    for x, y in zip(NUMBER.findall(words_a), NUMBER.findall(words_b), strict=True):
        if not _close(float(x), float(y)):
            raise Disagreement(f"a number differs ({x} against {y})")
