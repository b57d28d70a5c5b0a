"""`observatory`: serve, db, user, demo, pool join and rotate-token. The composition root: the one place that
wires the parts together."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import threading
from pathlib import Path
from typing import Annotated

import typer
from sqlmodel import Session

from observatory.analysis import analysis_app
from observatory.console import console
from observatory.console import fail as _fail
from observatory.datasets import dataset_app
from service.config import Settings, get_settings, short_folder
from service.errors import DomainError
from service.models import Role

app = typer.Typer(help="Commons Observatory: peer-reviewed GPU time for a diffusion model trained on openly "
                       "licensed images.", no_args_is_help=True, rich_markup_mode=None)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True, rich_markup_mode=None)
user_app = typer.Typer(help="Accounts.", no_args_is_help=True, rich_markup_mode=None)
pool_app = typer.Typer(help="The pool: lend this machine to it, or rotate its token.", no_args_is_help=True,
                       rich_markup_mode=None)
archive_app = typer.Typer(help="The archive of runs' files.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(db_app, name="db")
app.add_typer(archive_app, name="archive")
app.add_typer(user_app, name="user")
app.add_typer(pool_app, name="pool")
app.add_typer(dataset_app, name="dataset")
app.add_typer(analysis_app, name="analysis")


@app.callback()
def _private_files() -> None:
    """Everything the observatory writes (database, archive, secrets, logs) is its own user's alone."""
    os.umask(0o077)


def register_bundled(settings: Settings) -> None:
    """The bundled offline set, registered as a dataset version if it is not yet (its files into the archive)."""
    from service.archive.service import store_for
    from service.datasets.service import ensure_bundled
    from service.db import engine_for

    engine = engine_for(settings)
    try:
        with Session(engine) as session:
            ensure_bundled(session, store_for(settings))
            session.commit()
    finally:
        engine.dispose()


def catalogue_products(settings: Settings) -> int:
    """The archive's catalogue brought up to date with every product (after an upgrade from before it)."""
    from service.archive.catalog import sync
    from service.db import engine_for

    engine = engine_for(settings)
    try:
        with Session(engine) as session:
            added = sync(session)
            session.commit()
    finally:
        engine.dispose()
    return added


def _require_database(settings: Settings) -> None:
    """A command that only reads stops when there is no observatory here yet, rather than make an empty one."""
    if settings.database_url is None and not (settings.var_dir / "observatory.db").exists():
        _fail(f"no observatory here yet: {settings.var_dir / 'observatory.db'} does not exist (set "
              "OBSERVATORY_VAR_DIR or OBSERVATORY_DATABASE_URL to the observatory's, or run `observatory serve` "
              "to start one)")


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _serve(settings: Settings, host: str, port: int, api: bool, scheduler: bool, watch: int | None = None) -> None:
    import uvicorn

    from observatory.runtime import open_pool, start_scheduler
    from service.db import engine_for
    from service.migrations import upgrade
    from web.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # uvicorn re-raises SIGTERM after its own shutdown; turning it into an exception lets `finally` stop Ray.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)  # `db upgrade` says what it did; serving need not
    if watch is not None:  # the demo shows its run in the terminal; routine log lines would scroll it away
        import ray  # noqa: F401  (Ray sets its loggers' levels as it is imported: quieted after that)

        for name in ("observatory.scheduler", "ray", "ray.dashboard.modules.dashboard_sdk",
                     "ray._private.runtime_env.packaging"):
            logging.getLogger(name).setLevel(logging.WARNING)
    upgrade(settings.resolved_database_url)
    register_bundled(settings)
    catalogue_products(settings)
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    if api and "base_url" not in settings.model_fields_set:
        # Links the portal makes (invites, the join command) name the port it serves on, unless one is set.
        settings = settings.model_copy(update={"base_url": f"http://{local}:{port}"})
        if local != host:
            console.print(f"[yellow]links in the portal name {settings.base_url}: set OBSERVATORY_BASE_URL to the "
                          "address people reach it at[/yellow]")
    if api and not settings.job_api_url:  # jobs on this machine's Ray call this very server
        settings = settings.model_copy(update={"job_api_url": f"http://{local}:{port}"})
    # The API and the scheduler each get their own pool, so that a flood of page loads cannot starve the ticks.
    engine = engine_for(settings)
    scheduler_engine = engine_for(settings.model_copy(update={"db_pool_size": 2, "db_max_overflow": 2}))
    pool = thread = None
    try:
        if scheduler:
            with console.status("starting the Ray pool…"):
                pool = open_pool(settings)
            console.print(f"Ray pool ready ({'local head' if pool.head else settings.ray_address})")
            try:
                thread = start_scheduler(scheduler_engine, settings, pool)
            except DomainError as exc:
                _fail(exc.message)
        if watch is not None:
            # The demo shows its run in the terminal; request logs would scroll it away.
            from observatory.watch import watch_run

            watcher = threading.Thread(target=watch_run, daemon=True,
                                       args=(engine, watch, console, thread.stop_event, f"http://{host}:{port}"))
            watcher.start()
        if api:
            uvicorn.run(create_app(settings, engine), host=host, port=port,
                        log_level="warning" if watch is not None else "info",
                        proxy_headers=bool(settings.forwarded_allow_ips),
                        forwarded_allow_ips=settings.forwarded_allow_ips)
        elif thread is not None:
            thread.stop_event.wait()
    except KeyboardInterrupt:
        pass
    finally:
        if thread:
            thread.stop()
        if pool:
            pool.stop()
        engine.dispose()
        scheduler_engine.dispose()


@app.command(short_help="Run the portal, the JSON API and the scheduler.")
def serve(
    host: Annotated[str, typer.Option(help="The address the portal listens on (0.0.0.0: every interface).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The portal's port.")] = 8000,
    api: Annotated[bool, typer.Option(help="Serve the API and the portal (on unless --no-api).",
                                      show_default=False)] = True,
    scheduler: Annotated[bool, typer.Option(help="Run the scheduler loop and, if configured, a local Ray (on "
                                                 "unless --no-scheduler).", show_default=False)] = True,
) -> None:
    """Run the portal, the JSON API and the scheduler (deployments run them apart with --no-api/--no-scheduler).

    Settings come from OBSERVATORY_* environment variables (or a .env file): OBSERVATORY_DATABASE_URL,
    OBSERVATORY_BASE_URL, OBSERVATORY_RAY_ADDRESS and the rest, listed in docs/operator.md."""
    if not api and not scheduler:
        _fail("nothing to run: drop --no-api or --no-scheduler")
    _serve(get_settings(), host, port, api, scheduler)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="A revision id, or head.")] = "head") -> None:
    """Apply migrations up to REVISION (default: the newest)."""
    from service.migrations import upgrade

    settings = get_settings()
    upgrade(settings.resolved_database_url, revision)
    console.print(f"database at {revision}")
    if revision == "head":
        added = catalogue_products(settings)
        if added:
            console.print(f"the archive's catalogue: {added} data products added")


@archive_app.command("sweep", short_help="Delete archive objects nothing refers to.")
def archive_sweep(grace_s: Annotated[float, typer.Option(min=60, help="Keep objects younger than this, whatever "
                                                                      "refers to them (uploads in flight).")]
                  = 3600) -> None:
    """Delete the archive's objects that nothing refers to any more (outputs sent again, superseded
    checkpoints); the scheduler does this every OBSERVATORY_ARCHIVE_SWEEP_INTERVAL_S too."""
    from service.archive.service import store_for
    from service.archive.sweep import sweep
    from service.db import engine_for

    settings = get_settings()
    engine = engine_for(settings)
    try:
        with Session(engine) as session:
            report = sweep(session, store_for(settings), grace_s=grace_s)
    finally:
        engine.dispose()
    console.print(f"deleted {report.deleted} objects ({report.freed_bytes / 2**20:.1f} MiB); kept {report.kept}")


@archive_app.command("prune", short_help="Delete finished runs' older intermediate checkpoints.")
def archive_prune(
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List what would go; delete nothing.")] = False,
    keep: Annotated[int | None, typer.Option(min=1, help="States each finished run keeps (default: "
                                                         "OBSERVATORY_RETENTION_KEEP_CHECKPOINTS).")] = None,
    after_days: Annotated[float | None, typer.Option(min=0, help="Only runs finished this long ago (default: "
                                                                 "OBSERVATORY_RETENTION_AFTER_DAYS).")] = None,
) -> None:
    """Delete each finished run's resumable states beyond its newest KEEP, once it has been finished AFTER_DAYS;
    never one a model version, an analysis or any plan points to, nor a declared output. Each run's removals go
    to the audit log."""
    from service.archive.retention import prune
    from service.archive.service import store_for
    from service.archive.storage import size_words
    from service.db import engine_for

    settings = get_settings()
    _require_database(settings)
    keep = keep or settings.retention_keep_checkpoints
    after = settings.retention_after_days if after_days is None else after_days
    engine = engine_for(settings)
    try:
        with Session(engine) as session:
            listed = prune(session, store_for(settings), keep=keep, after_days=after, dry_run=dry_run,
                           actor_name="observatory archive prune")
    finally:
        engine.dispose()
    for item in listed:
        console.print(f"run {item.run_id}: step {item.step} {item.sha256} ({size_words(item.size)})")
    total = size_words(sum(item.size for item in listed))
    verb = "would delete" if dry_run else "deleted"
    console.print(f"{verb} {len(listed)} intermediate checkpoints ({total}); each finished run keeps its newest "
                  f"{keep}, runs finished under {after:g} days ago are left alone")


@db_app.command("downgrade", short_help="Revert migrations down to REVISION.")
def db_downgrade(revision: Annotated[str, typer.Argument(help="A revision id, or base (empties the database).")]
                 ) -> None:
    """Revert migrations down to REVISION ('base' empties the database)."""
    from service.migrations import downgrade

    downgrade(get_settings().resolved_database_url, revision)
    console.print(f"database at {revision}")


@user_app.command("add")
def user_add(
    email: str,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    role: Annotated[list[Role] | None, typer.Option(help="researcher, reviewer, owner or admin; repeat for several "
                                                            "(default: researcher).")] = None,
    password: Annotated[str | None, typer.Option(help="Local password; prompted for when omitted.")] = None,
) -> None:
    """Create an account."""
    from service.auth.service import create_user
    from service.db import session_scope
    from service.errors import DomainError
    from service.migrations import upgrade

    if password is None:
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    settings = get_settings()
    upgrade(settings.resolved_database_url)
    try:
        with session_scope() as session:
            user = create_user(session, email=email, name=name or email, roles=role or [Role.researcher],
                               password=password)
    except DomainError as exc:
        _fail(exc.message)
    console.print(f"created {user.email} (id {user.id}), roles: {', '.join(user.roles)}")


@user_app.command("roles", short_help="Set the roles an account holds.")
def user_roles(
    email: str,
    role: Annotated[list[Role], typer.Option(help="researcher, reviewer, owner or admin; repeat for several. The "
                                                  "account holds exactly these afterwards.")],
) -> None:
    """Set the roles an account holds (recorded in the audit log), e.g. make a researcher a reviewer too."""
    from sqlmodel import select

    from service.auth.service import normalise_email, set_roles
    from service.db import session_scope
    from service.migrations import upgrade
    from service.models import User

    upgrade(get_settings().resolved_database_url)
    try:
        with session_scope() as session:
            user = session.exec(select(User).where(User.email == normalise_email(email))).first()
            if user is None:
                _fail(f"no account for {email}")
            user = set_roles(session, actor=None, user_id=user.id, roles=role)
    except DomainError as exc:
        _fail(exc.message)
    console.print(f"{user.email} now holds: {', '.join(user.roles)}")


@user_app.command("list")
def user_list() -> None:
    """Every account: id, e-mail, name, roles."""
    from sqlmodel import select

    from service.db import session_scope
    from service.migrations import upgrade
    from service.models import User

    settings = get_settings()
    _require_database(settings)
    upgrade(settings.resolved_database_url)
    with session_scope() as session:
        for user in session.exec(select(User).order_by(User.id)):
            console.print(f"{user.id:>5}  {user.email:<36} {user.name:<28} {', '.join(user.roles)}")


@user_app.command("password")
def user_password(
    email: str,
    password: Annotated[str | None, typer.Option(help="The new password; prompted for when omitted.")] = None,
) -> None:
    """Set an account's password (and sign it out everywhere)."""
    from service.auth.service import set_password
    from service.db import session_scope
    from service.migrations import upgrade

    if password is None:
        password = typer.prompt("new password", hide_input=True, confirmation_prompt=True)
    upgrade(get_settings().resolved_database_url)
    try:
        with session_scope() as session:
            user = set_password(session, email=email, password=password)
    except DomainError as exc:
        _fail(exc.message)
    console.print(f"password set for {user.email}; its sessions and API tokens were signed out")


@app.command(short_help="Run a fresh demo observatory with accounts and a run.")
def demo(
    host: Annotated[str, typer.Option(help="The address the portal listens on (0.0.0.0: every interface).")
                    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The portal's port; its links and join commands follow it.")] = 8000,
    steps: Annotated[int, typer.Option(help="Training steps of the demo run.")] = 900,
) -> None:
    """A fresh embedded observatory under var/demo/: demo accounts, calls with proposals under review, and one
    proposal awarded and training."""
    from observatory.demo import ACCOUNTS, demo_settings, reset, seed

    settings = demo_settings(get_settings())
    reset(settings)
    proposal_id, run_id = seed(settings, steps)
    url = f"http://{host}:{port}"
    console.print(f"\n[bold]Commons Observatory demo[/bold] at [link={url}]{url}[/link]")
    console.print(f"The awarded proposal: {url}/proposals/{proposal_id}; its run trains {steps} steps.")
    console.print(f"Its data lives in {settings.var_dir} (reset at every `observatory demo`).")
    console.print(f"Four proposals await review: sign in as a reviewer and open {url}/review.")
    for email, _name, role, password, _institution in ACCOUNTS:
        console.print(f"  {role:<10} {email:<34} password: {password}")
    console.print("Ctrl-C stops it.\n")
    _serve(settings, host, port, api=True, scheduler=True, watch=run_id)


@pool_app.command("rotate-token", short_help="Give the embedded pool a new Ray token.")
def pool_rotate_token() -> None:
    """Give the embedded pool a new Ray token, so that machines no longer trusted (revoke them first) cannot
    rejoin with the one they hold: a running `observatory serve` restarts its Ray head with it, runs resume from
    their checkpoints, and approved machines' join commands join again with the new token."""
    from service.files import private_secret_file

    settings = get_settings()
    if settings.ray_auth_token:
        _fail("the pool's token comes from OBSERVATORY_RAY_AUTH_TOKEN here: set a new value there and in the Ray "
              "head's RAY_AUTH_TOKEN, and restart both; joined machines follow")
    if settings.ray_address != "local":
        _fail("this observatory drives a Ray head of its own (OBSERVATORY_RAY_ADDRESS): rotate that head's token "
              "and set OBSERVATORY_RAY_AUTH_TOKEN to it")
    path = settings.ray_dir / "auth_token"
    fresh = path.with_name("auth_token.new")
    fresh.unlink(missing_ok=True)
    private_secret_file(fresh, lambda: secrets.token_hex(32))
    os.replace(fresh, path)
    console.print(f"a new Ray token is in {path}; the running pool switches to it within a scheduler tick, and "
                  "approved machines join again on their next call to the portal")


@pool_app.command("join", short_help="Join this machine to the pool and stay until told to leave.")
def pool_join(
    portal: Annotated[str, typer.Argument(help="The portal's address, e.g. https://observatory.example.")],
    token_file: Annotated[Path | None, typer.Option(help="A file holding the machine's token (else the "
                                                       "OBSERVATORY_MACHINE_TOKEN variable).")] = None,
    node_dir: Annotated[Path, typer.Option(envvar="OBSERVATORY_NODE_DIR", help="Where jobs keep their work and "
                                           "input cache.")] = Path.home() / ".cache" / "commons-observatory",
    node_ip: Annotated[str | None, typer.Option(help="This machine's address on the pool's network (e.g. its "
                                                "WireGuard or Tailscale address); default: Ray's guess.")] = None,
    port_base: Annotated[int | None, typer.Option(help="Open Ray's ports from this one up (PORT+2…PORT+7, "
                                                  "PORT+100…PORT+199), to match a firewall; default: Ray's.")] = None,
    poll_s: Annotated[float, typer.Option(help="Seconds between calls to the portal.", min=1)] = 15.0,
) -> None:
    """Measure this machine, join the pool as the portal allows, and stay until the portal says to leave."""
    from observatory.join import JoinError, Portal, join

    token = (token_file.read_text().strip() if token_file else os.environ.get("OBSERVATORY_MACHINE_TOKEN", ""))
    if not token:
        _fail("no machine token: copy the join command from your machine's page in the portal")
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    temp_dir = short_folder(node_dir / "ray-session", f"observatory-node-{os.getuid()}")
    try:
        status = join(Portal(portal, token), console=console, node_dir=node_dir, temp_dir=temp_dir,
                      node_ip=node_ip, port_base=port_base, poll_s=poll_s)
    except JoinError as exc:
        _fail(str(exc))
    except OSError as exc:  # Ray's command missing or not runnable, a node folder that cannot be written
        _fail(f"could not start this machine's Ray worker: {exc}")
    except KeyboardInterrupt:
        status = 0
    raise typer.Exit(status)


@app.command("download", short_help="Download a data product's files (obs:run/ID, …), resumed and verified.")
def download(
    ref: Annotated[str, typer.Argument(help="obs:run/ID, obs:model/NAME@N or obs:dataset/NAME@N.")],
    portal: Annotated[str, typer.Option(envvar="OBSERVATORY_PORTAL_URL", help="The portal's address, e.g. "
                                        "https://observatory.example.")],
    to: Annotated[Path | None, typer.Option(help="The folder to put the files in (default: one named after the "
                                            "product, here).")] = None,
    limit_rate: Annotated[str | None, typer.Option(help="At most this many bytes per second, e.g. 500k or 2M.")]
    = None,
) -> None:
    """Fetch every file of a data product from the portal: a partial file is continued (HTTP range requests), each
    is checked against the sha256 the portal lists before it takes its name, and a file whose bytes do not match is
    refused. Files still in their exclusive period need an API token of a team member in OBSERVATORY_API_TOKEN."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from observatory.download import DownloadError, Portal, fetch, parse_rate, parse_ref

    try:
        kind, ident = parse_ref(ref)
        rate = parse_rate(limit_rate)
        client = Portal(portal, os.environ.get("OBSERVATORY_API_TOKEN") or None)
        files = client.files(kind, ident)
        folder = to or Path(f"{kind}-{ident.replace('@', '-').replace(':', '-')}")
        folder.mkdir(parents=True, exist_ok=True)
        with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                      console=console) as progress:
            task = progress.add_task(ref, total=sum(f.size for f in files))
            for remote in files:
                fetch(client, remote, folder, limit_rate=rate, say=progress.console.print,
                      advance=lambda n: progress.advance(task, n))
    except DownloadError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot write the files: {exc}")
    console.print(f"{len(files)} files of {ref} in {folder}, every sha256 verified")


@app.command("volunteer", short_help="Lend this machine as a volunteer: pull work units, run them sandboxed.")
def volunteer(
    portal: Annotated[str, typer.Argument(help="The portal's address, e.g. https://observatory.example.")],
    folder: Annotated[Path, typer.Option(envvar="OBSERVATORY_VOLUNTEER_DIR", help="The agent's folder: its "
                                         "credential (0600), input cache and work.")] =
    Path.home() / ".cache" / "commons-observatory" / "volunteer",
    once: Annotated[bool, typer.Option("--once", help="Stop after one unit.")] = False,
    memory_gb: Annotated[float, typer.Option(help="The most memory (GB) a job may use.", min=0.5)] = 16.0,
    no_sandbox: Annotated[bool, typer.Option("--no-sandbox", help="Run jobs as this user, with its network and "
                                             "files in reach (where the sandbox cannot run: no root).")] = False,
) -> None:
    """Ask the portal for work units, run each in a sandbox (the user nobody, a fresh folder, no network, this
    folder and the homes out of sight) and send the results back; they count once another volunteer's agree.
    The credential comes once in OBSERVATORY_MACHINE_TOKEN (from the machine's page) and is kept in the folder."""
    from jobs.sandbox import Sandbox, problem
    from observatory.volunteer import AgentError, Portal, read_credential, serve, store_credential

    fresh = os.environ.pop("OBSERVATORY_MACHINE_TOKEN", "")
    try:
        if fresh:
            console.print(f"credential kept in {store_credential(folder, fresh)} (readable by this user alone)")
        credential = read_credential(folder)
    except AgentError as exc:
        _fail(str(exc))
    except OSError as exc:
        _fail(f"cannot use the agent's folder {folder}: {exc}")
    sandbox = None
    if not no_sandbox:
        why = problem()
        if why:
            _fail(f"{why}; or run with --no-sandbox, knowing that jobs then run as you")
        sandbox = Sandbox(hide=[str(folder)], memory_gb=memory_gb)
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        status = serve(Portal(portal, credential), folder=folder, console=console, sandbox=sandbox, once=once)
    except AgentError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        status = 0
    raise typer.Exit(status)


if __name__ == "__main__":
    app()
