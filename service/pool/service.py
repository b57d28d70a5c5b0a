"""The pool registry: what the scheduler saw of the Ray nodes, for the portal and the API to show."""

from __future__ import annotations

from sqlmodel import Session, select

from service.models import PoolNode
from service.pool.schemas import NodeSeen, PoolSummary
from service.timeutil import utcnow


def record_nodes(session: Session, seen: list[NodeSeen]) -> None:
    """Upsert what Ray reports now; nodes it no longer reports are marked gone."""
    now = utcnow()
    reported = {node.node_id for node in seen}
    for node in seen:
        row = session.get(PoolNode, node.node_id) or PoolNode(node_id=node.node_id, address=node.address)
        row.address, row.is_head, row.alive = node.address, node.is_head, node.alive
        row.resources, row.labels, row.last_seen_at = dict(node.resources), dict(node.labels), now
        session.add(row)
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
