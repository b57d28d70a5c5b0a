"""The pool registry: what the scheduler saw of the Ray nodes, for the portal and the API to show."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlmodel import Session, select

from service.db import lock
from service.errors import Conflict
from service.models import Machine, PoolClaim, PoolNode
from service.pool.schemas import NodeSeen, PoolSummary
from service.pool.standing import MACHINE_LABEL
from service.timeutil import utcnow


def claim_pool(session: Session, *, name: str, head_address: str, head_node_id: str, scheduler_id: str,
               stale_after_s: float) -> PoolClaim:
    """Record that this scheduler drives the pool `name`, which is the Ray cluster whose head is `head_node_id`.

    Refused while another scheduler, fresh within `stale_after_s`, drives a different cluster under the same name
    from another address: two clusters under one name would each think the other's runs lost. Several
    schedulers on one cluster, or a head replaced at the same address (a restart), are fine.
    """
    now = utcnow()
    claim = lock(session, PoolClaim, name)
    if claim is None:
        claim = PoolClaim(name=name, head_address=head_address, head_node_id=head_node_id,
                          scheduler_id=scheduler_id, heartbeat_at=now)
    elif (claim.head_node_id != head_node_id and claim.head_address != head_address
          and claim.scheduler_id != scheduler_id and now - claim.heartbeat_at < timedelta(seconds=stale_after_s)):
        raise Conflict(
            f"the pool {name!r} is driven by another scheduler on the Ray cluster at {claim.head_address}; "
            f"this one talks to {head_address}. Give each cluster its own OBSERVATORY_POOL_NAME")
    claim.head_address, claim.head_node_id, claim.scheduler_id, claim.heartbeat_at = (
        head_address, head_node_id, scheduler_id, now)
    session.add(claim)
    session.flush()
    return claim


def record_nodes(session: Session, seen: list[NodeSeen]) -> None:
    """Upsert what Ray reports now; nodes it no longer reports are marked gone."""
    now = utcnow()
    reported = {node.node_id for node in seen}
    for node in seen:
        row = session.get(PoolNode, node.node_id) or PoolNode(node_id=node.node_id, address=node.address)
        row.address, row.is_head, row.alive = node.address, node.is_head, node.alive
        row.resources, row.labels, row.last_seen_at = dict(node.resources), dict(node.labels), now
        session.add(row)
        machine_id = str(node.labels.get(MACHINE_LABEL, ""))
        if node.alive and machine_id.isdigit():  # the machine's current Ray node, as Ray reports it
            session.execute(update(Machine).where(Machine.id == int(machine_id))
                            .values(ray_node_id=node.node_id).execution_options(synchronize_session=False))
    for row in session.exec(select(PoolNode).where(PoolNode.alive)):
        if row.node_id not in reported:
            row.alive = False
            session.add(row)
    session.flush()


def list_nodes(session: Session) -> list[PoolNode]:
    return list(session.exec(select(PoolNode).order_by(PoolNode.alive.desc(), PoolNode.first_seen_at)))


def summary(session: Session) -> PoolSummary:
    alive = [n for n in list_nodes(session) if n.alive]
    return PoolSummary(
        nodes_alive=len(alive),
        gpus=sum(float(n.resources.get("GPU", 0)) for n in alive),
        cpus=sum(float(n.resources.get("CPU", 0)) for n in alive),
        last_seen_at=max((n.last_seen_at for n in alive), default=None),
    )
