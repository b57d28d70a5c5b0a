"""One Settings object for the whole observatory, read from OBSERVATORY_* variables."""

from __future__ import annotations

import hashlib
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.files import private_secret_file


def _default_var_dir() -> Path:
    return Path("var").resolve()


class Settings(BaseSettings):
    """Embedded defaults: a SQLite file and an archive folder under ./var, and a local Ray."""

    model_config = SettingsConfigDict(env_prefix="OBSERVATORY_", env_file=".env", extra="ignore")

    var_dir: Path = Field(default_factory=_default_var_dir)
    database_url: str | None = None
    archive_dir: Path | None = None
    # Where archived objects live: "local" (archive_dir) or "s3" (an S3-compatible bucket; uploads in flight are
    # spooled under archive_dir). The S3 credentials stay with the observatory: nodes never see them.
    archive_store: Literal["local", "s3"] = "local"
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str | None = None
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_prefix: str = ""
    # Whether jobs fetch their inputs from the bucket itself, through short-lived signed links (the bucket must be
    # reachable from every node); off, the service streams them, for a bucket that only the service can reach.
    s3_signed_links: bool = True
    secret_key: str | None = None
    base_url: str = "http://127.0.0.1:8000"
    # Behind a proxy: the addresses whose X-Forwarded-For/-Proto uvicorn trusts (e.g. "*" on a private network).
    forwarded_allow_ips: str | None = None
    # Secure cookies unless the portal is plain HTTP on loopback (the embedded default); None: decide so.
    secure_cookies: bool | None = None

    # Sign-in: web sessions end after idle or absolute limits, API tokens after their lifetime, and sign-in is
    # throttled per account and per client address.
    session_idle_hours: float = 8
    session_max_hours: int = 7 * 24
    api_token_days: int = 30
    login_max_failures_per_account: int = 5
    login_max_failures_per_address: int = 20
    login_lockout_minutes: int = 15

    # Ray: "local" starts a private single-node cluster under var/ray; anything else is a
    # head node's GCS address (host:port) that the scheduler joins as a client.
    ray_address: str = "local"
    ray_port: int = 6390
    ray_dashboard_port: int = 8275
    ray_auth_token: str | None = None
    ray_num_cpus: int | None = None
    # A local head that takes owners' machines (`observatory pool join`): its ports then listen beyond loopback,
    # so turn it on only on a private network. Off, the embedded pool is this machine alone.
    ray_accept_workers: bool = False
    # The head's address (host:port) that owners' machines join, as they reach it (e.g. over the overlay network).
    # Default: with ray_accept_workers, the local head's on 127.0.0.1, which machines on this host alone can join
    # (service.pool.reach says so on the owners' and admins' pages).
    pool_join_address: str | None = None
    # Whether the Ray head itself takes runs (the embedded default: it is the whole pool).
    run_on_head: bool = True
    # 0 on the embedded default: each run takes CPUs standing in for one GPU.
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    job_python: str | None = None
    # Where jobs reach the observatory to fetch inputs and send checkpoints, logs and outputs (default: base_url).
    job_api_url: str | None = None
    # The commons-observatory release a node must run (default: the observatory's own).
    required_worker_version: str | None = None
    # This scheduler's pool: every run it dispatches records the name, and it touches no other pool's runs. Two
    # schedulers may share a name only when they drive the same Ray cluster.
    pool_name: str = Field("local", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
    # A job ships its resumable checkpoint at most this often (and always when it stops).
    checkpoint_ship_interval_s: float = 60
    # How long a job rides out the observatory being away (its API restarting, its archive down), training on and
    # trying its calls again with backoff; past it the job gives up and its run resumes from its last checkpoint.
    job_patience_s: float = Field(1800, ge=0)
    # Attempts killed on a node that stayed up (exit 137, out of memory) are retried this often per run.
    max_retries: int = 3
    # Ticks in a row that may fail to record a run's end (an archive that refuses writes) before it fails.
    max_finish_failures: int = 5
    # A running attempt is debited in spans of at least this many seconds (sooner when its award is nearly used
    # up); its charge is settled exactly when it ends.
    charge_interval_s: float = 30
    # GPU-seconds charged per second of a run, by GPU class relative to a reference card: the longest key found in
    # a machine's measured GPU model (case aside) applies, e.g. {"RTX 3090": 1.0, "GTX 1080 Ti": 0.5}; "cpu" for
    # machines without a GPU; "default" (else 1.0) for the rest.
    charge_factors: dict[str, float] = Field(default_factory=dict)
    # The largest file a job may send (an output or a checkpoint), and the most log text kept per attempt.
    max_output_bytes: int = 8 << 30
    max_log_bytes: int = 4 << 20
    # The scheduler sweeps the archive this often: objects nothing refers to (an output sent again, a superseded
    # checkpoint) are deleted once they are older than the grace, which must outlast any upload.
    archive_sweep_interval_s: float = 3600
    archive_sweep_grace_s: float = Field(3600, ge=60)
    # The scheduler paces the awards this often: reminders to PIs of awards behind, unused hours returned at the end.
    pacing_interval_s: float = Field(600, ge=1)
    # Retention: a finished run keeps its last `retention_keep_checkpoints` resumable states; older ones go once it
    # has been finished `retention_after_days` (`observatory archive prune`), unless something points to them.
    retention_keep_checkpoints: int = Field(2, ge=1)
    retention_after_days: float = Field(30, ge=0)

    # The API runs its routes in `request_threads` threads, and its database pool holds as many connections
    # (pool size + overflow), so no thread ever waits for a connection that a waiting request holds; more threads
    # than that only contend for the interpreter. The scheduler has a pool of its own.
    request_threads: int = 20
    db_pool_size: int = 10
    db_max_overflow: int = 10
    db_pool_timeout_s: float = 10

    # Requests: bodies are refused past these sizes, and past this many requests in flight the API answers 503
    # at once instead of queueing until every client times out.
    max_body_bytes: int = 1 << 20
    max_form_bytes: int = 256 << 10
    max_requests_in_flight: int = 256

    scheduler_interval_s: float = 2.0
    claim_ttl_s: int = 120
    # A volunteer's agent that sends nothing for this long has lost its unit: another volunteer gets a copy.
    volunteer_quiet_s: float = Field(300, gt=0)

    # E-mail: the outbox is sent through this SMTP server by the API's mail loop; with no host, mail waits in the
    # outbox (admins see it) until one is set.
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    mail_from: str = "Commons Observatory <observatory@localhost>"
    mail_interval_s: float = 15.0
    mail_loop: bool = True  # whether this portal process sends the outbox (any number may: each claims its mail)
    invite_days: int = 14

    # Commons ingest (`observatory dataset ingest`): the MediaWiki API it asks, the contact its User-Agent gives
    # (Wikimedia asks every client for one), and the least time between two requests.
    commons_api_url: str = "https://commons.wikimedia.org/w/api.php"
    commons_contact: str | None = None
    commons_min_interval_s: float = 1.0
    # The hosts Commons' files and thumbnails are fetched from (besides the API's own); a URL in an answer that
    # points anywhere else (the node's own network, say) is refused.
    commons_file_hosts: list[str] = Field(default_factory=lambda: ["upload.wikimedia.org"])

    oidc_name: str = "ORCID"
    oidc_server_metadata_url: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_scope: str = "openid"

    @property
    def cookie_secure(self) -> bool:
        if self.secure_cookies is not None:
            return self.secure_cookies
        host = urlsplit(self.base_url).hostname or ""
        return not (self.base_url.startswith("http://") and host in ("127.0.0.1", "localhost", "::1"))

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'observatory.db'}"

    @property
    def resolved_archive_dir(self) -> Path:
        return self.archive_dir or self.var_dir / "archive"

    @property
    def resolved_job_api_url(self) -> str:
        return (self.job_api_url or self.base_url).rstrip("/")

    @property
    def ray_dir(self) -> Path:
        return self.var_dir / "ray"

    @property
    def ray_temp_dir(self) -> Path:
        """Ray's session files: under var/ when its path is short enough for Ray's sockets (their paths must stay
        under 107 characters), else a short path in the system's temporary folder."""
        return short_folder(self.var_dir / "ray-session", "observatory-ray")

    @property
    def head_node_dir(self) -> Path:
        """Where jobs on the local head keep their work folders and input cache."""
        return self.var_dir / "node"

    def resolved_ray_auth_token(self) -> str:
        """The pool's Ray token: configured, or made once and kept private under var/ray (the embedded pool)."""
        return self.ray_auth_token or private_secret_file(self.ray_dir / "auth_token", lambda: secrets.token_hex(32))

    def charge_factor(self, gpu_model: str | None) -> float:
        """GPU-seconds per second on a machine with this GPU (None: no GPU, or not a registered machine)."""
        factors = {key.lower(): value for key, value in self.charge_factors.items()}
        if gpu_model is None:
            return factors.get("cpu", factors.get("default", 1.0))
        model = gpu_model.lower()
        matches = [key for key in factors if key not in ("cpu", "default") and key in model]
        return factors[max(matches, key=len)] if matches else factors.get("default", 1.0)

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_server_metadata_url and self.oidc_client_id)

    def resolved_secret_key(self) -> str:
        """The session-signing key: configured, or made once and kept under var/."""
        if self.secret_key:
            return self.secret_key
        return private_secret_file(self.var_dir / "secret_key", lambda: secrets.token_urlsafe(48))


# Ray's socket paths (under 107 characters) add about 70 characters to the folder they are kept in.
SHORT_FOLDER_CHARS = 36


def short_folder(preferred: Path, prefix: str) -> Path:
    """`preferred` when its path is short enough for Ray's sockets, else a folder of the system's temporary
    directory named after it (the same one every time)."""
    resolved = preferred.resolve()
    if len(str(resolved)) <= SHORT_FOLDER_CHARS:
        return resolved
    tag = hashlib.sha1(str(resolved.parent).encode()).hexdigest()[:10]
    return Path(tempfile.gettempdir()) / f"{prefix}-{tag}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
