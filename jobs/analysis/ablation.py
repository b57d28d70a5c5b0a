"""Leave-out ablation: does a model that saw some authors' (or classes') images make pictures closer to them than
its twin that did not? ("Train it without X and see whether it still generates 'by X'.")

Run by jobs.runner as `python -m jobs.analysis.ablation --config JSON --inputs JSON --output DIR`; the inputs are
the two checkpoints (`with_checkpoint_sha256`, `without_checkpoint_sha256`) and the twins' dataset version; or, for
a family of experts and its twin without one expert (`without_expert`), the family's files (`expert_checkpoints:…`,
`router_sha256`, `partition_sha256`): the left-out images are then that expert's cluster, and the control the other
clusters, which both the family and its twin saw.

Both models draw `samples` images with the same seeds. For each image of the left-out authors and classes (L), and
of the control authors and classes that neither model saw (C), its closeness to a model is the highest descriptor
similarity (jobs.analysis.descriptors) among that model's samples. The effect is the difference in differences: (L
with - C with) - (L without - C without): how much nearer the left-out images the model that saw them comes, beyond
what seeing the rest of the data does for images neither saw. Confidence intervals come from a bootstrap over the
samples and the images (percentile, 95%), seeded: the same inputs and seed give the same bytes.

Writes results.json, report.html (the numbers, a plot with the intervals, the nearest samples beside each left-out
image, one sentence saying what they show) and outputs.json.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

import numpy as np

from jobs import family, progress
from jobs.analysis import descriptors, report
from jobs.analysis.common import arguments, cluster_of, rounded, to_unit, training_set, write
from jobs.config import AblationConfig
from jobs.model import class_labels, draw_samples, load_checkpoint, pick_device


def _draw(model: Any, scheduler: Any, meta: dict[str, Any], cfg: AblationConfig) -> tuple[np.ndarray, int]:
    device = pick_device()
    seeds = [cfg.seed + i for i in range(cfg.samples)]
    labels = class_labels(list(meta.get("classes") or []), [], len(seeds))
    drawn = draw_samples(model, scheduler, seeds, cfg.inference_steps, device, sampler=cfg.sampler, labels=labels)
    return to_unit(drawn), int(model.config.sample_size)


def twins_samples(cfg: AblationConfig, checkpoints: dict[str, Path | None],
                  inputs: dict[str, Path]) -> tuple[tuple[np.ndarray, int], tuple[np.ndarray, int]]:
    """The samples of the model and of its twin, the same seeds: two checkpoints, or a family whole and minus one
    expert."""
    device = pick_device()
    if cfg.without_expert is not None:
        whole, scheduler, meta = family.from_inputs(len(cfg.expert_checkpoints), inputs, device)
        seen = _draw(whole, scheduler, meta, cfg)
        progress.report(1, 3, phase="sample")
        whole.leave_out = cfg.without_expert
        return seen, _draw(whole, scheduler, meta, cfg)
    drawn = []
    for name in ("with", "without"):
        checkpoint = checkpoints.get(name)
        if checkpoint is None:
            raise ValueError(f"the {name}-model's checkpoint was not sent to the job")
        drawn.append(_draw(*load_checkpoint(checkpoint, device), cfg))
        progress.report(len(drawn), 3, phase="sample")
    return drawn[0], drawn[1]


def closeness(similarity: np.ndarray, rows: np.ndarray, columns: np.ndarray) -> float:
    """Mean over the chosen images (columns) of their highest similarity among the chosen samples (rows)."""
    return float(similarity[rows][:, columns].max(axis=0).mean())


def bootstrap(sims: dict[str, np.ndarray], cfg: AblationConfig) -> dict[str, Any]:
    """Each score and the effect, with percentile 95% intervals over resampled samples and images."""
    rng = np.random.default_rng(cfg.seed)
    n = cfg.samples
    n_left, n_control = sims["left_with"].shape[1], sims["control_with"].shape[1]
    every = np.arange(n)

    def scores(rows: np.ndarray, left: np.ndarray, control: np.ndarray) -> np.ndarray:
        values = [closeness(sims[key], rows, cols) for key, cols in (
            ("left_with", left), ("left_without", left), ("control_with", control), ("control_without", control))]
        return np.array([*values, (values[0] - values[2]) - (values[1] - values[3])])

    point = scores(every, np.arange(n_left), np.arange(n_control))
    draws = np.array([scores(rng.integers(0, n, n), rng.integers(0, n_left, n_left),
                             rng.integers(0, n_control, n_control)) for _ in range(cfg.bootstrap)])
    low, high = np.percentile(draws, 2.5, axis=0), np.percentile(draws, 97.5, axis=0)
    names = ("left_with", "left_without", "control_with", "control_without", "effect")
    return {name: {"value": float(point[i]), "low": float(low[i]), "high": float(high[i])}
            for i, name in enumerate(names)}


def members(entries: list[dict[str, Any]], authors: list[str], classes: list[str]) -> np.ndarray:
    """The indices of the images by one of `authors` or of one of `classes` (compared case-folded)."""
    by, of = {a.casefold() for a in authors}, {c.casefold() for c in classes}
    return np.array([i for i, e in enumerate(entries) if str(e.get("author") or "").casefold() in by
                     or str(e.get("class") or "").casefold() in of], dtype=np.int64)


def named(authors: list[str], classes: list[str]) -> str:
    """The left-out set in words: its authors, then its classes."""
    return ", ".join([*authors, *(f"class {c}" for c in classes)])


def left_out_words(config: dict[str, Any]) -> str:
    """What the twin did not see, in words: a family's cluster, or authors and classes."""
    if config.get("without_expert") is not None:
        return f"cluster {config['without_expert']}"
    return named(config["left_out"], config.get("left_out_classes", []))


def control_words(config: dict[str, Any]) -> str:
    if config.get("without_expert") is not None:
        return "the other clusters (seen by both)"
    return f"seen by neither: {named(config['control'], config.get('control_classes', []))}"


def sentence(effect: dict[str, float], left_out: list[str], both_saw_control: bool = False) -> str:
    who = ", ".join(left_out)
    interval = f"{effect['value']:.3f} (95% interval {effect['low']:.3f} to {effect['high']:.3f})"
    control = "images both saw" if both_saw_control else "images neither saw"
    if effect["low"] > 0:
        return (f"The model that saw the images of {who} makes pictures closer to them than its twin that did not, "
                f"by {interval} in descriptor similarity beyond what it does for {control}: training on "
                f"them left a trace specific to them.")
    if effect["high"] < 0:
        return (f"The twin that never saw the images of {who} comes closer to them than the model that did, by "
                f"{interval}: no trace of those images specific to the model that saw them.")
    return (f"No difference beyond chance: the effect is {interval}, an interval that includes zero; with these "
            f"samples the two models cannot be told apart on the images of {who}.")


def analyse(cfg: AblationConfig, checkpoints: dict[str, Path | None],
            inputs: dict[str, Path]) -> tuple[dict, dict]:
    (with_samples, side), (without_samples, other_side) = twins_samples(cfg, checkpoints, inputs)
    progress.report(2, 3, phase="sample")
    if side != other_side:
        raise ValueError(f"the twins draw {side}- and {other_side}-pixel images: they were not trained alike")
    data = training_set(cfg, inputs, side)
    if cfg.without_expert is not None:
        cluster = cluster_of(cfg, inputs, cfg.without_expert)
        inside = np.array([str(e.get("image_sha256")) in cluster for e in data.entries], dtype=bool)
        left, control = np.flatnonzero(inside), np.flatnonzero(~inside)
    else:
        left, control = (members(data.entries, authors, classes) for authors, classes in
                         ((cfg.left_out, cfg.left_out_classes), (cfg.control, cfg.control_classes)))
    if len(left) == 0 or len(control) == 0:
        raise ValueError("the dataset has no image of what was left out, or none of the control")
    images = to_unit(data.images)
    features = descriptors.features(images)
    sims = {f"{part}_{model}": descriptors.features(samples) @ features[idx].T
            for model, samples in (("with", with_samples), ("without", without_samples))
            for part, idx in (("left", left), ("control", control))}
    scores = bootstrap(sims, cfg)
    progress.report(3, 3, phase="bootstrap")

    def image(index: int) -> dict[str, Any]:
        entry = data.entries[index]
        return {"index": int(index), "title": entry.get("title"), "author": entry.get("author"),
                "license": entry.get("license")}

    nearest = [{"image": image(int(i)), "with": {"seed": cfg.seed + int(sims["left_with"][:, j].argmax()),
                                                 "similarity": float(sims["left_with"][:, j].max())},
                "without": {"seed": cfg.seed + int(sims["left_without"][:, j].argmax()),
                            "similarity": float(sims["left_without"][:, j].max())}}
               for j, i in enumerate(left)]
    results = rounded({
        "kind": "ablation", "config": cfg.model_dump(mode="json"),
        "dataset": {"ref": cfg.dataset, "digest": data.digest, "left_out_images": len(left),
                    "control_images": len(control)},
        "twin": cfg.twin, "scores": scores,
        "sentence": sentence(scores["effect"], [left_out_words(cfg.model_dump(mode="json"))],
                             both_saw_control=cfg.without_expert is not None),
        "nearest": nearest,
    })
    return results, {"with": with_samples, "without": without_samples, "images": images}


def plot(scores: dict[str, dict[str, float]], width: int = 460, height: int = 180) -> str:
    """Bars for the four closeness scores, each with its interval: the model that saw the images dark, the twin
    light."""
    bars = [("left_with", "left out: model"), ("left_without", "left out: twin"),
            ("control_with", "control: model"), ("control_without", "control: twin")]
    top = max(scores[key]["high"] for key, _ in bars) or 1.0
    step, base = (width - 20) / len(bars), height - 30

    def y(value: float) -> float:
        return base - max(value, 0.0) / top * (height - 50)

    parts = []
    for i, (key, label) in enumerate(bars):
        s, x = scores[key], 10 + i * step
        colour = "#8aa4cc" if key.endswith("without") else "#1f5fbf"
        parts.append(f'<rect x="{x + 8:.0f}" y="{y(s["value"]):.0f}" width="{step - 16:.0f}" '
                     f'height="{base - y(s["value"]):.0f}" fill="{colour}"/>'
                     f'<line x1="{x + step / 2:.0f}" x2="{x + step / 2:.0f}" y1="{y(s["low"]):.0f}" '
                     f'y2="{y(s["high"]):.0f}" stroke="#1d2330" stroke-width="2"/>'
                     f'<text x="{x + step / 2:.0f}" y="{height - 12}" font-size="10" text-anchor="middle">'
                     f'{html.escape(label)}</text>')
    return (f'<svg width="{width}" height="{height}" role="img" aria-label="closeness with 95% intervals">'
            f'<rect width="100%" height="100%" fill="#fff" stroke="#d8dde5"/>{"".join(parts)}</svg>')


def render(results: dict[str, Any], pictures: dict[str, np.ndarray]) -> str:
    s, cfg = results["scores"], results["config"]
    rows = "".join(
        f'<tr><td><img src="{report.png(pictures["images"][n["image"]["index"]])}" alt="left-out image"></td>'
        f'<td><img src="{report.png(pictures["with"][n["with"]["seed"] - cfg["seed"]])}" alt="nearest sample">'
        f'<br>{n["with"]["similarity"]:.3f}</td>'
        f'<td><img src="{report.png(pictures["without"][n["without"]["seed"] - cfg["seed"]])}" '
        f'alt="twin\'s nearest sample"><br>{n["without"]["similarity"]:.3f}</td><td>{report.who(n["image"])}</td></tr>'
        for n in results["nearest"][:40])
    table = "".join(f"<tr><td>{html.escape(key.replace('_', ' '))}</td><td>{v['value']:.4f}</td>"
                    f"<td>{v['low']:.4f} to {v['high']:.4f}</td></tr>" for key, v in s.items())
    return f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Leave-out ablation · {html.escape(cfg["with_model"])} vs {html.escape(results["twin"])}</title>
<style>{report.STYLE}</style></head><body>
<h1>Leave-out ablation: {html.escape(cfg["with_model"])} and its twin {html.escape(results["twin"])}</h1>
<p id="sentence"><strong>{html.escape(results["sentence"])}</strong></p>
<p>Left out of the twin: {html.escape(left_out_words(cfg))}
({results["dataset"]["left_out_images"]} images); the control, {html.escape(control_words(cfg))}
({results["dataset"]["control_images"]} images). {cfg["samples"]} samples from each model, the same seeds;
{cfg["bootstrap"]} bootstrap resamples.</p>
{plot(s)}
<table><tr><th>Score</th><th>Value</th><th>95% interval</th></tr>{table}</table>
<h2>Each left-out image and the nearest sample of each model</h2>
<table><tr><th>Left-out image</th><th>Model that saw it</th><th>Its twin</th><th>Provenance</th></tr>{rows}</table>
</body></html>
"""


def main(cfg: AblationConfig, checkpoints: dict[str, Path | None], inputs: dict[str, Path], output: Path) -> dict:
    results, pictures = analyse(cfg, checkpoints, inputs)
    write(output, "ablation", results, render(results, pictures))
    print(f"done: {results['sentence']}", flush=True)
    return results


def parse(argv: list[str] | None = None) -> tuple[AblationConfig, dict[str, Path | None], dict[str, Path], Path]:
    config, inputs, output = arguments("jobs.analysis.ablation", __doc__, argv)
    checkpoints = {"with": inputs.pop("with_checkpoint_sha256", None),
                   "without": inputs.pop("without_checkpoint_sha256", None)}
    return AblationConfig.model_validate_json(config), checkpoints, inputs, output


if __name__ == "__main__":
    main(*parse())
