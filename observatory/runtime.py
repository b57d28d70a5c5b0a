"""Starting the parts: the pool (a private local Ray, or a remote head's job API) and the scheduler thread."""

from __future__ import annotations

import logging
import shutil
import threading
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from scheduler.local_ray import RayNode, start_head
from scheduler.loop import Scheduler
from scheduler.ray_backend import RayBackend
from service.config import Settings

log = logging.getLogger("observatory.scheduler")


@dataclass
class Pool:
    backend: RayBackend
    head: RayNode | None = None  # set when we started the Ray head ourselves
    settings: Settings | None = None

    def stop(self) -> None:
        if self.head is not None:
            self.head.stop()
            # The jobs it ran are stopped: their work folders go (checkpoints live in the archive).
            if self.settings is not None:
                shutil.rmtree(self.settings.head_node_dir / "work", ignore_errors=True)

    def ensure_alive(self) -> RayBackend | None:
        """Notice a local head that died, or a pool token rotated under it (`observatory pool rotate-token`), and
        start a new head; returns the new backend, or None if all is well."""
        if self.head is None:
            return None
        if self.head.process.poll() is None:
            if self.head.token == self.settings.resolved_ray_auth_token():
                return None
            log.warning("the pool's Ray token was rotated; restarting the local Ray head with the new one (runs "
                        "on it resume from their checkpoints, and joined machines join again)")
        else:
            log.error("the local Ray head exited (%s); starting a new one", self.head.process.returncode)
        self.head.stop()
        fresh = open_pool(self.settings)
        self.head, self.backend = fresh.head, fresh.backend
        return self.backend


def open_pool(settings: Settings) -> Pool:
    token = settings.resolved_ray_auth_token()
    if settings.ray_address != "local":
        return Pool(RayBackend(settings.ray_address, token))
    head = start_head(base_port=settings.ray_port, dashboard_port=settings.ray_dashboard_port,
                      temp_dir=settings.ray_temp_dir, token=token, num_cpus=settings.ray_num_cpus,
                      loopback_only=not settings.ray_accept_workers, node_dir=settings.head_node_dir)
    return Pool(RayBackend(head.dashboard_url, token), head, settings)


@dataclass
class SchedulerThread:
    scheduler: Scheduler
    pool: Pool | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.scheduler.run_forever, args=(self.stop_event, self._check_pool),
                                       name="scheduler", daemon=True)
        self.thread.start()

    def _check_pool(self) -> None:
        backend = self.pool.ensure_alive() if self.pool else None
        if backend is not None:
            self.scheduler.backend = backend

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread:
            self.thread.join(timeout=30)


def start_scheduler(engine: Engine, settings: Settings, pool: Pool) -> SchedulerThread:
    """Start the loop; raises Conflict, before any work, if another Ray cluster already drives this pool's name."""
    scheduler = Scheduler(engine, settings, pool.backend)
    scheduler.claim_pool()
    thread = SchedulerThread(scheduler, pool)
    thread.start()
    return thread
