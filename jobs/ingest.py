"""Ingest from Wikimedia Commons on a pool node, into a dataset package the observatory registers when the run
succeeds.

Run by jobs.runner as `python -m jobs.ingest --config JSON --output DIR`. The node asks the Commons API at
OBSERVATORY_COMMONS_API_URL, with a User-Agent that names OBSERVATORY_COMMONS_CONTACT and at most one request per
OBSERVATORY_COMMONS_MIN_INTERVAL_S (the scheduler sets all three). Every file's outcome is kept in the work folder
as it happens (jobs.commons.ingest); the folder is packed into `state.pt` at least every minute and when the job is
asked to stop, and the runner ships it, so that a run moved to another node resumes without downloading anything
twice. Writes `dataset.tar` (the package: manifest, shards, attribution, what was left out and why), its
`dataset.json` and `attribution.txt` beside it, and outputs.json declaring them.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import tarfile
import time
from pathlib import Path

from jobs import progress
from jobs.commons.client import FILE_HOSTS, CommonsClient, CommonsError
from jobs.commons.ingest import Ingest, Rules, Source, write_version
from jobs.config import IngestConfig
from jobs.kinds import KINDS
from jobs.outputs import declare
from jobs.package import write_tar
from jobs.version import installed_version

PACK_EVERY_S = 60.0
STATE = "state.pt"  # the runner's name for a resumable job's state, whatever is in it


class Stopped(Exception):
    """Asked to stop (SIGTERM): the work folder is packed and announced, and no outputs are made."""


_stop = {"asked": False}


def _on_sigterm(signum, frame) -> None:  # type: ignore[no-untyped-def]
    _stop["asked"] = True


def pack(work: Path, state: Path, seen: int) -> None:
    """The work folder as one tar file (`state.pt`), announced as the checkpoint at `seen` files."""
    members = [(str(path.relative_to(work)), path.read_bytes()) for path in sorted(work.rglob("*")) if path.is_file()]
    tmp = state.with_suffix(".tmp")
    write_tar(tmp, members)
    tmp.replace(state)
    progress.checkpoint(seen, state)


def unpack(state: Path, work: Path) -> None:
    """Restore a packed work folder, taking plain files with plain relative names only."""
    with tarfile.open(state) as tar:
        for entry in tar:
            name = Path(entry.name)
            if not entry.isfile() or name.is_absolute() or ".." in name.parts:
                raise ValueError(f"the saved state holds {entry.name!r}, which is not a work file")
            target = work / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(entry).read())


def client_from_env(resolution: int) -> CommonsClient:
    contact = os.environ.get("OBSERVATORY_COMMONS_CONTACT", "")
    if not contact:
        raise ValueError("the observatory gave no contact for the User-Agent (OBSERVATORY_COMMONS_CONTACT): an "
                         "operator sets it before Commons is asked anything")
    return CommonsClient(os.environ.get("OBSERVATORY_COMMONS_API_URL", "https://commons.wikimedia.org/w/api.php"),
                         user_agent=f"CommonsObservatory/{installed_version()} ({contact})",
                         thumb_width=2 * resolution,
                         min_interval_s=float(os.environ.get("OBSERVATORY_COMMONS_MIN_INTERVAL_S", "1.0")),
                         file_hosts=[h for h in os.environ.get("OBSERVATORY_COMMONS_FILE_HOSTS",
                                                               ",".join(FILE_HOSTS)).split(",") if h])


def main(cfg: IngestConfig, output: Path, client: CommonsClient | None = None) -> bool:
    """Run (or resume) the ingest; returns False when it stopped on request."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    output.mkdir(parents=True, exist_ok=True)
    work, state = output / "work", output / STATE
    if state.exists() and not work.exists():
        unpack(state, work)
        print("resumed from the saved work folder", flush=True)
    source = Source(categories=tuple(cfg.categories), depth=cfg.depth, search=cfg.search, titles=tuple(cfg.titles),
                    limit=cfg.limit)
    rules = Rules(resolution=cfg.resolution, policy=frozenset(cfg.licenses), blocklist=tuple(cfg.blocklist))
    client = client or client_from_env(cfg.resolution)
    packed = {"at": time.monotonic()}

    def on_file(kept: int, seen: int) -> None:
        progress.report(seen, cfg.limit, phase="ingest", kept=kept)
        if _stop["asked"]:
            pack(work, state, seen)
            raise Stopped
        if time.monotonic() - packed["at"] > PACK_EVERY_S:
            pack(work, state, seen)
            packed["at"] = time.monotonic()

    print(f"ingesting from {client.api_url} as {client.http.headers['User-Agent']}: {cfg.model_dump_json()}",
          flush=True)
    job = Ingest(client, source, rules, work, on_file)
    try:
        job.run()
    except Stopped:
        print("stopped on request; the work so far is saved", flush=True)
        return False
    package = write_version(job, cfg.name, output / "package")
    write_tar(output / "dataset.tar", [(path.name, path.read_bytes()) for path in sorted(package.folder.iterdir())])
    shutil.copyfile(package.folder / "dataset.json", output / "dataset.json")
    shutil.copyfile(package.folder / "attribution.txt", output / "attribution.txt")
    declare(output, KINDS["ingest"].outputs)
    state.unlink(missing_ok=True)
    progress.report(cfg.limit, cfg.limit, phase="done", kept=package.images)
    print(f"done: {package.images} images kept ({package.digest}); {sum(package.rejected.values())} left out, "
          f"{package.duplicates} duplicates", flush=True)
    return True


def parse(argv: list[str] | None = None) -> tuple[IngestConfig, Path]:
    parser = argparse.ArgumentParser(prog="jobs.ingest", description=__doc__)
    parser.add_argument("--config", required=True, help="the ingest job plan, as JSON")
    parser.add_argument("--output", required=True, type=Path, help="folder for outputs and the saved state")
    parser.add_argument("--inputs", default="{}", help="none for an ingest")
    ns = parser.parse_args(argv)
    return IngestConfig.model_validate_json(ns.config), ns.output


if __name__ == "__main__":
    config, out = parse()
    try:
        main(config, out)
    except (CommonsError, ValueError) as exc:
        print(f"the ingest failed: {exc}", flush=True)
        raise SystemExit(1) from None
