"""Dual-anonymous review: nothing a reviewer can reach names the team, and nothing the team can reach names the
reviewers. Every GET route of the API and the portal is asked with every id there is, every action a reviewer
takes is taken (and refused), and every e-mail they are sent is read; each answer is scanned for each team
member's name, e-mail address, institution and ORCID iD."""

from __future__ import annotations

import re
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session, select

from service.models import OutboxMessage, ReviewAssignment, Role, User
from service.review import committee
from tests.factories import (
    PASSWORD,
    add_coi,
    auth_headers,
    award,
    create_call,
    create_proposal,
    create_user,
    post_form,
    start_review,
)

TEAM = [("Zelda Quintessa", "zq.unique@quintessa.example", "Quintessa Institute of Optics", "0000-0002-1825-0097"),
        ("Yorick Vantablack", "yorick@vantablack.example", "Vantablack Laboratory", "0000-0001-5109-3700")]


def _identifying(people: list[User]) -> list[str]:
    strings = []
    for u in people:
        strings += [u.name, *u.name.split(), u.email, u.email.split("@")[0], u.institution, u.orcid]
    return [s for s in strings if s]


def _route_urls(client: TestClient, ids: dict[str, list[Any]]) -> list[tuple[str, str]]:
    """Every GET route of the API (from its OpenAPI document) and of the portal's page routers, with each known id
    in its path parameters."""
    from web import pages, pool_pages, review_pages, team_pages

    paths = [("api", path) for path, item in client.get("/openapi.json").json()["paths"].items() if "get" in item]
    paths += [("page", route.path) for module in (pages, pool_pages, review_pages, team_pages)
              for route in module.router.routes if "GET" in getattr(route, "methods", set())]
    urls = []
    for kind, path in paths:
        combos: list[dict[str, Any]] = [{}]
        for name in re.findall(r"{(\w+)}", path):
            combos = [{**c, name: v} for c in combos for v in ids.get(name, [1])]
        for combo in combos:
            urls.append((kind, re.sub(r"{(\w+)}", lambda m, c=combo: str(c[m.group(1)]), path)))
    return urls


def test_nothing_a_reviewer_can_reach_names_the_team(lite_client: TestClient, lite_session: Session) -> None:
    s = lite_session
    admin = create_user(s, Role.admin)
    pi, coi = (create_user(s, name=n, email=e, institution=i) for n, e, i, _ in TEAM)
    for user, (_, _, _, orcid) in zip((pi, coi), TEAM, strict=True):
        user.orcid = orcid
        s.add(user)
    s.commit()
    reviewer = create_user(s, Role.reviewer, name="Ignatius Marchbanks", email="ignatius@marchbanks.example",
                           institution="Marchbanks College")
    other_reviewer = create_user(s, Role.reviewer, name="Philippa Oyelaran", email="philippa@oyelaran.example",
                                 institution="Oyelaran Centre")
    call = create_call(s, admin, reviewers_per_proposal=2)
    proposal = create_proposal(s, pi, call, title="Memorisation at small scale", abstract="We measure copying.")
    second = create_proposal(s, pi, call, title="A second idea")
    add_coi(s, pi, proposal, coi)
    # An awarded proposal with a run, in another call. (The public list of accepted proposals names the teams of
    # accepted proposals by design, as observatories publish them; this team has none yet.)
    earlier = create_call(s, admin)
    _, run = award(s, admin, create_proposal(s, create_user(s), earlier, title="Earlier work"))
    start_review(s, admin, call)
    mine = {a.proposal_id: a for a in s.exec(select(ReviewAssignment).where(ReviewAssignment.reviewer_id
                                                                            == reviewer.id))}
    assert set(mine) == {proposal.id, second.id}
    secret = _identifying([pi, coi])
    seen: list[tuple[str, str]] = []

    headers = auth_headers(s, reviewer)
    # The reviewer's actions, the refusals they can provoke, and their answers.
    replies = [
        lite_client.get("/api/review/assignments", headers=headers),
        lite_client.get(f"/api/review/assignments/{mine[proposal.id].id}", headers=headers),
        lite_client.post(f"/api/review/assignments/{mine[proposal.id].id}/accept", headers=headers),
        lite_client.post(f"/api/review/assignments/{mine[proposal.id].id}/accept", headers=headers),  # 409
        lite_client.put(f"/api/review/assignments/{mine[proposal.id].id}/review", headers=headers,
                        json={"grade": 9, "expertise": "high", "for_committee": "c", "for_pi": "p"}),  # 422
        lite_client.put(f"/api/review/assignments/{mine[proposal.id].id}/review", headers=headers,
                        json={"grade": 2.5, "expertise": "high", "for_committee": "c", "for_pi": "p"}),
        lite_client.post(f"/api/review/assignments/{mine[second.id].id}/conflict", headers=headers,
                         json={"reason": "I may know who wrote this"}),
        lite_client.post("/api/invites/accept", headers=headers, json={"token": "inv_guess"}),
        lite_client.post(f"/api/proposals/{proposal.id}/invites", headers=headers, json={"email": "a@b.org"}),
        lite_client.post(f"/api/proposals/{proposal.id}/withdraw", headers=headers),
        lite_client.get(f"/api/proposals/{proposal.id}/feedback", headers=headers),
    ]
    assert replies[2].status_code == 200 and replies[5].status_code == 200 and replies[3].status_code == 409
    packet = replies[5].json()
    assert packet["dual_anonymous"] and packet["team"] is None and packet["feasibility"]["gpu_hours"] > 0
    seen += [(r.request.url.path, r.text) for r in replies]

    ids = {"proposal_id": [proposal.id, second.id], "assignment_id": [a.id for a in mine.values()],
           "call_id": [call.id, earlier.id], "run_id": [run.id], "user_id": [pi.id, coi.id],
           "review_id": [1, 2], "cycle_id": [call.cycle_id], "name": ["samples.png"], "token": ["inv_x"],
           "invite_id": [1, 2], "machine_id": [1]}
    urls = _route_urls(lite_client, ids)
    assert len(urls) > 60
    for kind, url in urls:
        response = lite_client.get(url, headers=headers if kind == "api" else None)
        seen.append((url, response.text))
    # The portal's pages, signed in as the reviewer.
    post_form(lite_client, "/login", {"email": reviewer.email, "password": PASSWORD, "next": "/"})
    for kind, url in urls:
        if kind == "page":
            seen.append((url, lite_client.get(url).text))
    assert "Memorisation at small scale" in lite_client.get(f"/review/{mine[proposal.id].id}").text
    # Every e-mail the reviewer was sent.
    s.rollback()
    mail = s.exec(select(OutboxMessage).where(OutboxMessage.to_address == reviewer.email)).all()
    assert mail
    seen += [("mail", f"{m.subject}\n{m.body}") for m in mail]

    leaks = [(where, word) for where, text in seen for word in secret if word in text]
    assert leaks == []

    # The other way round: after the decisions, nothing the team can reach names the reviewers.
    committee.release(s, actor=admin, call_id=call.id)
    s.commit()
    pi_headers = auth_headers(s, pi)
    hidden = _identifying([reviewer, other_reviewer])
    team_seen = [lite_client.get(url, headers=pi_headers).text for kind, url in urls if kind == "api"]
    team_seen += [m.body for m in s.exec(select(OutboxMessage).where(OutboxMessage.to_address == pi.email))]
    feedback = lite_client.get(f"/api/proposals/{proposal.id}/feedback", headers=pi_headers).json()
    assert feedback["released"] and feedback["reviews"] and feedback["reviews"][0]["label"] == "Reviewer 1"
    assert [w for text in team_seen for w in hidden if w in text] == []


def test_a_call_that_is_not_dual_anonymous_shows_names_but_never_addresses(lite_client: TestClient,
                                                                           lite_session: Session) -> None:
    s = lite_session
    admin = create_user(s, Role.admin)
    pi = create_user(s, name=TEAM[0][0], email=TEAM[0][1], institution=TEAM[0][2])
    reviewer = create_user(s, Role.reviewer)
    call = create_call(s, admin, reviewers_per_proposal=1, dual_anonymous=False)
    proposal = create_proposal(s, pi, call)
    start_review(s, admin, call)
    assignment = s.exec(select(ReviewAssignment).where(ReviewAssignment.proposal_id == proposal.id)).one()
    headers = auth_headers(s, reviewer)
    packet = lite_client.post(f"/api/review/assignments/{assignment.id}/accept", headers=headers).json()
    assert packet["team"] == [{"name": TEAM[0][0], "institution": TEAM[0][2], "role": "pi"}]
    assert TEAM[0][1] not in str(packet)
