"""When two volunteers' outputs agree: float noise passes, anything more does not."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image

from service.volunteers.agreement import compare


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def picture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    smooth = rng.integers(40, 200, (8, 8, 3)).repeat(8, axis=0).repeat(8, axis=1)
    return smooth.astype(np.int16)


def test_pictures_agree_within_float_noise_and_not_beyond() -> None:
    base = picture()
    noisy = np.clip(base + np.random.default_rng(1).integers(-1, 2, base.shape), 0, 255)  # off by one here and there
    assert compare("samples.png", "image/png", png(base), png(noisy)) is None
    other = picture(seed=5)
    assert "pictures differ" in compare("samples.png", "image/png", png(base), png(other))
    noise = np.random.default_rng(2).integers(0, 256, base.shape)
    assert "pictures differ" in compare("samples.png", "image/png", png(base), png(noise))
    one_patch = base.copy()
    one_patch[:8, :8] = 255 - one_patch[:8, :8]  # one tile of 64 changed: 1.6% of the values
    assert "pictures differ" in compare("samples.png", "image/png", png(base), png(one_patch))
    assert "different sizes" in compare("samples.png", "image/png", png(base), png(base[:32]))
    assert "unreadable" in compare("samples.png", "image/png", png(base), b"not a png")


def test_json_agrees_on_values_within_tolerance_but_not_on_where_it_ran() -> None:
    a = {"device": "cuda", "count": 4, "scores": [0.5, 0.25], "label": "x", "flag": True}
    b = {"device": "cpu", "count": 4, "scores": [0.50004, 0.25001], "label": "x", "flag": True}
    assert compare("results.json", "application/json", json.dumps(a).encode(), json.dumps(b).encode()) is None
    for change, words in (({"count": 5}, "count: 4 against 5"), ({"scores": [0.5, 0.3]}, "scores[1]"),
                          ({"label": "y"}, "label"), ({"flag": False}, "flag"), ({"extra": 1}, "other keys"),
                          ({"scores": [0.5]}, "2 items against 1")):
        why = compare("results.json", "application/json", json.dumps(a).encode(), json.dumps({**b, **change}).encode())
        assert why is not None and words in why, (change, why)


def test_reports_agree_on_words_numbers_and_pictures() -> None:
    def report(value: float, pixels: np.ndarray, words: str = "copies") -> bytes:
        inline = base64.b64encode(png(pixels)).decode()
        return f'<p>{words}: {value}</p><img src="data:image/png;base64,{inline}">'.encode()

    base = picture()
    assert compare("report.html", "text/html; charset=utf-8", report(0.12345, base), report(0.12346, base)) is None
    assert "number differs" in compare("report.html", "text/html", report(0.12, base), report(0.5, base))
    assert "words differ" in compare("report.html", "text/html", report(0.12, base), report(0.12, base, "none"))
    assert "picture 1" in compare("report.html", "text/html", report(0.12, base), report(0.12, picture(seed=5)))


def test_other_files_must_be_the_same_bytes() -> None:
    assert compare("state.pt", "application/octet-stream", b"abc", b"abc") is None
    assert compare("state.pt", "application/octet-stream", b"abc", b"abd") == "state.pt: the bytes differ"
