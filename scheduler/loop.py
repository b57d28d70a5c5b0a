"""The scheduler loop: claim queued runs and dispatch them to Ray, reconcile live attempts, charge GPU-seconds.

One tick is: heartbeat the pool claim, dispatch (scheduler.dispatch), reconcile (scheduler.reconcile), and now and
then record the pool's nodes. Several schedulers may drive one Ray cluster at once: claims, conditional
transitions, attempt rows written before submission and watermarked ledger debits make each run start once and
each second be charged once. A scheduler touches only the runs of its own pool (`pool_name`).
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session

from scheduler.dispatch import SUBMITTED, Dispatcher
from scheduler.placement import VramCache
from scheduler.ray_backend import RayBackend
from scheduler.reconcile import Reconciler
from scheduler.volunteers import settle_volunteers
from scheduler.workers import add_workers, settle_stranded
from service.allocations import pacing
from service.allocations.pacing import PacingReport
from service.archive.service import store_for
from service.archive.sweep import SweepReport, sweep
from service.config import Settings
from service.db import writer
from service.errors import Conflict
from service.pool.machines import enforce_owner_limits
from service.pool.schemas import NodeSeen
from service.pool.service import claim_pool, record_nodes

log = logging.getLogger("observatory.scheduler")
__all__ = ["SUBMITTED", "Scheduler", "TickReport"]


@dataclass
class TickReport:
    dispatched: int = 0
    finished: int = 0


class Scheduler:
    def __init__(self, engine: Engine, settings: Settings, backend: RayBackend) -> None:
        self.engine = writer(engine)  # every step reads, then writes: its transactions are serialised on SQLite
        self.settings = settings
        self.store = store_for(settings)
        self.scheduler_id = secrets.token_hex(8)
        self.backend = backend  # replaced when a local head dies and a new one starts (observatory.runtime)
        self.vram = VramCache()  # each run's GPU memory estimate, worked out once
        self._ticks = 0
        self._swept_at = time.monotonic()  # the first sweep waits an interval: a restart is no reason to sweep
        self._paced_at = 0.0  # the first tick paces the awards

    def dispatch(self, ray_nodes: list[dict[str, Any]] | None = None) -> int:
        """Settle what a dead scheduler left mid-dispatch, then place and start queued runs; returns how many
        runs started (adopted ones included)."""
        dispatcher = Dispatcher(self.engine, self.settings, self.backend, self.store, self.vram)
        adopted = 0
        try:
            adopted = dispatcher.recover_stranded()
        except Exception:
            log.exception("settling attempts left by a scheduler that died failed; trying again next tick")
        started = dispatcher.dispatch(ray_nodes)
        try:
            settle_stranded(dispatcher)
            if ray_nodes is not None:
                started += add_workers(dispatcher, ray_nodes)
        except Exception:
            log.exception("adding workers to runs trained in rounds failed; trying again next tick")
        return adopted + started

    def reconcile(self, ray_nodes: list[dict[str, Any]] | None = None) -> int:
        return Reconciler(self.engine, self.settings, self.backend, self.store).reconcile(ray_nodes)

    def claim_pool(self) -> None:
        """Say which Ray cluster this pool is; Conflict when another cluster already drives the same pool name."""
        head = self.backend.head_node_id()
        with Session(self.engine) as session:
            claim_pool(session, name=self.settings.pool_name, head_address=self.backend.dashboard_url,
                       head_node_id=head, scheduler_id=self.scheduler_id,
                       stale_after_s=max(30.0, 5 * self.settings.scheduler_interval_s))
            session.commit()

    def watch_nodes(self, ray_nodes: list[dict[str, Any]] | None = None) -> int:
        """Record the pool as Ray sees it (`ray_nodes`, or asked now); returns the number of nodes alive."""
        seen = [
            NodeSeen(node_id=n["node_id"], address=n.get("node_ip", ""), is_head=bool(n.get("is_head_node")),
                     alive=n.get("state") == "ALIVE", resources=n.get("resources_total") or {},
                     labels=n.get("labels") or {})
            for n in (self.backend.nodes() if ray_nodes is None else ray_nodes)
        ]
        with Session(self.engine) as session:
            record_nodes(session, seen)
            session.commit()
        return sum(node.alive for node in seen)

    def enforce_owner_limits(self) -> int:
        with Session(self.engine) as session:
            acted = enforce_owner_limits(session)
            session.commit()
        return acted

    def pace_awards(self) -> PacingReport:
        """Remind the PIs of awards behind their period's pace, and return what ended awards left unused."""
        with Session(self.engine) as session:
            report = pacing.tick(session)
            session.commit()
        if report.reminded or report.expired:
            log.info("pacing: %d reminders, %d awards ended (%d GPU-seconds back to their cycles)", report.reminded,
                     report.expired, report.returned_s)
        return report

    def sweep_archive(self) -> SweepReport:
        """Delete the archive's objects nothing refers to any more, once they are older than the grace."""
        with Session(self.engine) as session:
            report = sweep(session, self.store, grace_s=self.settings.archive_sweep_grace_s)
        log.info("archive swept: %d objects deleted (%d bytes), %d kept", report.deleted, report.freed_bytes,
                 report.kept)
        return report

    def tick(self) -> TickReport:
        if self._ticks % 5 == 0:
            self.claim_pool()
        try:  # the pool's nodes, asked once for the whole tick
            ray_nodes = self.backend.nodes()
        except Exception:
            log.exception("reading the pool's nodes failed")
            ray_nodes = None
        report = TickReport(dispatched=self.dispatch(ray_nodes), finished=self.reconcile(ray_nodes))
        try:
            report.finished += settle_volunteers(self.engine, self.settings, self.store)
        except Exception:
            log.exception("following volunteers' units failed; trying again next tick")
        self._ticks += 1
        if self._ticks % 5 == 1:
            try:
                self.watch_nodes(ray_nodes)
                self.enforce_owner_limits()
            except Exception:
                log.exception("reading the pool's nodes or applying the owners' limits failed")

        if time.monotonic() - self._paced_at >= self.settings.pacing_interval_s:
            self._paced_at = time.monotonic()
            try:
                self.pace_awards()
            except Exception:
                log.exception("pacing the awards failed; it is tried again after the next interval")
        if time.monotonic() - self._swept_at >= self.settings.archive_sweep_interval_s:
            self._swept_at = time.monotonic()
            try:
                self.sweep_archive()
            except Exception:
                log.exception("sweeping the archive failed; it is tried again after the next interval")
        return report

    def run_forever(self, stop: threading.Event, before_tick: Callable[[], None] | None = None) -> None:
        log.info("scheduler started for pool %r", self.settings.pool_name)
        while not stop.is_set():
            try:
                if before_tick is not None:
                    before_tick()
                self.tick()
            except Conflict as exc:
                log.error("%s", exc.message)
            except Exception:
                log.exception("scheduler tick failed")
            stop.wait(self.settings.scheduler_interval_s)
