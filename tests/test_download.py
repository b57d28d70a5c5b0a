"""`observatory download`: a data product's files from a live portal, resumed after being killed, verified by
sha256, refused when their bytes do not match, and refused while still exclusive to their team."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from observatory.download import DownloadError, parse_rate, parse_ref
from service.config import Settings
from service.models import Award, Role, Run, RunState
from service.timeutil import utcnow
from tests.factories import archive_outputs, auth_headers, award, create_call, create_proposal, create_user
from tests.live import live_server

ROOT = Path(__file__).resolve().parent.parent
WEIGHTS = os.urandom(3 << 20)  # 3 MiB: long enough to stop halfway at a limited rate


def _run_with_outputs(session: Session, settings: Settings, *, public: bool) -> tuple[Run, dict[str, str]]:
    admin, pi = create_user(session, Role.admin), create_user(session)
    _, run = award(session, admin, create_proposal(session, pi, create_call(session, admin)))
    run = session.get(Run, run.id)
    run.state = RunState.succeeded
    session.add(run)
    archive_outputs(session, settings, run, {"checkpoint.pt": WEIGHTS, "metrics.json": b'{"final_loss": 0.1}'})
    if public:
        granted = session.get(Award, run.award_id)
        granted.exclusive_until = utcnow() - timedelta(seconds=1)
        session.add(granted)
    session.commit()
    return run, auth_headers(session, pi)


def _download(url: str, ref: str, folder: Path, *extra: str, token: str | None = None) -> subprocess.Popen:
    env = {**os.environ, "OBSERVATORY_PORTAL_URL": url}
    env.pop("OBSERVATORY_API_TOKEN", None)
    if token:
        env["OBSERVATORY_API_TOKEN"] = token
    return subprocess.Popen([sys.executable, "-m", "observatory", "download", ref, "--to", str(folder), *extra],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(process: subprocess.Popen) -> tuple[int, str]:
    output, _ = process.communicate(timeout=300)
    return process.returncode, " ".join(output.split())


def test_a_download_killed_halfway_resumes_and_every_file_is_verified(lite_engine: Engine, lite_session: Session,
                                                                     lite_settings: Settings,
                                                                     tmp_path: Path) -> None:
    run, _ = _run_with_outputs(lite_session, lite_settings, public=True)
    folder = tmp_path / "product"
    with live_server(lite_settings, lite_engine) as url:
        first = _download(url, f"obs:run/{run.id}", folder, "--limit-rate", "256k")
        part = folder / "checkpoint.pt.part"
        deadline = time.monotonic() + 120
        while not (part.is_file() and part.stat().st_size > 512 << 10):
            assert time.monotonic() < deadline and first.poll() is None, _finish(first)[1]
            time.sleep(0.1)
        first.send_signal(signal.SIGKILL)  # killed halfway, as a laptop closed or a link cut
        first.wait()
        kept = part.stat().st_size
        assert 0 < kept < len(WEIGHTS) and not (folder / "checkpoint.pt").exists()
        code, said = _finish(_download(url, f"obs:run/{run.id}", folder))
        assert code == 0, said
        assert f"checkpoint.pt: resuming at {kept}" in said and "every sha256 verified" in said
        assert (folder / "checkpoint.pt").read_bytes() == WEIGHTS and not part.exists()
        assert (folder / "checkpoint.pt").stat().st_mode & 0o077 == 0  # private from creation
        # Everything the run lists, each matching its digest; a third run fetches nothing again.
        manifest = (folder / "manifest.json").read_text()
        assert hashlib.sha256(WEIGHTS).hexdigest() in manifest
        code, said = _finish(_download(url, f"obs:run/{run.id}", folder))
        assert code == 0 and "checkpoint.pt: already here, verified" in said, said


def test_bytes_that_do_not_match_are_refused_and_nothing_is_kept(lite_engine: Engine, lite_session: Session,
                                                                 lite_settings: Settings, tmp_path: Path) -> None:
    run, _ = _run_with_outputs(lite_session, lite_settings, public=True)
    folder = tmp_path / "product"
    folder.mkdir()
    (folder / "checkpoint.pt.part").write_bytes(b"not what the portal holds" * 40)  # a corrupted partial file
    with live_server(lite_settings, lite_engine) as url:
        code, said = _finish(_download(url, f"obs:run/{run.id}", folder))
        assert code == 2 and "checkpoint.pt: its bytes do not hash to the listed sha256" in said, said
        assert not (folder / "checkpoint.pt").exists() and not (folder / "checkpoint.pt.part").exists()
        code, said = _finish(_download(url, f"obs:run/{run.id}", folder))  # again: fetched afresh
        assert code == 0 and (folder / "checkpoint.pt").read_bytes() == WEIGHTS, said


def test_files_still_exclusive_are_refused_without_a_team_members_token(lite_engine: Engine, lite_session: Session,
                                                                        lite_settings: Settings,
                                                                        tmp_path: Path) -> None:
    run, pi = _run_with_outputs(lite_session, lite_settings, public=False)
    with live_server(lite_settings, lite_engine) as url:
        code, said = _finish(_download(url, f"obs:run/{run.id}", tmp_path / "a"))
        assert code == 2 and f"(404): no outputs of run {run.id} that you may read" in said, said
        assert not any((tmp_path / "a").glob("*.pt"))
        token = pi["Authorization"].removeprefix("Bearer ")
        code, said = _finish(_download(url, f"obs:run/{run.id}", tmp_path / "b", token=token))
        assert code == 0 and (tmp_path / "b" / "checkpoint.pt").read_bytes() == WEIGHTS, said


def test_identifiers_and_rates_are_checked() -> None:
    assert parse_ref("obs:run/12") == ("run", "12")
    assert parse_ref("obs:model/commons-trees@3") == ("model", "commons-trees@3")
    assert parse_ref("obs:dataset/sha256:" + "a" * 64)[0] == "dataset"
    for bad in ("run/12", "obs:run/x", "obs:model/Trees", "obs:thing/1", "obs:run/1/../2"):
        with pytest.raises(DownloadError):
            parse_ref(bad)
    assert parse_rate("500k") == 500 * 1024 and parse_rate(None) is None
    for bad in ("fast", "10", "-2M"):
        with pytest.raises(DownloadError):
            parse_rate(bad)


def test_a_model_version_and_a_dataset_version_download_by_their_identifiers(
        lite_engine: Engine, lite_session: Session, lite_settings: Settings, lite_client, tmp_path: Path) -> None:  # noqa: ANN001
    from jobs.config import TrainConfig
    from jobs.train import main as train_main
    from service.models import Award as AwardRow
    from tests.factories import TINY_TRAIN, registered_model

    train_main(TrainConfig.model_validate(TINY_TRAIN), tmp_path / "trained")
    checkpoint = (tmp_path / "trained" / "checkpoint.pt").read_bytes()
    admin = create_user(lite_session, Role.admin)
    ref, run = registered_model(lite_client, lite_session, lite_settings, admin, checkpoint, dict(TINY_TRAIN))
    granted = lite_session.get(AwardRow, run.award_id)
    granted.exclusive_until = utcnow() - timedelta(seconds=1)
    lite_session.add(granted)
    lite_session.commit()
    card = lite_client.get(f"/api/models/{ref.replace('@', '/')}").json()
    dataset = lite_client.get(f"/api/datasets/{card['dataset']}").json()
    with live_server(lite_settings, lite_engine) as url:
        code, said = _finish(_download(url, f"obs:model/{ref}", tmp_path / "model"))
        assert code == 0, said
        assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["README.md", "attribution.json",
                                                                          "checkpoint.pt"]
        assert (tmp_path / "model" / "README.md").read_text().startswith("---\nlicense: other\n")
        assert (tmp_path / "model" / "checkpoint.pt").read_bytes() == checkpoint
        code, said = _finish(_download(url, f"obs:dataset/{card['dataset']}", tmp_path / "data"))
        assert code == 0, said
        for listed in dataset["files"]:
            got = (tmp_path / "data" / listed["name"]).read_bytes()
            assert hashlib.sha256(got).hexdigest() == listed["sha256"]
        code, said = _finish(_download(url, "obs:model/nothing-here@1", tmp_path / "none"))
        assert code == 2 and "(404)" in said, said
