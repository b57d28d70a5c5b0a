"""Self-contained HTML reports: inline pictures (PNG data URIs) and SVG charts, no script, every text escaped.
The portal serves them under a policy that allows only inline styles and data: images, in a sandbox."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np
from PIL import Image

STYLE = """body{font:14px/1.45 system-ui,sans-serif;margin:1.5em;color:#1d2330;max-width:70em}
h1{font-size:1.4em}table{border-collapse:collapse}td,th{padding:.3em .6em;border-bottom:1px solid #e3e7ee;
text-align:left;vertical-align:middle}img{image-rendering:pixelated}.copy{color:#a3201d;font-weight:600}
.muted{color:#5b6475}dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}dt{color:#5b6475}"""


def png(image: np.ndarray, scale: int = 4) -> str:
    """An H x W x 3 array in [0, 1] as a data: URI of a PNG, enlarged `scale` times."""
    picture = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.Resampling.NEAREST)
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


def histogram(values: list[float], mark: float | None, label: str, bins: int = 30, width: int = 420,
              height: int = 120) -> str:
    """An inline SVG histogram of `values`, with a vertical line at `mark`."""
    low, high = min([*values, mark if mark is not None else min(values)]), max([*values, mark or max(values)])
    span = (high - low) or 1.0
    counts, _ = np.histogram(values, bins=bins, range=(low, low + span))
    top = max(int(counts.max()), 1)
    bar = (width - 20) / bins
    bars = "".join(f'<rect x="{10 + i * bar:.1f}" y="{height - 20 - c / top * (height - 30):.1f}" '
                   f'width="{bar - 1:.1f}" height="{c / top * (height - 30):.1f}" fill="#1f5fbf"/>'
                   for i, c in enumerate(counts))
    line = ""
    if mark is not None:
        x = 10 + (mark - low) / span * (width - 20)
        line = f'<line x1="{x:.1f}" x2="{x:.1f}" y1="5" y2="{height - 20}" stroke="#a3201d" stroke-width="2"/>'
    axis = (f'<text x="10" y="{height - 5}" font-size="11">{low:.3g}</text>'
            f'<text x="{width - 10}" y="{height - 5}" font-size="11" text-anchor="end">{low + span:.3g}</text>')
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="{html.escape(label)}">'
            f'<rect width="100%" height="100%" fill="#fff" stroke="#d8dde5"/>{bars}{line}{axis}</svg>')


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _bar(fraction: float, width: int = 120) -> str:
    """A small inline SVG bar, `fraction` of its width filled."""
    filled = max(0.0, min(1.0, fraction)) * width
    return (f'<svg width="{width}" height="10" role="img" aria-label="{fraction:.0%}">'
            f'<rect width="{width}" height="10" fill="#e3e7ee"/><rect width="{filled:.1f}" height="10" '
            f'fill="#a3201d"/></svg>')


def who(neighbour: dict[str, Any]) -> str:
    parts = [neighbour.get("title") or "untitled", f"by {neighbour.get('author') or 'an author not recorded'}",
             neighbour.get("license") or "license unknown"]
    if "times_in_training" in neighbour:
        parts.append(f"{neighbour['times_in_training']}x in training")
    return html.escape(" · ".join(str(p) for p in parts))


def _descriptor(results: dict[str, Any]) -> str:
    """What the descriptor is, and whether it decided anything."""
    descriptor, t, s = results.get("descriptor") or {"name": "structure"}, results["thresholds"], results["summary"]
    if not descriptor.get("decides"):
        return ("the offline structure descriptor: it reports the similarity below; the distance ratio alone "
                "decides what is a copy")
    muap = descriptor.get("held_out_muap")
    return (f"the learned copy descriptor <code>{html.escape(str(descriptor['name']))}</code> (trained on "
            f"{html.escape(str(descriptor.get('trained_on')))}"
            f"{f', copy-detection muAP {muap:.3f} on the images it held out' if muap is not None else ''}): a sample "
            f"is a copy too when its similarity to its nearest training image exceeds its best similarity to a "
            f"picture of another near-duplicate cluster by at least {t['descriptor']:.3f}, the descriptor's operating "
            f"threshold (above every false match where it was measured); "
            f"{_count(s.get('copies_by_descriptor_alone', 0), 'sample')} counted by it alone")


def replication(results: dict[str, Any], samples: np.ndarray, training: np.ndarray, shown: int = 48) -> str:
    """The replication report: the numbers, two histograms, and the samples nearest to a training image, each
    beside it, with its provenance."""
    t, s, cap, dataset = results["thresholds"], results["summary"], results["capacity"], results["dataset"]
    rows = []
    for i in results["shown"][:shown]:
        sample = results["samples"][i]
        nearest = sample["tiled_l2"][0]
        verdict = '<span class="copy">copy</span>' if sample["copy"] else "not a copy"
        rows.append(f'<tr><td><img src="{png(samples[i])}" alt="sample, seed {sample["seed"]}"></td>'
                    f'<td><img src="{png(training[nearest["index"]])}" alt="nearest training image"></td>'
                    f'<td>{nearest["distance"]:.4g} ({sample["ratio"]:.2f})</td>'
                    f'<td>{sample["similarity"][0]["similarity"]:.3f}</td>'
                    f'<td>{verdict}</td><td>{who(nearest)}<br><span class="muted">seed {sample["seed"]}'
                    f'{" · class " + html.escape(str(sample["class"])) if "class" in sample else ""}</span></td></tr>')
    relative = [x["ratio"] for x in results["samples"]]
    similar = [x["similarity"][0]["similarity"] for x in results["samples"]]
    copied = "".join(f"<li>{who(c)} — {_count(c.get('samples', 0), 'sample')}</li>"
                     for c in results["copied"]) or "<li>none</li>"
    repetition = "".join(
        f'<tr><td>{r["from"]}{"" if r["to"] == r["from"] else "–" + str(r["to"])}</td><td>{r["images"]}</td>'
        f'<td>{r["copied"]}</td><td>{r["rate"]:.1%} {_bar(r["rate"])}</td><td>{r["samples"]}</td></tr>'
        for r in results.get("by_repetition", []))
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Replication search · {html.escape(results["subject"])}</title><style>{STYLE}</style></head><body>
<h1>Replication search: {html.escape(results["subject"])}</h1>
<p>{len(results["samples"])} samples searched against the {dataset["distinct_images"]} distinct images (of
{dataset["images"]}) of
<code>{html.escape(str(dataset["ref"]))}</code> ({html.escape(str(dataset["digest"]))}).
<strong>{_count(s["copies"], "sample")}</strong> came much nearer to one training image than to the others (a copy),
regenerating {_count(s["training_images_copied"], "distinct training image")}.</p>
<dl>
<dt>Copy threshold</dt><dd>a sample is a copy when its tiled L2 distance ({t["tile_grid"]}x{t["tile_grid"]}
tiles) to the nearest training image is under {t["ratio"]:.3g} times its mean distance to the next pictures (its
nearest image's near duplicates left out). Calibrated: {t["fraction"]:g} times {t["training_ratio"]:.3g}, the
{t["percentile"]:g}th percentile of that ratio among the {t["pairs"]} distinct pictures of the training set
themselves (whose nearest other picture lies {t["tiled_l2"]:.4g} away at that percentile), which gives
{t.get("calibrated_ratio", t["ratio"]):.3g}; the criterion of Carlini et al. (2023) gives
{t.get("literature_floor", 0):.3g}, and the larger is used</dd>
<dt>Near duplicates</dt><dd>{dataset.get("near_duplicate_clusters", dataset["distinct_images"])} distinct pictures
among the {dataset["distinct_images"]} distinct images: images whose every tile differs by at most
{t.get("near_duplicate_rms", 0):g} RMS, at a shift of up to {t.get("near_duplicate_shift", 0)} pixels, are one
picture</dd>
<dt>Descriptor</dt><dd>{_descriptor(results)}</dd>
<dt>Top-1 similarity</dt><dd>mean {s["similarity_mean"]:.3f}; 75th {s["similarity_p75"]:.3f}, 90th
{s["similarity_p90"]:.3f}, 95th percentile {s["similarity_p95"]:.3f}; {s["over_similarity_threshold"]:.1%} over
{t["similarity"]:.3f}, the {100 - t["percentile"]:g}th percentile among training images</dd>
<dt>Capacity</dt><dd>{cap["parameters"]:,} parameters ({cap["model_bytes"]:,} bytes in fp32) for
{cap["training_images"]:,} training images ({cap["training_pixel_bytes"]:,} bytes of pixels,
{cap["training_png_bytes"]:,} bytes as shards): {cap["model_bits_per_training_image"]:,.0f} bits of model per
training image, {cap.get("model_bits_per_distinct_picture", cap["model_bits_per_training_image"]):,.0f} per distinct
picture</dd></dl>
<h2>Distances to the nearest training image</h2>
<p>Nearest over next distances, tiled L2 (red: the copy threshold)<br>{histogram(relative, t["ratio"],
"distance ratio to the nearest training image")}</p>
<p>Descriptor similarity (red: its threshold)<br>{histogram(similar, t["similarity"], "top-1 similarity")}</p>
<h2>Training images regenerated</h2><ul>{copied}</ul>
<h2>Duplication and replication</h2>
<p>The distinct pictures (near duplicates counted as one) by how often each was in the training set, its near
duplicates included, and how many of each kind the samples regenerated: pictures repeated more often are copied
more, if the model memorises by repetition.</p>
<table><tr><th>Times in training</th><th>Pictures</th><th>Regenerated</th><th>Share</th><th>Samples copying them</th>
</tr>{repetition}</table>
<h2>The samples nearest to a training image</h2>
<table><tr><th>Sample</th><th>Nearest training image</th><th>Tiled L2 (ratio)</th><th>Similarity</th><th>Verdict</th>
<th>Training image</th></tr>{"".join(rows)}</table>
</body></html>
"""
