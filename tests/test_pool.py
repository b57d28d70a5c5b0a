"""The pool registry, on SQLite and PostgreSQL: nodes recorded as seen, gone when no longer reported."""

from __future__ import annotations

from sqlmodel import Session

from service.pool.schemas import NodeSeen
from service.pool.service import list_nodes, record_nodes, summary


def _node(node_id: str, gpus: float = 0, cpus: float = 2, head: bool = False) -> NodeSeen:
    resources = {"CPU": cpus, **({"GPU": gpus} if gpus else {})}
    return NodeSeen(node_id=node_id, address="127.0.0.1", is_head=head, alive=True, resources=resources)


def test_nodes_come_and_go(session: Session) -> None:
    record_nodes(session, [_node("head", head=True, cpus=0), _node("owner-3090", gpus=1, cpus=8)])
    session.commit()
    assert summary(session).model_dump(include={"nodes_alive", "gpus", "cpus"}) == \
        {"nodes_alive": 2, "gpus": 1.0, "cpus": 8.0}
    record_nodes(session, [_node("head", head=True, cpus=0)])
    session.commit()
    rows = {n.node_id: n for n in list_nodes(session)}
    assert not rows["owner-3090"].alive and rows["head"].alive
    assert summary(session).gpus == 0
    record_nodes(session, [_node("head", head=True, cpus=0), _node("owner-3090", gpus=1, cpus=8)])
    session.commit()
    assert summary(session).nodes_alive == 2
