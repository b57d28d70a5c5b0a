"""Which machines the pool can take, in words an owner and an admin can act on: the one place that says where a
joining machine is sent, and what the operator must set for machines elsewhere."""

from __future__ import annotations

from dataclasses import dataclass

from service.config import Settings

ELSEWHERE_HOW = ("For machines elsewhere the operator sets OBSERVATORY_POOL_JOIN_ADDRESS to the Ray head's address "
                 "as they reach it (e.g. 10.8.0.1:6390 on a private overlay network)")


@dataclass(frozen=True)
class PoolReach:
    """Where a joining machine is sent (None: nowhere) and whether that reaches beyond this host."""

    address: str | None
    elsewhere: bool
    note: str


def pool_reach(settings: Settings) -> PoolReach:
    if settings.pool_join_address:
        return PoolReach(settings.pool_join_address, True,
                         f"Machines join the pool's Ray head at {settings.pool_join_address}.")
    if settings.ray_address == "local":
        if settings.ray_accept_workers:
            local = f"127.0.0.1:{settings.ray_port}"
            return PoolReach(local, False, f"Machines are sent to the pool's Ray head at {local}, so only one on "
                                           f"this host can join. {ELSEWHERE_HOW}.")
        return PoolReach(None, False, "This pool takes no owners' machines: its embedded Ray head listens on "
                                      "127.0.0.1 alone. The operator sets OBSERVATORY_RAY_ACCEPT_WORKERS=true for "
                                      f"machines on this host (the head then listens beyond loopback, with its "
                                      f"token; keep it on a private network). {ELSEWHERE_HOW}.")
    return PoolReach(None, False, "This pool takes no owners' machines yet: its Ray cluster is run apart "
                                  f"(OBSERVATORY_RAY_ADDRESS). {ELSEWHERE_HOW}.")
