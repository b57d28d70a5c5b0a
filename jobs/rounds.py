"""One worker of a run that several nodes train together in rounds (DiLoCo): the worker side.

Each worker trains `sync_every` (H) inner steps with its own AdamW on its own shard of the data, starting from the
global weights; it then sends its contribution for the round (jobs.diloco: its weights in fp32, or its
pseudo-gradient in fp16 or int8) and continues from the next global weights the coordinator makes of the
contributions that arrived in time. A worker whose contribution came late (the round closed without it) continues
from the newest global weights; so does a worker that joins mid-run, from the next round. Its inner optimizer state
stays with it; the global weights and the outer optimizer's state are the coordinator's (the observatory keeps them
in its archive every round), so a worker has nothing of its own to resume: a new attempt starts from the global
weights.

When the last round has closed, one worker (the coordinator names it) makes the run's outputs from the final global
weights; the others leave `WORKER_DONE` in their folder and stop, with no outputs.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from jobs import diloco
from jobs.config import TrainConfig
from jobs.kinds import WORKER_DONE
from jobs.train import Stopped, Trainer, TrainResult, build_trainer, report_progress

POLL_S = 10.0  # how long one call waits for the next round (the observatory answers earlier when it closes)


@dataclass
class GlobalState:
    """The coordinator's word: the open round, the global weights it starts from, and whether training is over."""

    round: int
    step: int
    weights: diloco.Weights | None
    finished: bool = False
    finisher: bool = False  # this worker makes the run's outputs


class Exchange(Protocol):
    """How a worker reaches the coordinator: the observatory's job channel on the pool, a LocalCoordinator in
    tests and the bench."""

    def begin(self, initial: diloco.Weights) -> GlobalState: ...

    def contribute(self, round_number: int, payload: bytes, *, samples: int, loss: float, steps: int) -> bool: ...

    def wait(self, after: int) -> GlobalState: ...


def weights_of(unet: Any) -> diloco.Weights:
    return {name: param.detach().to("cpu", torch.float32).numpy().copy() for name, param in unet.named_parameters()}


@torch.no_grad()
def load_weights(unet: Any, weights: diloco.Weights) -> None:
    """Copy the global weights into the model in place: the inner optimizer keeps its state for each parameter."""
    for name, param in unet.named_parameters():
        param.copy_(torch.from_numpy(weights[name]).to(param.device, param.dtype))


@dataclass
class Worker:
    """One worker's training between synchronisations; the loop that calls it decides when to contribute."""

    trainer: Trainer
    base: diloco.Weights | None = None
    contributed: int = 0
    dropped: int = 0
    steps_run: int = 0
    bytes_sent: int = 0
    rounds: list[dict[str, Any]] = field(default_factory=list)

    def adopt(self, state: GlobalState) -> None:
        assert state.weights is not None
        load_weights(self.trainer.unet, state.weights)
        self.trainer.step = state.step
        self.base = state.weights

    def span(self, state: GlobalState) -> int:
        return min(self.trainer.cfg.sync_every, self.trainer.cfg.steps - state.step)

    def contribution(self, steps: int) -> tuple[bytes, int, float]:
        """The payload for the round just trained, the samples it saw and its mean loss."""
        assert self.base is not None
        values = self.trainer.losses.settle()[-steps:]
        payload = diloco.encode(self.base, weights_of(self.trainer.unet), self.trainer.cfg.sync_dtype)
        return payload, steps * self.trainer.images_per_step, float(np.mean(values)) if values else float("nan")


def train_in_rounds(cfg: TrainConfig, exchange: Exchange, trainer: Trainer, *, report: bool = True,
                    stop: Any = lambda: False) -> tuple[Worker, GlobalState]:
    """Train in rounds until the coordinator says training is over; returns the worker and the final state.
    `stop()` true raises Stopped (between steps, or while waiting for a round)."""
    worker = Worker(trainer)
    state = exchange.begin(weights_of(trainer.unet))
    started, first_step, last_report = time.perf_counter(), state.step, 0.0
    while not state.finished:
        worker.adopt(state)
        steps = worker.span(state)
        for _ in range(steps):
            if stop():
                raise Stopped
            trainer.step_once()
            if report and time.perf_counter() - last_report > 2:
                report_progress(trainer, started, first_step, round=state.round)
                last_report = time.perf_counter()
        worker.steps_run += steps
        payload, samples, loss = worker.contribution(steps)
        accepted = exchange.contribute(state.round, payload, samples=samples, loss=loss, steps=steps)
        worker.bytes_sent += len(payload)
        worker.contributed += accepted
        worker.dropped += not accepted
        worker.rounds.append({"round": state.round, "accepted": accepted, "bytes": len(payload), "loss": loss})
        print(f"round {state.round}: sent {len(payload)} bytes ({cfg.sync_dtype}), loss {loss:.4f}; "
              + ("taken" if accepted else "too late: the round closed without it; continuing from the newest "
                                           "global weights"), flush=True)
        while True:
            if stop():
                raise Stopped
            following = exchange.wait(state.round)
            if following.finished or following.round > state.round:
                state = following
                break
    if state.weights is not None:
        worker.adopt(state)
    return worker, state


class LocalExchange:
    """A worker's exchange with a LocalCoordinator in the same process (one worker; tests)."""

    def __init__(self, coordinator: diloco.LocalCoordinator, steps: int, worker: int = 0) -> None:
        self.coordinator, self.steps, self.worker = coordinator, steps, worker

    def _state(self) -> GlobalState:
        done = self.coordinator.step >= self.steps
        return GlobalState(self.coordinator.round, self.coordinator.step, self.coordinator.weights, done, done)

    def begin(self, initial: diloco.Weights) -> GlobalState:
        self.coordinator.begin(initial)
        return self._state()

    def contribute(self, round_number: int, payload: bytes, *, samples: int, loss: float, steps: int) -> bool:
        return self.coordinator.contribute(self.worker, round_number, payload, samples, loss, steps)

    def wait(self, after: int) -> GlobalState:
        return self._state()


# ---- on the pool: the observatory's job channel ------------------------------------------------------------------


class ChannelExchange:
    """The exchange over the attempt's job channel (jobs.runner.Channel: its token, its machine's credential, its
    patience through an outage of the observatory)."""

    def __init__(self, channel: Any, cache: Path) -> None:
        self.channel, self.cache = channel, cache
        self.bytes_received = 0
        self.hello = self.view()

    def view(self, after: int | None = None, wait_s: float = 0) -> dict[str, Any]:
        params: dict[str, Any] = {"wait_s": wait_s}
        if after is not None:
            params["after"] = after
        return self.channel.call("GET", "/api/job/rounds", params=params).json()

    def _weights(self, view: dict[str, Any]) -> diloco.Weights | None:
        sha = view.get("global_sha256")
        if not sha:
            return None
        path = self.cache / f"global-{sha}"
        if not path.is_file():
            made = self._from_update(view)
            if made is None:
                made = self.channel.call("GET", f"/api/job/inputs/{sha}").content
                self.bytes_received += len(made)
            tmp = path.with_suffix(".part")
            tmp.write_bytes(made)
            tmp.replace(path)
        weights, _, _ = diloco.unpack_weights(path.read_bytes())
        return weights

    def _from_update(self, view: dict[str, Any]) -> bytes | None:
        """The new global weights made here from the int8 update and the weights this worker holds, when it holds
        them and the result is exactly the coordinator's (the digest the update carries); None to fetch them
        whole."""
        update, held = view.get("update_sha256"), view.get("update_from_sha256")
        if not update or not held or not (self.cache / f"global-{held}").is_file():
            return None
        data = self.channel.call("GET", f"/api/job/inputs/{update}").content
        self.bytes_received += len(data)
        previous, _, _ = diloco.unpack_weights((self.cache / f"global-{held}").read_bytes())
        try:
            made = diloco.apply_update(previous, data)
        except diloco.PayloadError as exc:
            print(f"round {view['round']}: {exc}; fetching the global weights whole", flush=True)
            return None
        return diloco.pack_weights(made, round_number=int(view["round"]), step=int(view["step"]))

    def _state(self, view: dict[str, Any]) -> GlobalState:
        from jobs.runner import ChannelError, Unreachable

        for _ in range(3):  # weights that went out of date (and were swept) while asked for: ask again
            try:
                return GlobalState(int(view["round"]), int(view["step"]), self._weights(view),
                                   bool(view["finished"]), bool(view.get("finisher")))
            except Unreachable:
                raise
            except ChannelError as exc:
                print(f"the global weights of round {view['round']} could not be fetched ({exc}); asking again",
                      flush=True)
                view = self.view()
        return GlobalState(int(view["round"]), int(view["step"]), self._weights(view), bool(view["finished"]),
                           bool(view.get("finisher")))

    def begin(self, initial: diloco.Weights) -> GlobalState:
        view = self.hello
        if not view.get("global_sha256"):
            from jobs.runner import ChannelError, Unreachable

            body = diloco.pack_weights(initial, round_number=0, step=0)
            try:
                self.channel.call("PUT", "/api/job/rounds/base", content=body,
                                  headers={"X-Content-SHA256": _sha256(body)})
            except Unreachable:
                raise
            except ChannelError as exc:  # another worker set them first: theirs are the run's
                print(f"the initial weights came from another worker ({exc})", flush=True)
            view = self.view()
        return self._state(view)

    def contribute(self, round_number: int, payload: bytes, *, samples: int, loss: float, steps: int) -> bool:
        answer = self.channel.call("PUT", f"/api/job/rounds/{round_number}", content=payload,
                                   params={"samples": samples, "loss": loss if np.isfinite(loss) else None,
                                           "steps": steps},
                                   headers={"X-Content-SHA256": _sha256(payload)}).json()
        if not answer.get("accepted"):
            print(f"round {round_number}: {answer.get('reason', 'not taken')}", flush=True)
        return bool(answer.get("accepted"))

    def wait(self, after: int) -> GlobalState:
        return self._state(self.view(after=after, wait_s=POLL_S))


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def channel_from_environment() -> Any:
    """The job channel the runner hands a job that trains in rounds (its URL, token and machine credential)."""
    from jobs.runner import PATIENCE_S, Channel

    url, token = os.environ.get("OBSERVATORY_JOB_URL"), os.environ.get("OBSERVATORY_JOB_TOKEN")
    if not url or not token:
        raise SystemExit("a run trained by several nodes needs the job channel (OBSERVATORY_JOB_URL and "
                         "OBSERVATORY_JOB_TOKEN, which jobs.runner sets)")
    return Channel(url, token, patience_s=float(os.environ.get("OBSERVATORY_JOB_PATIENCE_S") or PATIENCE_S),
                   machine_token=os.environ.get("OBSERVATORY_MACHINE_TOKEN") or None)


def run_worker(cfg: TrainConfig, output: Path, inputs: dict[str, Path], device: torch.device,
               exchange: ChannelExchange, stop: Any) -> TrainResult | None:
    """The job of one worker on the pool: train in rounds, then make the outputs if the coordinator says so."""
    from jobs.train import load_data, with_weights, write_outputs

    worker_index, workers = int(exchange.hello["worker"]), int(exchange.hello["workers"])
    print(f"worker {worker_index} of {workers}: training in rounds of {cfg.sync_every} steps, "
          f"pseudo-gradients in {cfg.sync_dtype}, global weights down in {cfg.sync_down_dtype}", flush=True)
    trainer = build_trainer(cfg, device, inputs, worker=worker_index, workers=workers)
    started = time.perf_counter()
    worker, state = train_in_rounds(cfg, exchange, trainer, stop=stop)
    elapsed = time.perf_counter() - started
    summary = {"worker": worker_index, "rounds_contributed": worker.contributed, "rounds_dropped": worker.dropped,
               "bytes_sent": worker.bytes_sent, "bytes_received": exchange.bytes_received}
    if not state.finisher:
        (output / WORKER_DONE).write_text(json.dumps(summary))
        print(f"training is over ({state.round} rounds); another worker makes the outputs", flush=True)
        return None
    values = trainer.losses.settle()
    result = TrainResult(worker.steps_run, values[-1] if values else float("nan"),
                         elapsed / max(worker.steps_run, 1))
    # The outputs speak for the whole run: every image the workers learned from, not this worker's shard alone.
    final = {name: torch.from_numpy(value) for name, value in (state.weights or {}).items()}
    write_outputs(cfg, output, with_weights(trainer.unet, final), trainer.noise_scheduler,
                  load_data(cfg, inputs), values, result, device,
                  weights=f"global weights after round {state.round - 1} (DiLoCo)",
                  extra_metrics={"rounds": {**summary, "workers": workers, "sync_every": cfg.sync_every,
                                            "sync_dtype": cfg.sync_dtype,
                                            "sync_down_dtype": cfg.sync_down_dtype, "outer_lr": cfg.outer_lr,
                                            "outer_momentum": cfg.outer_momentum}})
    print(f"done: {cfg.steps} steps in {state.round} rounds", flush=True)
    return result
