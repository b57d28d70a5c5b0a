"""The docs' screenshot script still runs (it builds its own throwaway observatory) and writes every picture."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from tests import screenshots

pytestmark = pytest.mark.browser


def test_the_screenshot_script_writes_every_page(tmp_path: Path) -> None:
    screenshots.main(tmp_path)
    written = {p.name for p in tmp_path.glob("*.png")}
    assert {"proposal-form.png", "runs.png", "compare.png", "run-sampling.png", "review.png", "ranking.png",
            "owner-machine.png"} <= written
    assert all(Image.open(tmp_path / name).size[0] >= 1000 for name in written)
