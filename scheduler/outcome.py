"""How an attempt ended, judged from what the job reported and what Ray says: pure, so each case is easy to test.

- `succeeded`: the job reported exit 0 and every output it sent was taken.
- `failed`: the job failed on its own (a non-zero exit, outputs refused, ended without reporting, a node running
  the wrong release): the run fails with the job's own last words.
- `stopped`: it stopped because it was asked to (a cancel, the award used up), or Ray stopped it.
- `lost`: its node vanished (Ray's supervisor died with it, Ray no longer knows the job, or the node is gone), or
  its runner gave up on an observatory that stayed away past its patience (an outage of ours, not the job's).
- `killed`: the job was killed on a node that stayed up (signal 9: out of memory, or the owner stopped it).

Lost and killed attempts are retried from the last shipped checkpoint; the work since that checkpoint is not
charged.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from jobs.kinds import UNREACHABLE_EXIT
from scheduler.ray_backend import JobSnapshot, JobState

# Ray's reasons that mean the job's supervisor, and so its node or its Ray, went away rather than the job failing.
NODE_LOSS_ERRORS = frozenset({"JOB_SUPERVISOR_ACTOR_DIED", "JOB_SUPERVISOR_ACTOR_UNKNOWN_FAILURE",
                              "JOB_SUPERVISOR_ACTOR_START_FAILURE"})
KILLED_EXIT_CODES = frozenset({137, -9})


class Outcome(StrEnum):
    succeeded = "succeeded"
    failed = "failed"
    stopped = "stopped"
    lost = "lost"
    killed = "killed"


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str


def judge(snapshot: JobSnapshot, *, exit_code: int | None, reported: dict[str, Any], node_alive: bool | None,
          log_tail: str) -> Verdict | None:
    """The attempt's outcome, or None while it is still going."""
    if reported.get("refused"):
        return Verdict(Outcome.failed, str(reported["refused"]))
    if snapshot.state == JobState.unknown:
        return Verdict(Outcome.lost, "the pool has no record of the job (its Ray cluster was replaced)")
    if snapshot.state in (JobState.pending, JobState.running):
        if node_alive is False:
            return Verdict(Outcome.lost, f"its node {snapshot.node_id or ''} left the pool".replace("  ", " "))
        return None
    if "stopped" in reported and exit_code is not None:
        return _reported(exit_code, reported, log_tail)
    if snapshot.state == JobState.stopped:
        return Verdict(Outcome.stopped, "stopped by the pool")
    if snapshot.state == JobState.succeeded:
        return Verdict(Outcome.failed, "the job ended without reporting its outputs to the observatory")
    if snapshot.error_type in NODE_LOSS_ERRORS or node_alive is False:
        return Verdict(Outcome.lost, f"its node left the pool ({snapshot.message[:300] or 'no word from Ray'})")
    if snapshot.exit_code in KILLED_EXIT_CODES:
        return Verdict(Outcome.killed, _killed_words(snapshot.exit_code))
    if snapshot.exit_code == UNREACHABLE_EXIT:
        return Verdict(Outcome.lost, "its node could not reach the observatory for longer than the job waits "
                                     "(an outage of the observatory's)")
    return Verdict(Outcome.failed, log_tail or snapshot.message[-1500:] or "the job failed without a word")


def _reported(exit_code: int, reported: dict[str, Any], log_tail: str) -> Verdict:
    problems = [str(p) for p in reported.get("problems") or []]
    if reported.get("stopped"):
        return Verdict(Outcome.stopped, "stopped on request")
    if exit_code in KILLED_EXIT_CODES:
        return Verdict(Outcome.killed, _killed_words(exit_code))
    if exit_code == 0 and not problems:
        return Verdict(Outcome.succeeded, "finished")
    if exit_code == 0:
        return Verdict(Outcome.failed, "its outputs were refused: " + "; ".join(problems))
    return Verdict(Outcome.failed, log_tail or f"the job exited with code {exit_code}")


def _killed_words(code: int | None) -> str:
    return (f"the job was killed (signal 9, exit {code}): the node ran out of memory, or its owner stopped it")
