"""`observatory analysis planted`: the planted-copy check as a demonstration on this machine. A generated dataset
with a few pictures repeated many times is trained until the model memorises them; the replication search and the
extraction attack must then find the planted pictures and no others. Writes their reports into a folder."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from observatory.console import console
from observatory.console import fail as _fail

analysis_app = typer.Typer(help="The analysis tooling, run on this machine.", no_args_is_help=True,
                           rich_markup_mode=None)


class _ProgressLines:
    """A stdout for a job run in-process: its progress lines move the bar; everything else is dropped."""

    def __init__(self, progress: Progress, task: Any) -> None:
        self.progress, self.task, self.pending = progress, task, ""

    def write(self, text: str) -> int:
        from jobs import progress as protocol

        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            found = protocol.parse(line)
            if found and found[0] == "progress":
                self.progress.update(self.task, completed=float(found[1].get("fraction", 0)))
        return len(text)

    def flush(self) -> None:
        pass


PICTURES_HELP = ("blocks (generated), a folder of photographs or a dataset package to cut natural pictures from, or "
                 "a dataset version (name@N).")
VARIANTS_HELP = "The share of each planted picture's repetitions that are near duplicates (nudged, shifted, rescaled)."


def _pictures(named: str) -> Path | list | None:
    """What the planted set is cut from: None for generated blocks, a folder, or a registered dataset version's
    images."""
    from jobs.analysis import pictures

    if named == "blocks":
        return None
    if Path(named).is_dir():
        return Path(named)
    if "@" not in named:
        raise ValueError("name blocks, a folder of images, or a dataset version as name@N")
    from service.archive.service import store_for
    from service.config import get_settings
    from service.datasets.service import find, images_of
    from service.db import session_scope
    from service.errors import DomainError
    from service.migrations import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    try:
        with session_scope() as session:
            records = images_of(store_for(settings), find(session, named))
    except DomainError as exc:
        raise ValueError(exc.message) from None
    return pictures.from_records(list({r["image_sha256"]: (r, data) for r, data in records}.values()))


@analysis_app.command("planted", short_help="Plant copies, memorise them, and search for them.")
def planted_check(
    out: Annotated[Path, typer.Option(help="Where the dataset, the model and the reports go.")] = Path("var/planted"),
    distinct: Annotated[int, typer.Option(min=2, max=100_000, help="Distinct pictures, once each.")] = 100,
    planted: Annotated[int, typer.Option(min=1, max=100, help="Pictures planted many times.")] = 5,
    copies: Annotated[int, typer.Option(min=1, max=10_000, help="Times each planted picture is repeated.")] = 60,
    steps: Annotated[int, typer.Option(min=1, max=1_000_000, help="Training steps.")] = 500,
    samples: Annotated[int, typer.Option(min=2, max=4096, help="Samples searched.")] = 128,
    side: Annotated[int, typer.Option(min=8, max=64, help="Picture side in pixels.")] = 16,
    seed: Annotated[int, typer.Option(min=0, help="Seeds the dataset, the training and the samples.")] = 0,
    pictures: Annotated[str, typer.Option(help=PICTURES_HELP)] = "blocks",
    variants: Annotated[float, typer.Option(min=0, max=1, help=VARIANTS_HELP)] = 0.0,
) -> None:
    """Plant copies, train until they are memorised, and search for them (about two minutes on two CPU cores at
    the defaults); prints what was found and where the reports are."""
    from jobs.analysis import planted as planted_set
    from jobs.analysis.extraction import main as extraction_main
    from jobs.analysis.replication import main as replication_main
    from jobs.config import ExtractionConfig, ReplicationConfig, TrainConfig
    from jobs.package import INPUT_PREFIX
    from jobs.train import main as train_main

    if out.exists() and any(out.iterdir()):
        _fail(f"{out} is not empty: name a new folder with --out")
    try:
        package = planted_set.package(out / "package", distinct=distinct, planted=planted, copies=copies, side=side,
                                      seed=seed, photos=_pictures(pictures), variants=variants)
    except (OSError, ValueError) as exc:
        _fail(f"--pictures {pictures}: {exc}")
    digest = json.loads((package / "dataset.json").read_text())["digest"]
    inputs = {f"{INPUT_PREFIX}{name}": package / name for name in ("manifest.jsonl", "shard-00000.tar")}
    console.print(f"{distinct} distinct pictures and {planted} planted x {copies}, {side}x{side}: {out / 'package'}")
    columns = (TextColumn("{task.description:<28}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
               TimeElapsedColumn())

    def step(description: str, work: Any) -> Any:
        with Progress(*columns, console=console, transient=False) as progress:
            task = progress.add_task(description, total=1.0)
            with contextlib.redirect_stdout(_ProgressLines(progress, task)):
                result = work()
            progress.update(task, completed=1.0)
        return result

    step(f"training {steps} steps", lambda: train_main(TrainConfig(
        dataset="planted-copies", dataset_digest=digest, resolution=side, steps=steps, batch_size=64,
        ema_decay=0.995, seed=seed, sample_count=1, sample_inference_steps=2, checkpoint_every=10**6),
        out / "train", inputs))
    checkpoint = out / "train" / "checkpoint.pt"
    found = step(f"searching {samples} samples", lambda: replication_main(ReplicationConfig(
        model="planted@1", samples=samples, inference_steps=25, seed=seed, dataset_digest=digest), checkpoint,
        inputs, out / "replication"))
    attack = step("extraction attack", lambda: extraction_main(ExtractionConfig(
        model="planted@1", samples_per_class=samples, inference_steps=25, seed=seed, dataset_digest=digest),
        checkpoint, inputs, out / "extraction"))
    titles = sorted({c["title"].split(" (")[0] for c in found["copied"]})
    regenerated = [t for t in titles if t.startswith("planted-")]
    others = [t for t in titles if not t.startswith("planted-")]
    extracted = sorted({g["nearest"]["title"].split(" (")[0] for g in attack["groups"] if g["extracted"]})
    console.print(f"replication search: {found['summary']['copies']} of {samples} samples are copies; planted "
                  f"pictures regenerated: {len(regenerated)} of {planted}; other pictures flagged: "
                  f"{len(others)}{' (' + ', '.join(others) + ')' if others else ''}")
    console.print(f"extraction attack: {len(extracted)} training pictures extracted"
                  f"{' (' + ', '.join(extracted) + ')' if extracted else ''}")
    console.print(f"reports: {(out / 'replication' / 'report.html').resolve()}")
    console.print(f"         {(out / 'extraction' / 'report.html').resolve()}")
