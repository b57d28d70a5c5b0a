"""Rebuild the bundled `skimage-samples` dataset from the public-domain and CC0 images inside scikit-image.

Each image is centre-cropped to a square and reduced to 32x32; the manifest records title, author, license and
source for every file, as stated in scikit-image's `skimage/data/_fetchers.py`. Needs the `data` extra:
`pip install -e '.[data]'` then `python -m jobs.data.build_skimage_samples`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 32
OUT = Path(__file__).parent / "skimage_samples"

# name in skimage.data, title, author, license, source
SOURCES = [
    ("astronaut", "Astronaut Eileen Collins", "NASA", "PD", "https://flic.kr/p/r9qvLn"),
    ("chelsea", "Chelsea the cat", "Stefan van der Walt", "CC0-1.0", "https://github.com/scikit-image/scikit-image"),
    ("coffee", "Coffee cup", "Rachel Michetti", "CC0-1.0", "https://github.com/scikit-image/scikit-image"),
    ("rocket", "Falcon 9 launch", "SpaceX", "PD",
     "https://www.flickr.com/photos/spacexphotos/16511594820/"),
    ("retina", "Fundus photograph of a normal left eye", "Mikael Häggström", "CC0-1.0",
     "https://commons.wikimedia.org/wiki/File:Fundus_photograph_of_normal_left_eye.jpg"),
    ("hubble_deep_field", "Hubble eXtreme Deep Field", "NASA", "PD",
     "http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/"),
    ("camera", "Cameraman", "Lav Varshney", "CC0-1.0", "https://github.com/scikit-image/scikit-image/issues/3927"),
    ("coins", "Greek coins from Pompeii", "Brooklyn Museum", "PD",
     "https://www.brooklynmuseum.org/opencollection/archives/image/51611"),
    ("brick", "Bricks 25", "CC0Textures", "CC0-1.0", "https://cc0textures.com/view.php?tex=Bricks25"),
    ("grass", "Grass 01", "linolafett", "CC0-1.0",
     "https://www.deviantart.com/linolafett/art/Grass-01-434853879"),
    ("gravel", "Gravel 04", "CC0Textures", "CC0-1.0", "https://cc0textures.com/view.php?tex=Gravel04"),
    ("horse", "Horse silhouette", "Andreas Preuss (marauder)", "CC0-1.0",
     "http://openclipart.org/detail/158377/horse-by-marauder"),
]

# The class of each image, for a class-conditional model.
CLASSES = {"astronaut": "photograph", "chelsea": "photograph", "coffee": "photograph", "rocket": "photograph",
           "camera": "photograph", "coins": "photograph", "brick": "texture", "grass": "texture",
           "gravel": "texture", "retina": "scientific", "hubble_deep_field": "scientific", "horse": "drawing"}

LICENSE_URLS = {
    "PD": "https://creativecommons.org/publicdomain/mark/1.0/",
    "CC0-1.0": "https://creativecommons.org/publicdomain/zero/1.0/",
}


def _square_rgb(array: np.ndarray, side_out: int = SIDE) -> Image.Image:
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    image = Image.fromarray(array).convert("RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    return image.crop((left, top, left + side, top + side)).resize((side_out, side_out), Image.Resampling.LANCZOS)


def main() -> None:
    from skimage import data

    OUT.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, title, author, license_code, source in SOURCES:
        path = OUT / f"{name}.png"
        _square_rgb(getattr(data, name)()).save(path, optimize=True)
        entries.append({
            "file": path.name, "title": title, "author": author, "license": license_code,
            "license_url": LICENSE_URLS[license_code], "source_url": source, "class": CLASSES[name],
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        })
    manifest = {"name": "skimage-samples", "version": 1, "side": SIDE, "images": entries}
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {len(entries)} images to {OUT}")


if __name__ == "__main__":
    main()
