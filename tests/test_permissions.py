"""Every endpoint checks who is asking: each is refused to the wrong people, shown here one by one.

The last test walks the app's routes, so a new endpoint cannot land without an entry here.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sqlmodel import Session, select

from jobs.version import installed_version
from scheduler.loop import Scheduler
from service.models import ChangeRequest, ReviewAssignment, Role, Run, RunGroup, RunState
from service.pool import machines
from service.proposals import outcomes, team
from service.review import assignments, committee, reviews
from service.review.reviews import ReviewCreate
from tests.factories import (
    add_coi,
    archive_outputs,
    auth_headers,
    award,
    close_call,
    create_call,
    create_machine,
    create_proposal,
    create_user,
    start_review,
    under_review,
)
from tests.pools import TRAIN_FILES, ScriptedPool

PUBLIC = {
    ("GET", "/api/calls"), ("GET", "/api/calls/{call_id}"), ("GET", "/api/job-plans/schema"),
    ("GET", "/api/cycles"), ("GET", "/api/cycles/{cycle_id}"), ("GET", "/api/accepted"),
    ("GET", "/api/datasets"), ("GET", "/api/datasets/{ref}"), ("GET", "/api/datasets/{ref}/files/{name}"),
    ("GET", "/api/models"), ("GET", "/api/models/{name}/{version}"), ("GET", "/api/analyses/replication"),
    ("POST", "/api/job-plans/estimate"), ("GET", "/api/datasets/{ref}/partitions"),
    ("POST", "/api/auth/signup"), ("POST", "/api/auth/login"), ("POST", "/api/auth/verify"), ("GET", "/api/pool"),
    ("GET", "/api/archive/runs/{run_id}"), ("GET", "/api/proposals/{proposal_id}/outcomes"),
    ("GET", "/api/archive"), ("GET", "/api/models/{name}/{version}/README.md"),
    ("GET", "/api/models/{name}/{version}/attribution.json"), ("GET", "/api/cycles/{cycle_id}/summary"),
}


def _pairs_png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (2 * 16 + 4, 16), "gray").save(out, format="PNG")
    return out.getvalue()


# A replication search's outputs, as small as they come: one shown pair, of sample 7.
ANALYSIS_FILES = {
    "results.json": json.dumps({"shown": [0], "pair_picture": {"side": 4, "scale": 4, "gap": 4}, "samples": [
        {"seed": 7, "copy": False, "ratio": 0.9, "tiled_l2": [{"index": 0, "title": "t", "image_sha256": "a" * 64,
                                                               "distance": 1.0}]}]}).encode(),
    "report.html": b"<!doctype html><title>r</title>", "pairs.png": _pairs_png()}


@dataclass(frozen=True)
class Case:
    method: str
    route: str
    refused: dict[str, int]  # who -> expected status
    allowed: str  # one who may, to prove the endpoint works at all
    body: dict | None = None


CASES = [
    Case("GET", "/api/me", {"anonymous": 401, "attempt": 401}, "other"),
    Case("POST", "/api/auth/logout", {"anonymous": 401}, "other"),
    Case("POST", "/api/users", {"anonymous": 401, "other": 403, "reviewer": 403}, "admin",
         {"email": "new@example.org", "name": "New", "roles": ["reviewer"], "password": "amber kettle orbit"}),
    Case("POST", "/api/calls", {"anonymous": 401, "other": 403, "reviewer": 403}, "admin",
         {"title": "C", "opens_at": "2026-01-01T00:00:00Z", "closes_at": "2036-01-01T00:00:00Z",
          "capacity_gpu_hours": 5}),
    Case("POST", "/api/calls/{call_id}/proposals", {"anonymous": 401, "admin": 403, "reviewer": 403}, "other",
         {"title": "t", "abstract": "a", "justification": "j", "requested_gpu_hours": 1,
          "job_plan": {"kind": "train"}, "submit": True}),
    Case("GET", "/api/proposals", {"anonymous": 401}, "other"),
    Case("POST", "/api/me/roles", {"anonymous": 401, "attempt": 401, "machine": 401}, "other", {"role": "owner"}),
    Case("GET", "/api/machines", {"anonymous": 401, "attempt": 401, "machine": 401}, "owner"),
    Case("POST", "/api/machines", {"anonymous": 401, "other": 403, "reviewer": 403, "machine": 401}, "owner",
         {"name": "spare box"}),
    Case("GET", "/api/machines/{machine_id}", {"anonymous": 401, "other": 404, "reviewer": 404, "machine": 401},
         "owner"),
    Case("PATCH", "/api/machines/{machine_id}", {"anonymous": 401, "other": 404, "admin": 403, "machine": 401},
         "owner", {"paused": True}),
    Case("POST", "/api/machines/{pending_machine_id}/decision", {"anonymous": 401, "other": 403, "owner": 403,
                                                                "machine": 401}, "admin", {"decision": "approve"}),
    Case("POST", "/api/machines/{machine_id}/leave", {"anonymous": 401, "other": 404, "admin": 403, "machine": 401},
         "owner"),
    Case("POST", "/api/machines/{machine_id}/join-token", {"anonymous": 401, "other": 404, "admin": 403,
                                                           "machine": 401}, "owner"),
    # A machine's calls take its own token and no person's.
    Case("POST", "/api/pool/join", {"anonymous": 401, "owner": 401, "admin": 401, "attempt": 401,
                                    "volunteer": 403}, "machine",  # a volunteer's never gets the Ray token
         {"release": "0.2.0", "cpus": 2}),
    Case("POST", "/api/pool/orders", {"anonymous": 401, "owner": 401, "admin": 401, "attempt": 401}, "machine",
         {}),
    # A volunteer's agent: its own credential, and only a volunteer's machine's (a Ray machine's is refused).
    Case("POST", "/api/agent/hello", {"anonymous": 401, "owner": 401, "admin": 401, "attempt": 401, "machine": 403},
         "volunteer", {"release": "0.2.0", "cpus": 2}),
    Case("POST", "/api/agent/work", {"anonymous": 401, "owner": 401, "admin": 401, "attempt": 401, "machine": 403},
         "volunteer", {}),
    Case("GET", "/api/volunteers", {}, "anonymous"),
    Case("GET", "/api/archive/runs/{model_run_id}", {}, "anonymous"),
    Case("GET", "/api/archive", {}, "anonymous"),
    Case("GET", "/api/awards", {"anonymous": 401, "other": 403, "pi": 403, "reviewer": 403, "machine": 401},
         "admin"),
    Case("GET", "/api/awards/{award_id}", {"anonymous": 401, "other": 404, "reviewer": 404, "machine": 401}, "pi"),
    Case("POST", "/api/awards/{award_id}/runs", {"anonymous": 401, "other": 404, "reviewer": 404, "machine": 401},
         "pi", {"job_plan": {"kind": "train", "steps": 2, "batch_size": 8, "block_out_channels": [8, 16],
                             "resolution": 8}}),
    Case("GET", "/api/change-requests", {"anonymous": 401, "machine": 401}, "other"),
    Case("POST", "/api/change-requests/{change_id}/decision", {"anonymous": 401, "other": 403, "pi": 403,
                                                               "reviewer": 403, "machine": 401}, "admin",
         {"approve": False, "note": "not now"}),
    Case("GET", "/api/sweeps/{sweep_id}", {"anonymous": 401, "other": 404, "reviewer": 404, "machine": 401}, "pi"),
    Case("GET", "/api/calls/{closed_call_id}/bidding", {"anonymous": 401, "other": 403, "machine": 401}, "reviewer"),
    Case("PUT", "/api/review/bids/{closed_proposal_id}", {"anonymous": 401, "other": 403, "machine": 401},
         "reviewer", {"bid": "willing"}),
    Case("GET", "/api/calls/{closed_call_id}/matching", {"anonymous": 401, "other": 403, "pi": 403, "reviewer": 403,
                                                         "machine": 401}, "admin"),
    Case("PUT", "/api/calls/{closed_call_id}/matching/choices", {"anonymous": 401, "other": 403, "pi": 403,
                                                                 "reviewer": 403, "machine": 401}, "admin",
         {"proposal_id": "{closed_proposal_id}", "reviewer_id": "{reviewer_user_id}", "choice": "avoid"}),
    Case("PUT", "/api/calls/{call_id}/storage-quota", {"anonymous": 401, "other": 403, "pi": 403, "reviewer": 403,
                                                       "machine": 401}, "admin", {"storage_quota_gb": 5}),
    Case("PUT", "/api/archive/doi", {"anonymous": 401, "other": 403, "pi": 403, "reviewer": 403, "machine": 401},
         "admin", {"ref": "obs:dataset/skimage-samples@1", "doi": "10.5281/zenodo.2"}),
    Case("GET", "/api/proposals/{proposal_id}/outcomes", {}, "anonymous"),
    Case("POST", "/api/proposals/{proposal_id}/outcomes", {"anonymous": 401, "other": 404, "reviewer": 404,
                                                           "admin": 404, "machine": 401}, "pi",
         {"kind": "paper", "title": "T", "doi": "10.1234/t"}),
    Case("DELETE", "/api/outcomes/{outcome_id}", {"anonymous": 401, "other": 404, "reviewer": 404, "machine": 401},
         "pi"),
    Case("PUT", "/api/archive/runs/{model_run_id}/doi", {"anonymous": 401, "other": 403, "pi": 403, "reviewer": 403,
                                                         "machine": 401}, "admin", {"doi": "10.5281/zenodo.1"}),
    Case("POST", "/api/proposals/{draft_id}/donor-claim", {"anonymous": 401, "other": 404, "admin": 404, "coi": 404,
                                                           "machine": 401}, "pi", {"claimed": False}),
    Case("POST", "/api/calls/{donor_call_id}/donor-shares", {"anonymous": 401, "other": 403, "reviewer": 403,
                                                             "pi": 403, "machine": 401}, "admin"),
    Case("DELETE", "/api/machines/{machine_id}/join-token", {"anonymous": 401, "other": 404, "admin": 403,
                                                             "machine": 401, "volunteer": 401}, "owner"),
    Case("GET", "/api/pool/nodes", {"anonymous": 401, "other": 403, "reviewer": 403, "pi": 403}, "admin"),
    Case("GET", "/api/proposals/{proposal_id}", {"anonymous": 401, "other": 404, "reviewer": 404}, "admin"),
    Case("GET", "/api/proposals/{draft_id}", {"anonymous": 401, "other": 404, "admin": 404}, "pi"),
    Case("PATCH", "/api/proposals/{proposal_id}", {"anonymous": 401, "other": 404, "admin": 403}, "",
         {"title": "x"}),
    Case("PATCH", "/api/proposals/{draft_id}", {"anonymous": 401, "other": 404, "admin": 404, "coi": 403}, "pi",
         {"title": "x"}),
    Case("DELETE", "/api/proposals/{draft_id}", {"anonymous": 401, "other": 404, "admin": 404, "coi": 403}, "pi"),
    Case("DELETE", "/api/proposals/{proposal_id}", {"anonymous": 401, "other": 404, "pi": 409}, ""),
    Case("POST", "/api/proposals/{draft_id}/submit", {"anonymous": 401, "other": 404, "admin": 404, "coi": 403},
         "pi"),
    Case("POST", "/api/proposals/{proposal_id}/invites", {"anonymous": 401, "other": 404, "reviewer": 404,
                                                          "admin": 403, "coi": 403}, "pi", {"email": "{spare_email}"}),
    Case("GET", "/api/proposals/{proposal_id}/invites", {"anonymous": 401, "other": 404, "admin": 403, "coi": 403},
         "pi"),
    Case("DELETE", "/api/proposals/{proposal_id}/invites/{invite_id}", {"anonymous": 401, "other": 404, "admin": 403,
                                                                        "coi": 403}, "pi"),
    Case("POST", "/api/invites/accept", {"anonymous": 401, "machine": 401, "reviewer": 403}, "other",
         {"token": "{invite_token}"}),
    Case("DELETE", "/api/proposals/{proposal_id}/members/{coi_id}", {"anonymous": 401, "other": 404, "admin": 403,
                                                                     "reviewer": 404}, "pi"),
    Case("POST", "/api/proposals/{proposal_id}/pi", {"anonymous": 401, "other": 404, "admin": 403, "coi": 403}, "pi",
         {"user_id": "{coi_id}"}),
    Case("POST", "/api/proposals/{draft_id}/withdraw", {"anonymous": 401, "other": 404, "admin": 404, "coi": 403},
         "pi", {}),
    Case("POST", "/api/proposals/{submitted_id}/award", {"anonymous": 401, "pi": 403, "other": 403,
                                                         "reviewer": 403}, "admin", {"gpu_hours": 0.5}),
    Case("POST", "/api/proposals/{submitted_id}/decline", {"anonymous": 401, "pi": 403, "other": 403,
                                                           "reviewer": 403}, "admin", {"reason": "r"}),
    Case("GET", "/api/proposals/{proposal_id}/feedback", {"anonymous": 401, "other": 404, "reviewer": 404}, "coi"),
    Case("PUT", "/api/proposals/{released_id}/reviews/{review_id}/rating", {"anonymous": 401, "other": 404,
                                                                            "reviewer": 404}, "pi",
         {"helpfulness": 4}),
    Case("PATCH", "/api/me", {"anonymous": 401, "attempt": 401, "machine": 401}, "other", {"institution": "Lyon"}),
    Case("PUT", "/api/users/{spare_id}/roles", {"anonymous": 401, "other": 403, "reviewer": 403, "pi": 403}, "admin",
         {"roles": ["researcher", "reviewer"]}),
    Case("POST", "/api/cycles", {"anonymous": 401, "other": 403, "reviewer": 403}, "admin",
         {"name": "C2", "capacity_gpu_hours": 100, "director_reserve_gpu_hours": 10}),
    Case("POST", "/api/calls/{closed_call_id}/review", {"anonymous": 401, "other": 403, "reviewer": 403, "pi": 403},
         "admin"),
    Case("GET", "/api/calls/{reviewed_call_id}/ranking", {"anonymous": 401, "other": 403, "reviewer": 403,
                                                          "pi": 403}, "admin"),
    Case("POST", "/api/calls/{reviewed_call_id}/release", {"anonymous": 401, "other": 403, "reviewer": 403,
                                                           "pi": 403}, "admin"),
    Case("GET", "/api/review/assignments", {"anonymous": 401, "machine": 401, "other": 403, "admin": 403}, "reviewer"),
    Case("GET", "/api/review/assignments/{assignment_id}", {"anonymous": 401, "other": 404, "admin": 404, "pi": 404},
         "reviewer"),
    Case("POST", "/api/review/assignments/{assignment_id}/accept", {"anonymous": 401, "other": 404, "admin": 404,
                                                                    "pi": 404}, "reviewer"),
    Case("POST", "/api/review/assignments/{assignment_id}/conflict", {"anonymous": 401, "other": 404, "admin": 404,
                                                                      "pi": 404}, "reviewer", {"reason": "my student"}),
    Case("PUT", "/api/review/assignments/{accepted_assignment_id}/review", {"anonymous": 401, "other": 404,
                                                                            "admin": 404, "pi": 404}, "reviewer",
         {"grade": 2.0, "expertise": "high", "for_committee": "c", "for_pi": "p"}),
    Case("GET", "/api/review/reviewers", {"anonymous": 401, "other": 403, "reviewer": 403, "pi": 403}, "admin"),
    Case("POST", "/api/models", {"anonymous": 401, "pi": 403, "reviewer": 403, "machine": 401}, "admin",
         {"run_id": "{model_run_id}", "name": "commons-model"}),
    Case("GET", "/api/audit", {"anonymous": 401, "other": 403, "reviewer": 403, "pi": 403, "machine": 401}, "admin"),
    Case("GET", "/api/proposals/{proposal_id}/runs", {"anonymous": 401, "other": 404, "reviewer": 404}, "coi"),
    Case("GET", "/api/runs", {"anonymous": 401, "attempt": 401, "machine": 401}, "coi"),
    Case("GET", "/api/runs/{run_id}", {"anonymous": 401, "other": 404, "reviewer": 404, "attempt": 401}, "coi"),
    Case("GET", "/api/runs/{run_id}/log", {"anonymous": 401, "other": 404, "reviewer": 404, "attempt": 401}, "coi"),
    Case("GET", "/api/runs/{run_id}/ledger", {"anonymous": 401, "other": 404, "reviewer": 404, "attempt": 401},
         "coi"),
    Case("POST", "/api/runs/{run_id}/cancel", {"anonymous": 401, "other": 404, "reviewer": 404, "coi": 403}, "pi"),
    Case("GET", "/api/runs/{run_id}/artifacts", {"anonymous": 404, "other": 404, "reviewer": 404, "admin": 404},
         "coi"),
    Case("GET", "/api/runs/{run_id}/artifacts/{name}", {"anonymous": 404, "other": 404, "reviewer": 404,
                                                         "admin": 404}, "coi"),
    Case("GET", "/api/runs/{analysis_id}/pairs", {"anonymous": 401, "other": 404, "reviewer": 404, "attempt": 401},
         "pi"),
    Case("PUT", "/api/runs/{analysis_id}/pairs/{seed}", {"anonymous": 401, "other": 404, "reviewer": 404,
                                                         "machine": 401}, "pi", {"verdict": "copy"}),
    Case("GET", "/api/runs/{analysis_id}/pairs/{row}.png", {"anonymous": 404, "other": 404, "reviewer": 404},
         "admin"),  # those who may mark the pairs see them (admins, the team, the proposal's reviewers)
    Case("POST", "/api/runs/{model_run_id}/analyses", {"anonymous": 401, "other": 404, "reviewer": 404,
                                                       "admin": 403, "machine": 401, "attempt": 401}, "pi",
         {"job_plan": {"kind": "quality", "samples": 8}}),
    # The job channel takes a live attempt's token and no person's.
    Case("POST", "/api/job/start", {"anonymous": 401, "admin": 401, "pi": 401}, "attempt",
         {"node_name": "owner-box", "worker_version": installed_version()}),
    Case("POST", "/api/job/log", {"anonymous": 401, "admin": 401, "pi": 401}, "attempt",
         {"offset": 0, "text": "hello"}),
    Case("POST", "/api/job/end", {"anonymous": 401, "admin": 401, "pi": 401}, "attempt", {"exit_code": 0}),
    Case("PUT", "/api/job/checkpoint", {"anonymous": 401, "admin": 401, "pi": 401}, ""),
    Case("PUT", "/api/job/outputs/{name}", {"anonymous": 401, "admin": 401, "pi": 401}, ""),
    Case("GET", "/api/job/inputs/{sha256}", {"anonymous": 401, "admin": 401, "pi": 401, "attempt": 404}, ""),
    # The rounds of a run trained by several nodes: its workers' attempts alone (this attempt's run has none).
    Case("GET", "/api/job/rounds", {"anonymous": 401, "admin": 401, "pi": 401, "machine": 401, "attempt": 409}, ""),
    Case("PUT", "/api/job/rounds/base", {"anonymous": 401, "admin": 401, "pi": 401, "machine": 401}, ""),
    Case("PUT", "/api/job/rounds/{number}", {"anonymous": 401, "admin": 401, "pi": 401, "machine": 401}, ""),
    # A machine's credential claims the token of an attempt placed on that machine, and nobody else's claims any.
    Case("POST", "/api/job/claim", {"anonymous": 401, "admin": 401, "pi": 401, "attempt": 401, "machine": 404}, "",
         {"submission_id": "observatory-run-1-x-1"}),
    # Families are their team's (and admins'); withdrawals and rebuilds are admins' alone.
    Case("GET", "/api/families/{group_id}", {"anonymous": 401, "other": 404, "reviewer": 404, "attempt": 401,
                                             "machine": 401}, "pi"),
    Case("GET", "/api/withdrawals", {"anonymous": 401, "other": 403, "pi": 403, "reviewer": 403, "machine": 401,
                                     "attempt": 401}, "admin"),
    Case("POST", "/api/withdrawals", {"anonymous": 401, "other": 403, "pi": 403, "reviewer": 403, "machine": 401,
                                      "attempt": 401}, "admin", {"image_sha256": "{image_sha256}", "reason": "other"}),
    Case("POST", "/api/models/{model_name}/{version}/rebuild", {"anonymous": 401, "pi": 403, "owner": 403,
                                                                "machine": 401, "admin": 404}, ""),
]


@pytest.fixture
def world(lite_session: Session, lite_settings, lite_engine, tmp_path):
    s = lite_session
    people = {"admin": create_user(s, Role.admin), "pi": create_user(s), "coi": create_user(s),
              "other": create_user(s), "reviewer": create_user(s, Role.reviewer), "owner": create_user(s)}
    spare = create_user(s)
    call = create_call(s, people["admin"], capacity=100)
    awarded = create_proposal(s, people["pi"], call)
    submitted = create_proposal(s, people["pi"], call)
    draft = create_proposal(s, people["pi"], call, submit=False)
    for proposal in (awarded, draft):
        add_coi(s, people["pi"], proposal, people["coi"])
    under_review(s, people["admin"], submitted)
    invite, _ = team.invite(s, actor=people["pi"], proposal_id=awarded.id, email=spare.email, base_url="http://x")
    _, invite_link = team.invite(s, actor=people["pi"], proposal_id=awarded.id, email="o@example.org",
                                 base_url="http://x")
    closed = create_call(s, people["admin"], reviewers_per_proposal=1)
    closed_proposal = create_proposal(s, people["pi"], closed)
    close_call(s, closed)
    reviewed = create_call(s, people["admin"], reviewers_per_proposal=1)
    waiting, taken = (create_proposal(s, people["other"], reviewed) for _ in range(2))
    start_review(s, people["admin"], reviewed)
    assignment_of = {a.proposal_id: a.id for a in s.exec(select(ReviewAssignment))}
    assignments.accept(s, actor=people["reviewer"], assignment_id=assignment_of[taken.id])
    released = create_call(s, people["admin"], reviewers_per_proposal=1)
    released_proposal = create_proposal(s, people["pi"], released)
    start_review(s, people["admin"], released)
    graded = s.exec(select(ReviewAssignment).where(ReviewAssignment.proposal_id == released_proposal.id)).one()
    assignments.accept(s, actor=people["reviewer"], assignment_id=graded.id)
    review = reviews.submit(s, actor=people["reviewer"], assignment_id=graded.id, data=ReviewCreate(
        grade=2, expertise="high", for_committee="c", for_pi="p"))
    committee.release(s, actor=people["admin"], call_id=released.id)
    donor_call = create_call(s, people["admin"], donor_share=0.2)
    s.commit()
    _, model_run = award(s, people["admin"], create_proposal(s, people["pi"], call))
    archive_outputs(s, lite_settings, model_run, TRAIN_FILES)
    model_run = s.get(Run, model_run.id)
    model_run.state = RunState.succeeded
    s.add(model_run)
    s.commit()
    _, run = award(s, people["admin"], awarded)
    run = s.get(Run, run.id)
    archive_outputs(s, lite_settings, run, {"samples.png": b"png"})
    change = ChangeRequest(award_id=run.award_id, proposal_id=awarded.id, requested_by=people["pi"].id,
                           job_plan={"kind": "descriptor"}, beyond=["another job kind"], reason="r")
    sweep = RunGroup(award_id=run.award_id, proposal_id=awarded.id, kind="sweep", k=2, partition="", dataset="",
                     field="seed", values=[1, 2])
    s.add_all([change, sweep])
    s.commit()
    _, analysis = award(s, people["admin"], create_proposal(s, people["pi"], call))
    analysis = s.get(Run, analysis.id)
    analysis.job_kind, analysis.state = "replication", RunState.succeeded
    s.add(analysis)
    s.commit()
    archive_outputs(s, lite_settings, analysis, ANALYSIS_FILES)
    machine, machine_token = create_machine(s, people["owner"], people["admin"])
    pending, _ = create_machine(s, people["owner"], name="second box")
    headers = {who: auth_headers(s, user) for who, user in people.items()}
    headers["machine"] = {"Authorization": f"Bearer {machine_token}"}
    volunteer = machines.register(s, people["owner"], name="volunteer box", show_owner=False, volunteer=True)
    s.commit()
    headers["volunteer"] = {"Authorization": f"Bearer {machines.issue_token(s, people['owner'], volunteer.id)[1]}"}
    s.commit()
    headers["anonymous"] = {}
    award(s, people["admin"], create_proposal(s, people["pi"], call))  # dispatched: its attempt holds a token
    pool = ScriptedPool()
    Scheduler(lite_engine, lite_settings, pool).dispatch()
    headers["attempt"] = {"Authorization": f"Bearer {pool.token()}"}
    family = _family(s, lite_settings, people)
    outcome = outcomes.add(s, people["pi"], awarded.id, outcomes.OutcomeCreate(kind="paper", title="P",
                                                                               url="https://example.org/p"))
    s.commit()
    ids = {"call_id": call.id, "donor_call_id": donor_call.id, "outcome_id": outcome.id,
           "award_id": run.award_id, "change_id": change.id, "sweep_id": sweep.id,
           "closed_proposal_id": closed_proposal.id, "reviewer_user_id": people["reviewer"].id,
           "proposal_id": awarded.id, "submitted_id": submitted.id, "draft_id": draft.id,
           "run_id": run.id, "name": "samples.png", "machine_id": machine.id,
           "pending_machine_id": pending.id, "spare_email": spare.email, "sha256": "0" * 64,
           "invite_id": invite.id, "invite_token": invite_link.rsplit("/", 1)[1], "coi_id": people["coi"].id,
           "spare_id": spare.id, "closed_call_id": closed.id, "reviewed_call_id": reviewed.id,
           "assignment_id": assignment_of[waiting.id], "accepted_assignment_id": assignment_of[taken.id],
           "released_id": released_proposal.id, "review_id": review.id, "model_run_id": model_run.id,
           "analysis_id": analysis.id, "seed": 7, "row": 0, **family, "model_name": "no-such-model",
           "version": 1, "number": 0}
    return headers, ids


def _family(session: Session, settings, people: dict) -> dict:  # type: ignore[no-untyped-def]
    """A family award of the PI's (on a round-robin partition of the bundled set), and an image of that set."""
    import jobs.partition as partition_format
    from service.archive.service import store_for
    from service.datasets import partitions
    from service.datasets.service import find
    from tests.factories import TINY_TRAIN

    store = store_for(settings)
    version = find(session, "skimage-samples")
    records = partitions.manifest_records(store, version)
    assignment = {r["image_sha256"]: n % 2 for n, r in enumerate(records)}
    partitions.register(session, store, version, partition_format.encode({
        "dataset_digest": version.digest, "k": 2, "seed": 0, "assignment": assignment,
        "digest": partition_format.digest_of(version.digest, 2, 0, assignment)}))
    session.commit()
    call = create_call(session, people["admin"], capacity=10)
    _, first = award(session, people["admin"], create_proposal(session, people["pi"], call, job_plan={
        **TINY_TRAIN, "dataset": "skimage-samples", "experts": 2}))
    return {"group_id": session.get(Run, first.id).group_id, "image_sha256": records[0]["image_sha256"]}


def _fill(template: str, ids: dict) -> str:
    return template.format(**ids)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.method} {c.route}")
def test_endpoint_refuses_the_wrong_people(case: Case, world, lite_client: TestClient) -> None:
    headers, ids = world
    url = _fill(case.route, ids)
    body = {k: _fill(v, ids) if isinstance(v, str) else v for k, v in case.body.items()} if case.body else None
    for who, status in case.refused.items():
        response = lite_client.request(case.method, url, headers=headers[who], json=body)
        assert response.status_code == status, f"{who}: {response.status_code} {response.text}"
        assert response.json()["detail"], "a refusal says why"
    if case.allowed:
        response = lite_client.request(case.method, url, headers=headers[case.allowed], json=body)
        assert response.status_code < 300, f"{case.allowed}: {response.status_code} {response.text}"


def test_outputs_become_public_after_the_exclusive_period(world, lite_client: TestClient, lite_session) -> None:
    from datetime import timedelta

    from service.models import Award
    from service.timeutil import utcnow

    headers, ids = world
    url = f"/api/runs/{ids['run_id']}/artifacts/samples.png"
    assert lite_client.get(url).status_code == 404
    run = lite_session.get(Run, ids["run_id"])
    award_ = lite_session.get(Award, run.award_id)
    award_.exclusive_until = utcnow() - timedelta(seconds=1)
    lite_session.add(award_)
    lite_session.commit()
    assert lite_client.get(url).content == b"png"
    assert lite_client.get(url, headers=headers["other"]).status_code == 200


def test_every_api_route_is_covered(lite_client: TestClient) -> None:
    spec = lite_client.get("/openapi.json").json()
    routes = {(method.upper(), path) for path, item in spec["paths"].items() for method in item}
    aliases = {"{analysis_id}": "{run_id}", "{model_run_id}": "{run_id}", "{model_name}": "{name}",
               "{draft_id}": "{proposal_id}", "{submitted_id}": "{proposal_id}", "{released_id}": "{proposal_id}",
               "{pending_machine_id}": "{machine_id}", "{coi_id}": "{user_id}", "{spare_id}": "{user_id}",
               "{closed_call_id}": "{call_id}", "{donor_call_id}": "{call_id}",
               "{reviewed_call_id}": "{call_id}",
               "{accepted_assignment_id}": "{assignment_id}", "{sweep_id}": "{group_id}",
               "{closed_proposal_id}": "{proposal_id}"}
    covered = set()
    for c in CASES:
        route = c.route
        for alias, name in aliases.items():
            route = route.replace(alias, name)
        covered.add((c.method, route))
    api_routes = {r for r in routes if r[1].startswith("/api/")}
    assert api_routes - covered - PUBLIC == set()
