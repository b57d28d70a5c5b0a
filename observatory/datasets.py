"""`observatory dataset …`: ingest a training set from Wikimedia Commons on this machine and register it, and list
what is registered."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from observatory.console import console
from observatory.console import fail as _fail
from service.config import get_settings

dataset_app = typer.Typer(help="Training sets: ingest from Wikimedia Commons, list, partition.",
                          no_args_is_help=True, rich_markup_mode=None)
withdrawals_app = typer.Typer(help="Training images withdrawn from the model.", no_args_is_help=True,
                              rich_markup_mode=None)
dataset_app.add_typer(withdrawals_app, name="withdrawals")


@dataset_app.command("ingest", short_help="Ingest Wikimedia Commons files into a new dataset.")
def ingest(
    name: Annotated[str, typer.Option(help="The dataset's name, e.g. commons-trees; each ingest under it is a new "
                                           "version.")],
    category: Annotated[list[str] | None, typer.Option(help="A Commons category, e.g. 'Trees in Finistère'; "
                                                          "repeat for several, which become the dataset's classes "
                                                          "(for a class-conditional model).")] = None,
    depth: Annotated[int, typer.Option(min=0, max=5, help="How many levels of subcategories to include.")] = 0,
    search: Annotated[str | None, typer.Option(help="A search among Commons files instead of a category.")] = None,
    title: Annotated[list[str] | None, typer.Option(help="A file's title (File:…); repeat for several.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Stop after this many files.")] = None,
    resolution: Annotated[int, typer.Option(min=8, max=1024, help="Training size in pixels (square).")] = 64,
    blocklist: Annotated[Path | None, typer.Option(help="A file of names (people, artists, trademarks), one per "
                                                        "line: files that mention one are left out.")] = None,
    license_: Annotated[list[str] | None, typer.Option("--license", help="Allow only these license families: "
                                                       "public-domain, cc0, cc-by, cc-by-sa (default: all four).")]
    = None,
    contact: Annotated[str | None, typer.Option(help="An e-mail address or URL for the User-Agent (default: "
                                                     "OBSERVATORY_COMMONS_CONTACT).")] = None,
    work: Annotated[Path | None, typer.Option(help="The work folder; an interrupted ingest resumes from it "
                                                   "(default: var/ingest/NAME).")] = None,
) -> None:
    """Ingest files from Wikimedia Commons into a new dataset version, and register it.

    Only openly licensed files are kept (public domain, CC0, CC BY, CC BY-SA by default), each with its author,
    license and source; everything left out is listed with the reason. Run it again with the same options to
    resume an interrupted ingest without downloading anything twice."""
    from jobs.commons import licenses
    from jobs.commons.client import CommonsClient, CommonsError
    from jobs.commons.ingest import Rules, Source
    from jobs.commons.ingest import ingest as run_ingest
    from jobs.version import installed_version
    from service.archive.service import store_for
    from service.datasets.service import check_name, register
    from service.db import session_scope
    from service.errors import DomainError
    from service.migrations import upgrade

    settings = get_settings()
    try:
        check_name(name)
        source = Source(categories=tuple(category or ()), depth=depth, search=search, titles=tuple(title or ()),
                        limit=limit)
    except (DomainError, ValueError) as exc:
        _fail(getattr(exc, "message", str(exc)))
    policy = frozenset(license_ or licenses.FAMILIES)
    unknown = policy - set(licenses.FAMILIES)
    if unknown:
        _fail(f"--license: {', '.join(sorted(unknown))} is not one of {', '.join(licenses.FAMILIES)}")
    names: tuple[str, ...] = ()
    if blocklist is not None:
        if not blocklist.is_file():
            _fail(f"--blocklist: no file {blocklist}")
        names = tuple(line.strip() for line in blocklist.read_text().splitlines() if line.strip())
    contact = contact or settings.commons_contact
    if not contact:
        _fail("say how Wikimedia can reach you: --contact you@example.org (or OBSERVATORY_COMMONS_CONTACT)")
    try:
        client = CommonsClient(settings.commons_api_url, user_agent=f"CommonsObservatory/{installed_version()} "
                               f"({contact})", thumb_width=2 * resolution,
                               min_interval_s=settings.commons_min_interval_s,
                               file_hosts=settings.commons_file_hosts)
    except ValueError as exc:
        _fail(str(exc))
    folder = work or settings.var_dir / "ingest" / name
    rules = Rules(resolution=resolution, policy=policy, blocklist=names)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    try:
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task("asking Commons…")
            version = run_ingest(client, source, rules, folder, name, progress=lambda kept, seen: progress.update(
                task, description=f"{seen} files looked at, {kept} kept"))
    except CommonsError as exc:
        _fail(f"{exc} (run the same command again to resume)")
    except ValueError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        console.print("stopped; run the same command again to resume")
        raise typer.Exit(130) from None
    upgrade(settings.resolved_database_url)
    with session_scope() as session:
        registered, new = register(session, store_for(settings), version.folder, actor=None)
        ref, digest = f"{registered.name}@{registered.version}", registered.digest
    licenses_text = ", ".join(f"{n} {c}" for n, c in sorted(version.licenses.items())) or "none"
    rejected = sum(version.rejected.values())
    verb = "registered" if new else "already registered as"
    console.print(f"{verb} {ref} ({digest}): {version.images} images ({licenses_text}); {rejected} left out, "
                  f"{version.duplicates} duplicates (see {version.folder}/rejected.jsonl and duplicates.jsonl)")


@dataset_app.command("list", short_help="Every registered dataset version.")
def list_versions() -> None:
    """Every registered dataset version: name@version, images, where they came from, digest."""
    from service.datasets.service import listing
    from service.db import session_scope
    from service.migrations import upgrade

    upgrade(get_settings().resolved_database_url)
    with session_scope() as session:
        for v in listing(session):
            console.print(f"{v.name}@{v.version:<4} {v.images:>7} images  {v.origin:<20} {v.digest}")


@dataset_app.command("partition", short_help="Cut a dataset version into clusters of look-alikes.")
def partition(
    ref: Annotated[str, typer.Argument(help="The dataset version: name@version, name (its latest) or sha256:….")],
    clusters: Annotated[int, typer.Option(min=1, max=64, help="How many clusters (one expert each).")],
    seed: Annotated[int, typer.Option(min=0, help="The seed of the clustering's starts.")] = 0,
) -> None:
    """Cut a dataset version into balanced clusters of look-alike images (k-means over the offline descriptor)
    and record the partition: a family of experts trains one expert per cluster. The same version, number of
    clusters and seed always give the same partition."""

    from jobs import clusters as clustering
    from jobs.partition import encode
    from service.archive.service import store_for
    from service.datasets import partitions
    from service.datasets.service import find, images_of
    from service.db import session_scope
    from service.errors import DomainError
    from service.migrations import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url)
    store = store_for(settings)
    try:
        with session_scope() as session:
            version = find(session, ref)
            name, digest = f"{version.name}@{version.version}", version.digest
            records = images_of(store, version)
        columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
        with Progress(*columns, console=console, transient=True) as progress:
            task = progress.add_task(f"describing {len(records)} images…", total=len(records))
            points = clustering.descriptors((data for _, data in records),
                                            progress=lambda done: progress.advance(task, done))
            progress.update(task, description=f"clustering {len(records)} images into {clusters}…")
            made = clustering.make(digest, [record for record, _ in records], points, clusters, seed)
        with session_scope() as session:
            found = partitions.register(session, store, find(session, digest), encode(made))
            sizes, partition_digest = found.sizes, found.digest
    except (DomainError, ValueError) as exc:
        _fail(getattr(exc, "message", str(exc)))
    console.print(f"{name} in {clusters} clusters (seed {seed}): {partition_digest}; images per cluster: "
                  + ", ".join(map(str, sizes)))


@withdrawals_app.command("check")
def withdrawals_check(
    ref: Annotated[str, typer.Argument(help="The dataset version: name@version, name (its latest) or sha256:….")],
    record: Annotated[bool, typer.Option("--record", help="Record each deleted file as withdrawn (reason: "
                                                          "deleted from Commons).")] = False,
    contact: Annotated[str | None, typer.Option(help="An e-mail address or URL for the User-Agent (default: "
                                                     "OBSERVATORY_COMMONS_CONTACT).")] = None,
) -> None:
    """Ask Wikimedia Commons which files of a dataset version no longer exist (deleted since the ingest), and with
    --record withdraw them, so that the families trained on them can be rebuilt without them."""
    from jobs.commons.client import CommonsClient, CommonsError
    from jobs.version import installed_version
    from service.archive.service import store_for
    from service.datasets import withdrawals
    from service.datasets.partitions import manifest_records
    from service.datasets.service import find
    from service.db import session_scope
    from service.errors import DomainError
    from service.migrations import upgrade
    from service.models import WithdrawalReason

    settings = get_settings()
    contact = contact or settings.commons_contact
    if not contact:
        _fail("say how Wikimedia can reach you: --contact you@example.org (or OBSERVATORY_COMMONS_CONTACT)")
    upgrade(settings.resolved_database_url)
    store = store_for(settings)
    try:
        with session_scope() as session:
            version = find(session, ref)
            name = f"{version.name}@{version.version}"
            records = [r for r in manifest_records(store, version) if r.get("page_id")]
        client = CommonsClient(settings.commons_api_url, user_agent=f"CommonsObservatory/{installed_version()} "
                               f"({contact})", min_interval_s=settings.commons_min_interval_s,
                               file_hosts=settings.commons_file_hosts)
        with console.status(f"asking Commons about {len(records)} files of {name}…"):
            gone = client.missing(int(r["page_id"]) for r in records)
        deleted = [r for r in records if int(r["page_id"]) in gone]
        for entry in deleted:
            console.print(f"deleted from Commons: {entry.get('title', '?')} (page {entry['page_id']}, "
                          f"sha256 {entry['image_sha256'][:16]}…)")
        if record and deleted:
            with session_scope() as session:
                for entry in deleted:
                    withdrawals.withdraw(session, store, actor=None, reason=WithdrawalReason.deleted,
                                         sha256=str(entry["image_sha256"]), note="deleted from Commons")
    except (DomainError, CommonsError, ValueError) as exc:
        _fail(getattr(exc, "message", str(exc)))
    verb = "recorded as withdrawn" if record else "not recorded (run again with --record)"
    console.print(f"{len(deleted)} of {len(records)} files of {name} are gone from Commons"
                  + (f"; {verb}" if deleted else ""))
