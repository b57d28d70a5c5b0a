"""The analysis tooling's parts: descriptors and search, the replication search (deterministic, escaped), its plans
pinned to a model version and its training set, and its report served so that nothing in it can run."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from jobs.analysis import descriptors, report, search
from jobs.analysis.replication import main as replication_main
from jobs.config import ReplicationConfig, TrainConfig
from jobs.dataset import local_inputs
from jobs.train import main as train_main
from service.models import Role, Run, RunState
from tests.factories import (
    TINY_TRAIN,
    archive_outputs,
    auth_headers,
    award,
    create_call,
    create_proposal,
    create_user,
    registered_model,
)


def test_a_copy_is_nearest_by_every_measure_and_the_tiled_distance_needs_every_tile() -> None:
    rng = np.random.default_rng(0)
    base = rng.random((50, 16, 16, 3)).astype(np.float32)
    noisy = np.clip(base[7] + rng.normal(0, 0.02, base[7].shape), 0, 1).astype(np.float32)
    patched = base[9].copy()
    patched[:4, :4] = 1 - patched[:4, :4]  # one tile of sixteen changed: close on average, not everywhere
    queries = np.stack([base[3], noisy, patched])
    d, i = search.topk_l2(descriptors.pixels(queries), descriptors.pixels(base), 2)
    assert list(i[:, 0]) == [3, 7, 9] and d[0, 0] < 1e-3
    query_tiles, base_tiles = descriptors.tiles(queries), descriptors.tiles(base)
    tiled, tiled_i = search.tiled_l2(query_tiles, base_tiles, 1)
    # An image's distance to itself is zero up to rounding in the |a|²+|b|²-2ab form, which depends on the BLAS
    # kernel's order of summation (1e-7 on an AVX2 kernel, 0 on AVX-512): bounded, and far below a noisy copy's.
    bound = search.rounding_bound(query_tiles.shape[2], float((base_tiles.astype(np.float64) ** 2).sum(2).max()))
    assert list(tiled_i[:2, 0]) == [3, 7] and tiled[0, 0] <= bound < tiled[1, 0] / 1000
    # The one changed tile decides the patched image's tiled distance to its original: not a copy by that measure.
    to_original, _ = search.tiled_l2(descriptors.tiles(patched[None]), descriptors.tiles(base[9:10]), 1)
    assert to_original[0, 0] > 10 * tiled[1, 0] and to_original[0, 0] > tiled[2, 0]
    sims, sim_i = search.topk_similarity(descriptors.features(queries), descriptors.features(base), 1)
    assert list(sim_i[:2, 0]) == [3, 7] and sims[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_exact_search_is_exact_and_the_index_finds_most_neighbours() -> None:
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 4, (40, 32))
    base = (centres[rng.integers(0, 40, 5000)] + rng.normal(0, 1, (5000, 32))).astype(np.float32)
    queries = (centres[rng.integers(0, 40, 50)] + rng.normal(0, 1, (50, 32))).astype(np.float32)
    truth = np.argsort(((queries[:, None] - base[None]) ** 2).sum(-1), axis=1)[:, :5]
    _, exact = search.topk_l2(queries, base, 5, block=700)  # several blocks, merged
    assert (exact == truth).all()
    radii = rng.uniform(0.0, 6.0, len(base)).astype(np.float32)  # each query's nearest lies 4.5 to 7 away
    distances = np.sqrt(((queries[:, None] - base[None]) ** 2).sum(-1))
    inside = (distances <= radii[None, :]).any(axis=1)
    assert inside.any() and not inside.all()
    assert (search.within_any(queries, base, radii, block=700) == inside).all()  # blocks agree with the whole
    index = search.IVFIndex(base, cells=40, seed=0)
    _, found = index.search(queries, 5, probes=4)
    recall = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(found, truth, strict=True)])
    assert recall >= 0.9


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model")
    train_main(TrainConfig.model_validate({**TINY_TRAIN, "resolution": 16}), out)
    return out / "checkpoint.pt"


def test_the_replication_search_gives_the_same_bytes_for_the_same_seed(tiny_model: Path, tmp_path: Path) -> None:
    inputs = local_inputs("skimage-samples", tmp_path / "package")
    cfg = ReplicationConfig(model="tiny@1", samples=6, inference_steps=3)
    first = replication_main(cfg, tiny_model, inputs, tmp_path / "a")
    replication_main(cfg, tiny_model, inputs, tmp_path / "b")
    replication_main(cfg.model_copy(update={"seed": 1}), tiny_model, inputs, tmp_path / "c")
    digest = {name: hashlib.sha256((tmp_path / name / "results.json").read_bytes()).hexdigest() for name in "abc"}
    assert digest["a"] == digest["b"] != digest["c"]
    assert (tmp_path / "a" / "report.html").read_bytes() == (tmp_path / "b" / "report.html").read_bytes()
    assert first["dataset"]["distinct_images"] == 12 and len(first["samples"]) == 6
    assert first["thresholds"]["pairs"] == 12 and first["thresholds"]["tile_grid"] == 4
    assert [(r["from"], r["images"]) for r in first["by_repetition"]] == [(1, 12)]  # the bundled set: no repeats
    assert "Duplication and replication" in (tmp_path / "a" / "report.html").read_text()
    nearest = first["samples"][0]["tiled_l2"][0]
    assert {"title", "author", "license", "distance", "times_in_training"} <= set(nearest)
    capacity = first["capacity"]
    assert capacity["model_bits_per_training_image"] == pytest.approx(capacity["parameters"] * 32 / 12, rel=1e-5)


def test_replication_is_counted_by_how_often_each_image_was_repeated() -> None:
    from collections import Counter

    from jobs.analysis.replication import by_repetition

    rows = by_repetition([1, 1, 1, 1, 2, 3, 60, 60], Counter({0: 1, 6: 9, 7: 4}))
    assert [(r["from"], r["to"], r["images"], r["copied"], r["samples"]) for r in rows] == [
        (1, 1, 4, 1, 1), (2, 3, 2, 0, 0), (32, 63, 2, 2, 13)]
    assert [r["rate"] for r in rows] == [0.25, 0.0, 1.0]


def test_extraction_groups_are_cliques_not_chains() -> None:
    from itertools import combinations

    from jobs.analysis.extraction import EXACT_CLIQUE_LIMIT, cliques_of

    chain = [(i, i + 1) for i in range(9)]  # each near the next: one component, no three alike
    assert cliques_of(chain, 10, 3) == []
    five = list(combinations(range(5), 2))
    assert cliques_of([*five, (4, 5), (5, 6)], 7, 3) == [[0, 1, 2, 3, 4]]
    two = [*combinations(range(4), 2), *combinations(range(4, 8), 2), (3, 4)]  # two groups, one bridge
    assert cliques_of(two, 8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    # Past the exact limit a greedy clique is taken: a big group is still found whole.
    big = EXACT_CLIQUE_LIMIT + 30
    found = cliques_of([*combinations(range(big), 2), (big - 1, big)], big + 1, 5)
    assert found == [list(range(big))]


def test_the_extraction_attack_gives_the_same_bytes_for_the_same_seed(tiny_model: Path, tmp_path: Path) -> None:
    from jobs.analysis.extraction import main as extraction_main
    from jobs.config import ExtractionConfig

    inputs = local_inputs("skimage-samples", tmp_path / "package")
    cfg = ExtractionConfig(model="tiny@1", samples_per_class=8, inference_steps=2, min_group=2)
    first = extraction_main(cfg, tiny_model, inputs, tmp_path / "a")
    extraction_main(cfg, tiny_model, inputs, tmp_path / "b")
    extraction_main(cfg.model_copy(update={"seed": 1}), tiny_model, inputs, tmp_path / "c")
    digest = {name: hashlib.sha256((tmp_path / name / "results.json").read_bytes()).hexdigest() for name in "abc"}
    assert digest["a"] == digest["b"] != digest["c"]
    assert first["summary"]["samples"] == 8 and first["dataset"]["distinct_images"] == 12


def test_the_report_escapes_what_the_provenance_says(tiny_model: Path, tmp_path: Path) -> None:
    inputs = local_inputs("skimage-samples", tmp_path / "package")
    results = replication_main(ReplicationConfig(model="tiny@1", samples=2, inference_steps=2), tiny_model, inputs,
                               tmp_path / "r")
    results["samples"][0]["tiled_l2"][0]["title"] = "<script>alert(1)</script>"
    results["samples"][0]["tiled_l2"][0]["author"] = '"><img src=x onerror=alert(1)>'
    pictures = np.zeros((2, 16, 16, 3), dtype=np.float32)
    page = report.replication(results, pictures, np.zeros((12, 16, 16, 3), dtype=np.float32))
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "onerror=alert(1)>" not in page and "&quot;&gt;&lt;img" in page


def _model_run(client: TestClient, session: Session, settings, tiny_model: Path) -> tuple[str, dict]:
    """tiny_model registered as tiny@1."""
    admin = create_user(session, Role.admin)
    ref, run = registered_model(client, session, settings, admin, tiny_model.read_bytes(),
                                {**TINY_TRAIN, "resolution": 16})
    return ref, {"admin": admin, "run": run}


def test_a_replication_plan_searches_the_model_s_own_training_set(lite_client: TestClient, lite_session: Session,
                                                                 lite_settings, tiny_model: Path) -> None:
    ref, _ = _model_run(lite_client, lite_session, lite_settings, tiny_model)
    researcher = create_user(lite_session)
    call = create_call(lite_session, create_user(lite_session, Role.admin))
    headers = auth_headers(lite_session, researcher)
    body = {"title": "Does it copy?", "abstract": "A", "justification": "J", "requested_gpu_hours": 1.0,
            "submit": False}
    made = lite_client.post(f"/api/calls/{call.id}/proposals", headers=headers,
                            json={**body, "job_plan": {"kind": "replication", "model": ref, "samples": 8}})
    assert made.status_code == 201, made.text
    plan = made.json()["job_plan"]
    card = lite_client.get(f"/api/models/{ref.replace('@', '/')}").json()
    assert plan["checkpoint_sha256"] == card["checkpoint_sha256"] and plan["dataset"] == "skimage-samples@1"
    assert plan["dataset_digest"] == card["dataset_digest"]
    missing = lite_client.post(f"/api/calls/{call.id}/proposals", headers=headers,
                               json={**body, "job_plan": {"kind": "replication", "model": "nothing@3"}})
    assert missing.status_code == 422 and "no model version 'nothing@3'" in missing.json()["detail"]
    attack = lite_client.post(f"/api/calls/{call.id}/proposals", headers=headers,
                              json={**body, "job_plan": {"kind": "extraction", "model": ref}})
    assert attack.status_code == 201 and attack.json()["job_plan"]["checkpoint_sha256"] == card["checkpoint_sha256"]
    assert attack.json()["job_plan"]["dataset"] == "skimage-samples@1"
    audit = lite_client.post(f"/api/calls/{call.id}/proposals", headers=headers,
                             json={**body, "job_plan": {"kind": "duplication", "dataset": "skimage-samples"}})
    assert audit.status_code == 201 and audit.json()["job_plan"]["dataset"] == "skimage-samples@1"
    assert audit.json()["job_plan"]["dataset_digest"] == card["dataset_digest"]
    measured = lite_client.post(f"/api/calls/{call.id}/proposals", headers=headers,
                                json={**body, "job_plan": {"kind": "quality", "model": ref, "samples": 64}})
    assert measured.status_code == 201 and measured.json()["job_plan"]["dataset_digest"] == card["dataset_digest"]
    assert measured.json()["job_plan"]["checkpoint_sha256"] == card["checkpoint_sha256"]
    form = lite_client.get(f"/calls/{call.id}/propose", headers=headers).text
    for kind in ("replication", "extraction", "quality"):  # the form offers the versions to analyse
        picker = form.split(f'<select name="{kind}.model"')[1].split("</select>")[0]
        assert f'value="{ref}"' in picker and "none: the run named below" in picker
    schema = json.dumps(lite_client.get("/api/job-plans/schema").json())
    assert all(f'"{kind}"' in schema for kind in ("replication", "duplication", "extraction", "ablation", "quality"))


def test_a_report_is_shown_as_a_sandboxed_page_and_the_training_run_links_it(
        lite_client: TestClient, lite_session: Session, lite_settings, tiny_model: Path) -> None:
    ref, made = _model_run(lite_client, lite_session, lite_settings, tiny_model)
    admin = made["admin"]
    pi = create_user(lite_session)
    _, analysis = award(lite_session, admin, create_proposal(lite_session, pi, create_call(lite_session, admin),
                                                             job_plan={"kind": "replication", "model": ref}))
    analysis = lite_session.get(Run, analysis.id)
    page = b"<!doctype html><title>report</title><script>document.title='ran'</script><p>numbers</p>"
    archive_outputs(lite_session, lite_settings, analysis, {"results.json": b"{}", "report.html": page})
    shown = lite_client.get(f"/api/runs/{analysis.id}/artifacts/report.html", headers=auth_headers(lite_session, pi))
    assert shown.status_code == 200 and shown.headers["content-disposition"].startswith("inline")
    policy = shown.headers["content-security-policy"]
    assert "sandbox" in policy and "script-src" not in policy and policy.startswith("default-src 'none'")
    assert shown.headers["x-content-type-options"] == "nosniff"
    results = lite_client.get(f"/api/runs/{analysis.id}/artifacts/results.json",
                              headers=auth_headers(lite_session, pi))
    assert results.headers["content-disposition"].startswith("attachment")
    run_page = lite_client.get(f"/runs/{analysis.id}", headers=auth_headers(lite_session, pi)).text
    assert 'id="report"' in run_page
    # The training run's page lists the analysis; its report link waits until the viewer may read it.
    training = lite_client.get(f"/runs/{made['run'].id}", headers=auth_headers(lite_session, admin)).text
    assert 'id="analyses"' in training and f"<tr><td>{analysis.id}</td><td>replication</td><td>{ref}</td>" in training
    assert "report</a>" not in training  # the analysis is still exclusive to its own team


def test_the_duplication_audit_counts_repeats_and_finds_near_duplicates(tmp_path: Path) -> None:
    from jobs.analysis import planted
    from jobs.analysis.duplication import main as duplication_main
    from jobs.config import DuplicationConfig

    package = planted.package(tmp_path / "package", distinct=30, planted=2, copies=4, near=3)
    digest = json.loads((package / "dataset.json").read_text())["digest"]
    inputs = {f"dataset:{name}": package / name for name in ("manifest.jsonl", "shard-00000.tar")}
    cfg = DuplicationConfig(dataset="planted-copies", dataset_digest=digest, resolution=16)
    results = duplication_main(cfg, inputs, tmp_path / "a")
    s = results["summary"]
    assert (s["records_repeating_an_image"], s["images_repeated"], s["most_repeats"]) == (6, 2, 4)
    pairs = {tuple(sorted((p["a"]["title"], p["b"]["title"]))) for p in results["near_duplicates"]}
    assert pairs == {(f"distinct-{i}", f"near-{i}") for i in range(3)}
    assert all(p["tile_rms"] <= 0.04 for p in results["near_duplicates"])
    assert results["repeats_histogram"] == {"1": 33, "4": 2}
    duplication_main(cfg, inputs, tmp_path / "b")
    assert (tmp_path / "a" / "results.json").read_bytes() == (tmp_path / "b" / "results.json").read_bytes()
    page = (tmp_path / "a" / "report.html").read_text()
    assert "Duplication audit: planted-copies" in page and "<script" not in page


def test_past_the_exact_limit_the_index_finds_the_same_tiled_neighbours() -> None:
    rng = np.random.default_rng(2)
    base = rng.random((3000, 8, 8, 3)).astype(np.float32)
    queries = np.clip(base[rng.integers(0, 3000, 20)] + rng.normal(0, 0.03, (20, 8, 8, 3)), 0, 1)
    queries = np.concatenate([queries, rng.random((5, 8, 8, 3))]).astype(np.float32)
    q, b = descriptors.tiles(queries), descriptors.tiles(base)
    exact_d, exact_i = search.tiled_l2(q, b, 3)
    found_d, found_i = search.tiled_nearest(q, b, 3, exact_limit=1000)
    assert (found_i[:20, 0] == exact_i[:20, 0]).all()  # every near copy is found
    assert np.allclose(found_d[:20, 0], exact_d[:20, 0])
    assert (found_d >= exact_d - 1e-9).all()  # never nearer than the truth


def test_people_mark_the_shown_pairs_and_see_how_the_threshold_agrees(
        lite_client: TestClient, lite_session: Session, lite_settings, tiny_model: Path, tmp_path: Path) -> None:
    import io

    from PIL import Image

    from tests.factories import PASSWORD, add_coi, post_form

    inputs = local_inputs("skimage-samples", tmp_path / "package")
    results = replication_main(ReplicationConfig(model="tiny@1", samples=5, inference_steps=2), tiny_model, inputs,
                               tmp_path / "r")
    admin, pi, coi, outsider = (create_user(lite_session, role) for role in (Role.admin, Role.researcher,
                                                                              Role.researcher, Role.researcher))
    proposal = create_proposal(lite_session, pi, create_call(lite_session, admin))
    add_coi(lite_session, pi, proposal, coi)
    _, run = award(lite_session, admin, proposal)
    run = lite_session.get(Run, run.id)
    run.job_kind, run.state = "replication", RunState.succeeded
    lite_session.add(run)
    lite_session.commit()
    archive_outputs(lite_session, lite_settings, run, {name: (tmp_path / "r" / name).read_bytes()
                                                       for name in ("results.json", "report.html", "pairs.png")})
    mine, theirs = auth_headers(lite_session, pi), auth_headers(lite_session, coi)
    listed = lite_client.get(f"/api/runs/{run.id}/pairs", headers=mine).json()
    assert [p["seed"] for p in listed["pairs"]] == [results["samples"][i]["seed"] for i in results["shown"]]
    assert listed["agreement"] == {"marked": 0, "agree": 0, "missed": 0, "over": 0, "fraction": None}
    first = listed["pairs"][0]
    picture = lite_client.get(first["picture_url"], headers=mine)
    with Image.open(io.BytesIO(picture.content)) as image:
        assert image.size == (2 * 64 + 4, 64)  # a 16-pixel sample and its original, enlarged 4 times
    assert lite_client.get(f"/api/runs/{run.id}/pairs/99.png", headers=mine).status_code == 404

    automatic = first["automatic"]
    people_say = "not_copy" if automatic == "copy" else "copy"
    marked = lite_client.put(f"/api/runs/{run.id}/pairs/{first['seed']}", headers=mine,
                             json={"verdict": people_say}).json()
    assert marked["pairs"][0]["mine"] == people_say and marked["pairs"][0]["marks"] == {people_say: 1}
    assert marked["agreement"]["marked"] == 1 and marked["agreement"]["agree"] == 0
    agreed = lite_client.put(f"/api/runs/{run.id}/pairs/{listed['pairs'][1]['seed']}", headers=theirs,
                             json={"verdict": listed["pairs"][1]["automatic"]}).json()["agreement"]
    assert (agreed["marked"], agreed["agree"], agreed["fraction"]) == (2, 1, 0.5)
    changed = lite_client.put(f"/api/runs/{run.id}/pairs/{first['seed']}", headers=mine,
                              json={"verdict": automatic}).json()  # a mark can be changed, never doubled
    assert changed["pairs"][0]["marks"] == {automatic: 1} and changed["agreement"]["agree"] == 2

    assert lite_client.put(f"/api/runs/{run.id}/pairs/123456", headers=mine,
                           json={"verdict": "copy"}).status_code == 422
    assert lite_client.put(f"/api/runs/{run.id}/pairs/{first['seed']}", headers=mine,
                           json={"verdict": "maybe"}).status_code == 422
    assert lite_client.get(f"/api/runs/{run.id}/pairs", headers=auth_headers(lite_session, outsider)).status_code \
        == 404
    # A reviewer who reviewed the proposal marks too (and sees the pictures during the exclusive period); another
    # reviewer does not.
    from service.models import AssignmentState, ReviewAssignment

    reviewer, other_reviewer = create_user(lite_session, Role.reviewer), create_user(lite_session, Role.reviewer)
    lite_session.add(ReviewAssignment(call_id=proposal.call_id, proposal_id=proposal.id, reviewer_id=reviewer.id,
                                      state=AssignmentState.submitted))
    lite_session.commit()
    judge = auth_headers(lite_session, reviewer)
    assert lite_client.get(first["picture_url"], headers=judge).status_code == 200
    judged = lite_client.put(f"/api/runs/{run.id}/pairs/{listed['pairs'][3]['seed']}", headers=judge,
                             json={"verdict": listed["pairs"][3]["automatic"]})
    assert judged.status_code == 200 and judged.json()["pairs"][3]["mine"] == listed["pairs"][3]["automatic"]
    assert judged.json()["agreement"]["marked"] == 3
    stranger = auth_headers(lite_session, other_reviewer)
    assert lite_client.get(f"/api/runs/{run.id}/pairs", headers=stranger).status_code == 404
    assert lite_client.get(first["picture_url"], headers=stranger).status_code == 404

    post_form(lite_client, "/login", {"email": pi.email, "password": PASSWORD, "next": "/"})
    page = " ".join(lite_client.get(f"/runs/{run.id}/pairs").text.split())
    assert "Of 3 marked pairs, the automatic verdict agrees with people's on 3 (100%)" in page
    assert 'id="pairs"' in page
    done = post_form(lite_client, f"/runs/{run.id}/pairs/{listed['pairs'][2]['seed']}", {"verdict": "copy"})
    assert f"Marked sample {listed['pairs'][2]['seed']}: a copy." in done.text
    run_page = " ".join(lite_client.get(f"/runs/{run.id}").text.split())
    assert "mark its pairs" in run_page and "People have marked 4 of the shown pairs" in run_page


def test_replication_is_shown_against_capacity_across_searches(lite_client: TestClient, lite_session: Session,
                                                               lite_settings, tiny_model: Path,
                                                               tmp_path: Path) -> None:
    from datetime import timedelta

    from service.models import Award
    from service.timeutil import utcnow

    inputs = local_inputs("skimage-samples", tmp_path / "package")
    results = replication_main(ReplicationConfig(model="tiny@1", samples=4, inference_steps=2), tiny_model, inputs,
                               tmp_path / "r")
    bigger = json.loads(json.dumps(results))  # as a search of a model trained on a set 100 times larger reads
    bigger["subject"], bigger["capacity"]["training_images"] = "tiny@2", 1200
    bigger["capacity"]["model_bits_per_training_image"] /= 100
    admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
    call = create_call(lite_session, admin)
    made = []
    for data in (results, bigger, None):
        _, run = award(lite_session, admin, create_proposal(lite_session, pi, call))
        run = lite_session.get(Run, run.id)
        run.job_kind, run.state = "replication", RunState.succeeded
        lite_session.add(run)
        lite_session.commit()
        body = json.dumps(data).encode() if data else b'{"not": "results"}'  # the last: a damaged one
        archive_outputs(lite_session, lite_settings, run, {"results.json": body, "report.html": b"<p>r</p>",
                                                           "pairs.png": (tmp_path / "r" / "pairs.png").read_bytes()})
        made.append(run)
    assert lite_client.get("/api/analyses/replication").json() == []  # exclusive to the team for now
    mine = lite_client.get("/api/analyses/replication", headers=auth_headers(lite_session, pi)).json()
    assert [p["subject"] for p in mine] == ["tiny@2", "tiny@1"]  # newest first; the damaged one left out
    assert mine[1]["bits_per_image"] == pytest.approx(results["capacity"]["model_bits_per_training_image"])
    assert mine[0]["training_images"] == 1200 and mine[1]["samples"] == 4
    for run in made:
        award_ = lite_session.get(Award, run.award_id)
        award_.exclusive_until = utcnow() - timedelta(seconds=1)
        lite_session.add(award_)
    lite_session.commit()
    page = lite_client.get("/analyses").text
    assert page.count("<circle") == 2 and 'id="replication-points"' in page and "tiny@2" in page
    assert f'href="/api/runs/{made[0].id}/artifacts/report.html"' in page


def test_a_grid_gives_back_its_images() -> None:
    import torch

    from jobs.imaging import from_grid, to_grid

    images = torch.rand(7, 3, 8, 8) * 2 - 1
    back = from_grid(to_grid(images), 7, 8)
    expected = ((images.clamp(-1, 1) + 1) * 127.5).round().permute(0, 2, 3, 1).numpy() / 255
    assert back.shape == (7, 8, 8, 3) and np.abs(back - expected).max() < 1e-6
    with pytest.raises(ValueError, match="not the"):
        from_grid(to_grid(images), 10, 8)  # ten would need four columns


def test_a_sample_run_s_own_images_are_searched(lite_client: TestClient, lite_session: Session, lite_settings,
                                               tiny_model: Path, tmp_path: Path) -> None:
    """A replication plan may name a finished sample run: the observatory pins its grid, its metrics, the model it
    drew from and that model's training set, and the search reads the very images the run drew."""
    from jobs.config import SampleConfig
    from jobs.sample import main as sample_main

    ref, made = _model_run(lite_client, lite_session, lite_settings, tiny_model)
    sample_main(SampleConfig(model=ref, seeds=[5, 9, 2], inference_steps=3, sampler="ddim"), tiny_model,
                tmp_path / "s")
    pi = create_user(lite_session)
    plan = {"kind": "sample", "model": ref, "seeds": [5, 9, 2], "inference_steps": 3, "sampler": "ddim"}
    _, sample_run = award(lite_session, made["admin"], create_proposal(lite_session, pi,
                                                                       create_call(lite_session, made["admin"]),
                                                                       job_plan=plan))
    sample_run = lite_session.get(Run, sample_run.id)
    sample_run.state = RunState.succeeded
    lite_session.add(sample_run)
    lite_session.commit()
    archive_outputs(lite_session, lite_settings, sample_run, {n: (tmp_path / "s" / n).read_bytes()
                                                              for n in ("samples.png", "metrics.json")})
    body = {"title": "Its own samples", "abstract": "A", "justification": "J", "requested_gpu_hours": 1.0,
            "submit": False, "job_plan": {"kind": "replication", "samples_from": sample_run.id}}
    call = create_call(lite_session, made["admin"])
    refused = lite_client.post(f"/api/calls/{call.id}/proposals", json=body,
                               headers=auth_headers(lite_session, create_user(lite_session)))
    assert refused.status_code == 422 and "no finished sample run" in refused.json()["detail"]  # not theirs
    accepted = lite_client.post(f"/api/calls/{call.id}/proposals", json=body, headers=auth_headers(lite_session, pi))
    assert accepted.status_code == 201, accepted.text
    pinned = accepted.json()["job_plan"]
    artifacts = {a["name"]: a["sha256"] for a in lite_client.get(
        f"/api/runs/{sample_run.id}/artifacts", headers=auth_headers(lite_session, pi)).json()}
    assert pinned["samples_sha256"] == artifacts["samples.png"]
    assert pinned["samples_metrics_sha256"] == artifacts["metrics.json"]
    assert pinned["checkpoint_sha256"] == sample_run.job_plan["checkpoint_sha256"]
    assert pinned["dataset"] == "skimage-samples@1"

    inputs = {**local_inputs("skimage-samples", tmp_path / "package"),
              "samples_sha256": tmp_path / "s" / "samples.png",
              "samples_metrics_sha256": tmp_path / "s" / "metrics.json"}
    results = replication_main(ReplicationConfig.model_validate(pinned), tiny_model, inputs, tmp_path / "r")
    assert [s["seed"] for s in results["samples"]] == [5, 9, 2]
    assert results["subject"] == f"the samples of run {sample_run.id}"
    # The images searched are the ones the sample run drew, seed by seed.
    direct = replication_main(ReplicationConfig(model=ref, seed=9, samples=1, inference_steps=3), tiny_model,
                              local_inputs("skimage-samples", tmp_path / "p2"), tmp_path / "d")
    assert direct["samples"][0]["tiled_l2"][0]["index"] == results["samples"][1]["tiled_l2"][0]["index"]
    assert direct["samples"][0]["tiled_l2"][0]["distance"] == pytest.approx(
        results["samples"][1]["tiled_l2"][0]["distance"], rel=0.02)  # the grid's 8-bit pixels


def test_a_descriptor_run_is_registered_as_a_copy_descriptor_and_analyses_name_it(
        lite_client: TestClient, lite_session: Session, lite_settings, tiny_model: Path) -> None:
    from service.datasets.pinning import run_inputs

    ref, made = _model_run(lite_client, lite_session, lite_settings, tiny_model)
    admin = made["admin"]
    headers = auth_headers(lite_session, admin)
    _, run = award(lite_session, admin, create_proposal(lite_session, create_user(lite_session),
                                                        create_call(lite_session, admin),
                                                        job_plan={"kind": "descriptor", "dataset": "skimage-samples"}))
    run = lite_session.get(Run, run.id)
    assert run.job_kind == "descriptor" and run.job_plan["dataset"] == "skimage-samples@1"
    assert run.job_plan["dataset_digest"].startswith("sha256:")
    attribution = {"dataset": "skimage-samples", "digest": run.job_plan["dataset_digest"],
                   "images": [{"title": "Coffee", "author": "R", "license": "CC0-1.0"}]}
    archive_outputs(lite_session, lite_settings, run, {"descriptor.pt": b"descriptor weights", "metrics.json": b"{}",
                                                       "attribution.json": json.dumps(attribution).encode()})
    run.state = RunState.succeeded
    lite_session.add(run)
    lite_session.commit()
    # A descriptor is not registered under a diffusion model's name, nor a model under a descriptor's.
    clash = lite_client.post("/api/models", headers=headers, json={"run_id": run.id, "name": "tiny"})
    assert clash.status_code == 409 and "tiny holds diffusion models" in clash.json()["detail"]
    registered = lite_client.post("/api/models", headers=headers, json={"run_id": run.id, "name": "copy"})
    assert registered.status_code == 201, registered.text
    card = registered.json()
    assert card["ref"] == "copy@1" and card["config"]["kind"] == "descriptor" and card["images"] == 1
    assert card["checkpoint_sha256"] == hashlib.sha256(b"descriptor weights").hexdigest()
    page = lite_client.get("/models/copy/1").text
    assert "Copy descriptor card" in page and 'id="descriptor"' in page and "descriptor: copy@1" in page

    researcher = create_user(lite_session)
    call = create_call(lite_session, admin)
    mine = auth_headers(lite_session, researcher)
    body = {"title": "Crops?", "abstract": "A", "justification": "J", "requested_gpu_hours": 1.0, "submit": False}

    def plan(job_plan: dict):  # type: ignore[no-untyped-def]
        return lite_client.post(f"/api/calls/{call.id}/proposals", headers=mine, json={**body, "job_plan": job_plan})

    search_plan = plan({"kind": "replication", "model": ref, "descriptor": "copy@1"})
    assert search_plan.status_code == 201, search_plan.text
    assert search_plan.json()["job_plan"]["descriptor_sha256"] == card["checkpoint_sha256"]
    attack = plan({"kind": "extraction", "model": ref, "descriptor": "copy@1"}).json()["job_plan"]
    audit = plan({"kind": "duplication", "dataset": "skimage-samples", "descriptor": "copy@1"}).json()["job_plan"]
    assert attack["descriptor_sha256"] == audit["descriptor_sha256"] == card["checkpoint_sha256"]
    assert plan({"kind": "replication", "model": ref}).json()["job_plan"]["descriptor_sha256"] is None
    # Nobody points a job at a file by hand: a given sha256 is replaced by the named descriptor's (or none).
    forged = plan({"kind": "duplication", "dataset": "skimage-samples", "descriptor_sha256": "ab" * 32})
    assert forged.json()["job_plan"]["descriptor_sha256"] is None
    for job_plan, message in (
            ({"kind": "replication", "model": "copy@1"}, "copy@1 is a copy descriptor, not a diffusion model"),
            ({"kind": "sample", "model": "copy@1"}, "copy@1 is a copy descriptor"),
            ({"kind": "replication", "model": ref, "descriptor": ref}, f"{ref} is a diffusion model"),
            ({"kind": "extraction", "model": ref, "descriptor": "copy@7"}, "no descriptor version 'copy@7'"),
            ({"kind": "duplication", "dataset": "skimage-samples", "descriptor": "Copy"}, "job_plan")):
        refused = plan(job_plan)
        assert refused.status_code == 422 and message in refused.json()["detail"], (job_plan, refused.text)
    # The job is sent the descriptor's file with the model's and the training set's.
    _, analysis = award(lite_session, admin, create_proposal(lite_session, researcher, call, job_plan={
        "kind": "replication", "model": ref, "descriptor": "copy@1"}))
    inputs = run_inputs(lite_session, lite_session.get(Run, analysis.id))
    assert inputs["descriptor_sha256"] == card["checkpoint_sha256"] and "dataset:manifest.jsonl" in inputs
    form = lite_client.get(f"/calls/{call.id}/propose", headers=mine).text
    picker = form.split('<select name="replication.descriptor"')[1].split("</select>")[0]
    assert 'value="structure"' in picker and 'value="copy@1"' in picker
    models = form.split('<select name="replication.model"')[1].split("</select>")[0]
    assert 'value="copy@1"' not in models and f'value="{ref}"' in models


def test_marks_suggest_a_threshold_and_the_next_search_adopts_it(
        lite_client: TestClient, lite_session: Session, lite_settings, tiny_model: Path, tmp_path: Path) -> None:
    """People mark the two most copy-like pairs copies and the rest not: the report suggests the threshold between
    the second and third ratios, resting on five marks; the next search of the model version adopts it and records
    where it came from, and counts as copies exactly the samples under it."""
    from service.analyses.marks import suggest
    from service.errors import Invalid
    from service.proposals.service import validate_job_plan

    assert suggest([(0.1, 2, 0), (0.2, 1, 0), (0.3, 1, 1), (0.35, 0, 2), (0.5, 0, 1)]).ratio == 0.275
    assert suggest([(0.3, 1, 1)]) is None  # a tie is no majority
    ref, made = _model_run(lite_client, lite_session, lite_settings, tiny_model)
    inputs = local_inputs("skimage-samples", tmp_path / "package")
    results = replication_main(ReplicationConfig(model=ref, samples=5, inference_steps=2), tiny_model, inputs,
                               tmp_path / "r")
    pi = create_user(lite_session)
    _, run = award(lite_session, made["admin"], create_proposal(lite_session, pi, create_call(lite_session,
                                                                                             made["admin"])))
    run = lite_session.get(Run, run.id)
    run.job_kind, run.state, run.job_plan = "replication", RunState.succeeded, {"kind": "replication", "model": ref}
    lite_session.add(run)
    lite_session.commit()
    archive_outputs(lite_session, lite_settings, run, {name: (tmp_path / "r" / name).read_bytes()
                                                       for name in ("results.json", "report.html", "pairs.png")})
    headers = auth_headers(lite_session, pi)
    with pytest.raises(Invalid, match="no earlier search"):
        validate_job_plan(lite_session, pi, {"kind": "replication", "model": ref, "adopt_marked_threshold": True})
    shown = lite_client.get(f"/api/runs/{run.id}/pairs", headers=headers).json()["pairs"]
    by_ratio = sorted(shown, key=lambda p: p["ratio"])
    for rank, pair in enumerate(by_ratio):
        lite_client.put(f"/api/runs/{run.id}/pairs/{pair['seed']}", headers=headers,
                        json={"verdict": "copy" if rank < 2 else "not_copy"})
    expected = round((by_ratio[1]["ratio"] + by_ratio[2]["ratio"]) / 2, 6)
    report = lite_client.get(f"/api/runs/{run.id}/pairs", headers=headers).json()["suggestion"]
    assert report == {"ratio": expected, "agree": 5, "pairs": 5, "marks": 5}
    assert results["thresholds"]["ratio"] != expected  # the marks move it
    lite_session.commit()  # a fresh look at the marks the portal wrote
    pinned = validate_job_plan(lite_session, pi, {"kind": "replication", "model": ref, "samples": 5,
                                                   "inference_steps": 2, "adopt_marked_threshold": True})
    assert (pinned.ratio_threshold, pinned.threshold_from_run, pinned.threshold_marks) == (expected, run.id, 5)
    adopted = replication_main(pinned, tiny_model, inputs, tmp_path / "adopted")
    assert adopted["thresholds"]["ratio"] == expected
    assert adopted["thresholds"]["adopted"] == {"from_run": run.id, "marks": 5}
    assert adopted["summary"]["copies_by_ratio"] == sum(s["ratio"] < expected for s in adopted["samples"])
