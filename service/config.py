"""One Settings object for the whole observatory, read from OBSERVATORY_* variables."""

from __future__ import annotations

import hashlib
import secrets
import tempfile
from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_var_dir() -> Path:
    return Path("var").resolve()


class Settings(BaseSettings):
    """Embedded defaults: a SQLite file and an archive folder under ./var, and a local Ray."""

    model_config = SettingsConfigDict(env_prefix="OBSERVATORY_", env_file=".env", extra="ignore")

    var_dir: Path = Field(default_factory=_default_var_dir)
    database_url: str | None = None
    archive_dir: Path | None = None
    secret_key: str | None = None
    base_url: str = "http://127.0.0.1:8000"  # https://… marks the session cookie Secure

    # Ray: "local" starts a private single-node cluster under var/ray; anything else is a
    # head node's GCS address (host:port) that the scheduler joins as a client.
    ray_address: str = "local"
    ray_port: int = 6390
    ray_dashboard_port: int = 8275
    ray_auth_token: str | None = None
    ray_num_cpus: int | None = None
    # 0 on the embedded default: each run takes CPUs standing in for one GPU.
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    job_python: str | None = None

    scheduler_interval_s: float = 2.0
    claim_ttl_s: int = 120

    oidc_name: str = "ORCID"
    oidc_server_metadata_url: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_scope: str = "openid"

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'observatory.db'}"

    @property
    def resolved_archive_dir(self) -> Path:
        return self.archive_dir or self.var_dir / "archive"

    @property
    def ray_dir(self) -> Path:
        return self.var_dir / "ray"

    @property
    def ray_temp_dir(self) -> Path:
        """Ray's session files: a short path under /tmp (its socket paths must stay under 107 characters)."""
        tag = hashlib.sha1(str(self.var_dir.resolve()).encode()).hexdigest()[:10]
        return Path(tempfile.gettempdir()) / f"observatory-ray-{tag}"

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_server_metadata_url and self.oidc_client_id)

    def resolved_secret_key(self) -> str:
        """The session-signing key: configured, or made once and kept under var/."""
        if self.secret_key:
            return self.secret_key
        path = self.var_dir / "secret_key"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
