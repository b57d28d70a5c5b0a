"""DiLoCo's arithmetic (Douillard et al. 2023, arXiv 2311.08105): pseudo-gradients, how they travel, and the outer
Nesterov step that turns the workers' averaged pseudo-gradient into the next global weights.

Pure numpy and safetensors, no torch: the observatory (the coordinator) and the workers (jobs) compute with the very
same functions, and what travels is a safetensors file (no pickle) whatever the side.

How a worker's contribution travels (`sync_dtype`):
- `fp32`: the worker's local weights, 4 bytes a parameter; the coordinator forms the pseudo-gradient (global minus
  local) itself in float64, where the difference of two float32 numbers is exact. So with one worker, outer lr 1 and
  no momentum, the next global weights are the worker's own, bit for bit: DiLoCo is plain training.
- `fp16`: the pseudo-gradient in half precision (2 bytes), clipped to fp16's range.
- `int8`: the pseudo-gradient as int8 with one float32 scale per tensor (max |x| / 127), 1 byte a parameter;
  INTELLECT-1's transport. Each value comes back within half its tensor's scale.
The global weights go back to the workers (`sync_down_dtype`) in fp32, or as int8 updates: the change from the
weights the workers hold to the coordinator's exact weights, one scale per tensor. Every worker applies it to the
same weights with the same arithmetic, so all continue from the same, bit-identical global weights (they can check
them against the coordinator's digest); the coordinator keeps its exact weights beside them (its `master`), so what
one round's update could not carry, the next one's does: the error never builds up.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from safetensors.numpy import load, save

SYNC_DTYPES = ("fp32", "fp16", "int8")
DOWN_DTYPES = ("fp32", "int8")
MASTER = "master::"  # the prefix of the coordinator's exact weights in its outer-state file
FORMAT = "observatory-diloco"
SCALE = "::scale"  # the suffix of an int8 tensor's scale
FP16_MAX = float(np.finfo(np.float16).max)
Weights = dict[str, np.ndarray]


class PayloadError(ValueError):
    """A file that is not what it says: wrong format, unknown names, shapes that differ from the global weights'."""


def bytes_per_parameter(dtype: str) -> int:
    return {"fp32": 4, "fp16": 2, "int8": 1}[dtype]


# ---- the files that travel ---------------------------------------------------------------------------------------


def pack_weights(weights: Weights, *, round_number: int, step: int) -> bytes:
    """Global (or initial) weights as a safetensors file, float32, with the round and step they stand at."""
    return save({name: np.ascontiguousarray(value, dtype=np.float32) for name, value in weights.items()},
                metadata={"format": FORMAT, "content": "weights", "round": str(round_number), "step": str(step)})


def unpack_weights(data: bytes) -> tuple[Weights, int, int]:
    """(weights, round, step) of a file `pack_weights` made."""
    tensors, meta = _read(data, "weights")
    return tensors, int(meta.get("round", 0)), int(meta.get("step", 0))


def pack_outer(momentum: Weights, master: Weights | None, *, round_number: int, step: int) -> bytes:
    """The coordinator's outer state: the Nesterov buffer and, when updates travel down in int8, its exact global
    weights (which the workers' copy approximates)."""
    tensors = dict(momentum) | {MASTER + name: value for name, value in (master or {}).items()}
    return pack_weights(tensors, round_number=round_number, step=step)


def unpack_outer(data: bytes) -> tuple[Weights, Weights | None]:
    """(momentum, master or None) of a file `pack_outer` (or, before it, `pack_weights`) made."""
    tensors, _, _ = unpack_weights(data)
    master = {name[len(MASTER):]: value for name, value in tensors.items() if name.startswith(MASTER)}
    momentum = {name: value for name, value in tensors.items() if not name.startswith(MASTER)}
    return momentum, master or None


def pack_update(held: Weights, target: Weights, *, round_number: int, step: int) -> tuple[bytes, Weights]:
    """The change from `held` (the global weights the workers have) to `target` (the coordinator's exact ones) in
    int8, one scale per tensor; returns the file and the weights every worker makes of it (`apply_update`)."""
    tensors: dict[str, np.ndarray] = {}
    for name, value in target.items():
        change = np.asarray(value, dtype=np.float64) - np.asarray(held[name], dtype=np.float64)
        tensors[name], scale = quantise_int8(change)
        tensors[name + SCALE] = np.array([scale], dtype=np.float32)
    result = _apply(held, tensors)
    data = save(tensors, metadata={"format": FORMAT, "content": "update", "round": str(round_number),
                                   "step": str(step), "result": weights_digest(result)})
    return data, result


def weights_digest(weights: Weights) -> str:
    """A digest of the weights themselves (names, shapes, float32 bits), whatever file holds them: safetensors
    files of the same weights may differ in their header's order."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        value = np.ascontiguousarray(weights[name], dtype=np.float32)
        digest.update(f"{name}:{value.shape};".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def apply_update(held: Weights, data: bytes) -> Weights:
    """The new global weights: `held` plus the update `data` carries, as float32 (the same bits on every side);
    PayloadError when the result is not the coordinator's (its digest, which the update carries, differs)."""
    tensors, meta = _read(data, "update")
    result = _apply(held, tensors)
    if weights_digest(result) != meta.get("result"):
        raise PayloadError("the update does not make the coordinator's weights from these (were they the round's?)")
    return result


def _apply(held: Weights, tensors: Weights) -> Weights:
    scaled = _with_scales(tensors, "an update")
    _check_names({name: value for name, (value, _) in scaled.items()}, held)
    return {name: (np.asarray(held[name], dtype=np.float64) + dequantise_int8(value, scale)).astype(np.float32)
            for name, (value, scale) in scaled.items()}


def _with_scales(tensors: Weights, what: str) -> dict[str, tuple[np.ndarray, float]]:
    """Each int8 tensor of a file with its scale (stored as float32, read back as that float32's value)."""
    tensors = dict(tensors)
    scales = {name[: -len(SCALE)]: tensors.pop(name) for name in list(tensors) if name.endswith(SCALE)}
    if set(scales) != set(tensors):
        raise PayloadError(f"{what} needs one scale per tensor")
    return {name: (value, float(np.float32(scales[name].reshape(-1)[0]))) for name, value in tensors.items()}


def encode(global_weights: Weights, local_weights: Weights, dtype: str) -> bytes:
    """A worker's contribution for one round: see the module's docstring for each `dtype`."""
    if dtype not in SYNC_DTYPES:
        raise ValueError(f"sync_dtype must be one of {', '.join(SYNC_DTYPES)}, not {dtype!r}")
    if dtype == "fp32":
        tensors = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in local_weights.items()}
        return save(tensors, metadata={"format": FORMAT, "content": "local-weights", "dtype": dtype})
    tensors: dict[str, np.ndarray] = {}
    for name, value in pseudo_gradient(global_weights, local_weights).items():
        if dtype == "fp16":
            tensors[name] = np.clip(value, -FP16_MAX, FP16_MAX).astype(np.float16)
        else:
            quantised, scale = quantise_int8(value)
            tensors[name], tensors[name + SCALE] = quantised, np.array([scale], dtype=np.float32)
    return save(tensors, metadata={"format": FORMAT, "content": "pseudo-gradient", "dtype": dtype})


def decode(data: bytes, global_weights: Weights) -> np.ndarray | Weights:
    """The pseudo-gradient (float64) a contribution carries, checked against the global weights' names and shapes."""
    tensors, meta = _read(data, None)
    content = meta.get("content")
    if content == "local-weights":
        _check_names(tensors, global_weights)
        return pseudo_gradient(global_weights, tensors)
    if content != "pseudo-gradient" or meta.get("dtype") not in ("fp16", "int8"):
        raise PayloadError("not a pseudo-gradient of this observatory's")
    if meta["dtype"] == "int8":
        tensors = {name: dequantise_int8(value, scale)
                   for name, (value, scale) in _with_scales(tensors, "an int8 pseudo-gradient").items()}
    _check_names(tensors, global_weights)
    return {name: np.asarray(value, dtype=np.float64) for name, value in tensors.items()}


def _read(data: bytes, content: str | None) -> tuple[Weights, dict[str, str]]:
    try:
        tensors = load(data)
        meta = _metadata(data)
    except Exception as exc:  # safetensors raises its own errors for a damaged file
        raise PayloadError(f"not a safetensors file ({exc.__class__.__name__})") from None
    if meta.get("format") != FORMAT or (content is not None and meta.get("content") != content):
        raise PayloadError(f"not {content or 'a contribution'} of this observatory's")
    return tensors, meta


def _metadata(data: bytes) -> dict[str, str]:
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + length])
    return dict(header.get("__metadata__") or {})


def _check_names(tensors: Weights, global_weights: Weights) -> None:
    if set(tensors) != set(global_weights):
        raise PayloadError("its tensors are not the global weights' (names differ)")
    for name, value in tensors.items():
        if value.shape != global_weights[name].shape:
            raise PayloadError(f"tensor {name} has shape {value.shape}, not {global_weights[name].shape}")
        if not np.all(np.isfinite(value)):
            raise PayloadError(f"tensor {name} holds values that are not finite")


# ---- the arithmetic ----------------------------------------------------------------------------------------------


def pseudo_gradient(global_weights: Weights, local_weights: Weights) -> Weights:
    """Global minus local, in float64 (exact for float32 inputs of similar magnitude)."""
    return {name: np.asarray(value, dtype=np.float64) - np.asarray(local_weights[name], dtype=np.float64)
            for name, value in global_weights.items()}


def quantise_int8(value: np.ndarray) -> tuple[np.ndarray, float]:
    """int8 values and the tensor's scale (max |x| / 127; 1 for a tensor of zeros)."""
    peak = float(np.max(np.abs(value))) if value.size else 0.0
    scale = peak / 127.0 if peak > 0 else 1.0
    return np.clip(np.rint(np.asarray(value, dtype=np.float64) / scale), -127, 127).astype(np.int8), scale


def dequantise_int8(quantised: np.ndarray, scale: float) -> np.ndarray:
    return quantised.astype(np.float64) * scale


def average(contributions: Iterable[tuple[Weights, float]]) -> Weights:
    """The mean of pseudo-gradients weighted by the samples each worker trained on (float64)."""
    items = list(contributions)
    total = sum(weight for _, weight in items)
    if not items or total <= 0:
        raise ValueError("nothing to average")
    mean: Weights = {}
    for delta, weight in items:
        share = weight / total
        for name, value in delta.items():
            mean[name] = mean[name] + share * value if name in mean else share * value
    return mean


@dataclass(frozen=True)
class Outer:
    """The outer optimiser: SGD with Nesterov momentum, as DiLoCo (lr 0.7, momentum 0.9)."""

    lr: float = 0.7
    momentum: float = 0.9


def outer_step(weights: Weights, momentum: Weights | None, delta: Weights, outer: Outer) -> tuple[Weights, Weights]:
    """One Nesterov step on the averaged pseudo-gradient `delta`, as torch.optim.SGD(nesterov=True) takes it with
    the pseudo-gradient as the gradient: buffer = momentum * buffer + delta; update = delta + momentum * buffer;
    weights -= lr * update. Computed in float64; returns (float32 weights, float32 buffer)."""
    new_weights, new_momentum = {}, {}
    for name, value in weights.items():
        grad = np.asarray(delta[name], dtype=np.float64)
        previous = np.asarray(momentum[name], dtype=np.float64) if momentum is not None else 0.0
        buffer = outer.momentum * previous + grad
        update = grad + outer.momentum * buffer if outer.momentum else grad
        new_weights[name] = (np.asarray(value, dtype=np.float64) - outer.lr * update).astype(np.float32)
        new_momentum[name] = np.asarray(buffer, dtype=np.float32)
    return new_weights, new_momentum


# ---- a coordinator in one process (tests, the bench) ---------------------------------------------------------------


@dataclass
class RoundRecord:
    number: int
    contributors: list[int]
    samples: int
    bytes_in: int
    loss: float


@dataclass
class LocalCoordinator:
    """The coordinator's rules in one process: a round closes when every expected worker has contributed (the
    observatory's coordinator also closes it at a timeout). Used by tests and the bench; the pool's is
    service.rounds."""

    outer: Outer
    expected: int
    down: str = "fp32"  # how the global weights travel to the workers (DOWN_DTYPES)
    total_steps: int | None = None  # the final round's weights go down whole (exact)
    weights: Weights | None = None  # what the workers hold
    master: Weights | None = None  # the exact global weights, when the workers' copy comes by int8 updates
    momentum: Weights | None = None
    last_update: bytes | None = None  # the update that made `weights` (int8 down)
    round: int = 0
    step: int = 0
    pending: dict[int, tuple[bytes, int, float]] = field(default_factory=dict)
    rounds: list[RoundRecord] = field(default_factory=list)

    def begin(self, initial: Weights) -> None:
        if self.weights is None:
            self.weights = {name: np.asarray(value, dtype=np.float32) for name, value in initial.items()}

    def contribute(self, worker: int, round_number: int, payload: bytes, samples: int, loss: float,
                   steps: int) -> bool:
        """Take a worker's contribution; False when it is late (its round has closed)."""
        if round_number != self.round or self.weights is None:
            return False
        self.pending[worker] = (payload, samples, loss)
        if len(self.pending) >= self.expected:
            self.close(steps)
        return True

    def close(self, steps: int) -> None:
        assert self.weights is not None
        deltas = [(decode(payload, self.weights), samples) for payload, samples, _ in self.pending.values()]
        samples = sum(n for _, n, _ in self.pending.values())
        loss = sum(value * n for _, n, value in self.pending.values()) / max(samples, 1)
        start = self.master if self.master is not None else self.weights
        exact, self.momentum = outer_step(start, self.momentum, average(deltas), self.outer)
        final = self.total_steps is not None and self.step + steps >= self.total_steps
        if self.down == "int8" and not final:
            self.last_update, self.weights = pack_update(self.weights, exact, round_number=self.round + 1,
                                                         step=self.step + steps)
            self.master = exact
        else:
            self.weights, self.master, self.last_update = exact, None, None
        self.rounds.append(RoundRecord(self.round, sorted(self.pending), samples,
                                       sum(len(p) for p, _, _ in self.pending.values()), loss))
        self.pending.clear()
        self.round += 1
        self.step += steps
