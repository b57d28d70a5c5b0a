"""Starting the parts: the pool (a private local Ray, or a remote head's job API) and the scheduler thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from sqlalchemy.engine import Engine

from scheduler.local_ray import RayNode, load_or_make_token, start_head
from scheduler.loop import Scheduler
from scheduler.ray_backend import RayBackend
from service.config import Settings


@dataclass
class Pool:
    backend: RayBackend
    head: RayNode | None = None  # set when we started the Ray head ourselves

    def stop(self) -> None:
        if self.head is not None:
            self.head.stop()


def ray_token(settings: Settings) -> str:
    return settings.ray_auth_token or load_or_make_token(settings.ray_dir / "auth_token")


def open_pool(settings: Settings) -> Pool:
    token = ray_token(settings)
    if settings.ray_address != "local":
        return Pool(RayBackend(settings.ray_address, token))
    head = start_head(base_port=settings.ray_port, dashboard_port=settings.ray_dashboard_port,
                      temp_dir=settings.ray_temp_dir, token=token, num_cpus=settings.ray_num_cpus)
    return Pool(RayBackend(head.dashboard_url, token), head)


@dataclass
class SchedulerThread:
    scheduler: Scheduler
    stop_event: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self.scheduler.run_forever, args=(self.stop_event,),
                                       name="scheduler", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread:
            self.thread.join(timeout=30)


def start_scheduler(engine: Engine, settings: Settings, pool: Pool) -> SchedulerThread:
    thread = SchedulerThread(Scheduler(engine, settings, pool.backend))
    thread.start()
    return thread
