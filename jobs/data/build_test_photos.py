"""Rebuild the test photographs (`tests/data/photos`): six of the public-domain and CC0 photographs inside
scikit-image, centre-cropped and reduced to 144x144 JPEGs, with their provenance in `photos.json`. The tests cut
natural pictures from them (the copy measurement on natural images). Needs the `data` extra:
`pip install -e '.[data]'` then `python -m jobs.data.build_test_photos`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from jobs.data.build_skimage_samples import LICENSE_URLS, SOURCES, _square_rgb

SIDE = 144
OUT = Path(__file__).resolve().parent.parent.parent / "tests" / "data" / "photos"
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "coins", "camera")


def main() -> None:
    from skimage import data

    OUT.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, title, author, license_code, source in SOURCES:
        if name not in PHOTOS:
            continue
        path = OUT / f"{name}.jpg"
        _square_rgb(getattr(data, name)(), SIDE).save(path, quality=90, optimize=True)
        entries.append({"file": path.name, "title": title, "author": author, "license": license_code,
                        "license_url": LICENSE_URLS[license_code], "source_url": source,
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()})
    (OUT / "photos.json").write_text(json.dumps({"side": SIDE, "photos": entries}, indent=2, ensure_ascii=False)
                                     + "\n")
    print(f"wrote {len(entries)} photographs to {OUT}")


if __name__ == "__main__":
    main()
