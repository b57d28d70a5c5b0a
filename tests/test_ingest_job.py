"""The `ingest` job kind: a Commons ingest as a pool job (classes from categories, stop and resume on another node
without downloading anything twice) and the registration of its package, which takes nothing on trust."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from sqlmodel import Session, select

from jobs import ingest as ingest_job
from jobs.commons.client import CommonsClient
from jobs.config import IngestConfig, parse_job_plan
from jobs.package import write_tar
from service.datasets.service import register_from_run
from service.errors import Invalid
from service.models import Proposal, Role, Run
from tests.commons_server import fake_commons
from tests.factories import archive_outputs, award, create_call, create_proposal, create_user

UA = "CommonsObservatoryTests/0.2 (ops@observatory.example)"
PLAN = {"kind": "ingest", "name": "commons-test", "categories": ["Test images"], "resolution": 16,
        "blocklist": ["Edvard Munch"]}


class Counting(CommonsClient):
    """Counts downloads per URL, and asks the job to stop (as SIGTERM would) at its n-th one."""

    def __init__(self, *args, stop_at: int | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.stop_at, self.downloads = stop_at, []

    def fetch(self, url: str) -> bytes:
        self.downloads.append(url)
        if len(self.downloads) == self.stop_at:
            ingest_job._stop["asked"] = True
        return super().fetch(url)


@pytest.fixture(autouse=True)
def _no_stop_left_over():
    ingest_job._stop["asked"] = False
    yield
    ingest_job._stop["asked"] = False


def _client(url: str, **kwargs) -> Counting:
    return Counting(url, user_agent=UA, min_interval_s=0, sleep=lambda s: None, thumb_width=32, **kwargs)


def test_a_stopped_ingest_resumes_on_another_node_without_downloading_twice(tmp_path: Path) -> None:
    cfg = IngestConfig.model_validate(PLAN)
    with fake_commons() as (_, url, _):
        straight = _client(url)
        assert ingest_job.main(cfg, tmp_path / "straight", straight)
        stopping = _client(url, stop_at=3)
        assert not ingest_job.main(cfg, tmp_path / "first", stopping)
        assert not (tmp_path / "first" / "dataset.tar").exists() and (tmp_path / "first" / "state.pt").exists()
        # Another node gets only the shipped state, as the runner hands it over.
        (tmp_path / "second").mkdir()
        shutil.copyfile(tmp_path / "first" / "state.pt", tmp_path / "second" / "state.pt")
        ingest_job._stop["asked"] = False
        resumed = _client(url)
        assert ingest_job.main(cfg, tmp_path / "second", resumed)
    assert sorted(stopping.downloads + resumed.downloads) == sorted(straight.downloads)
    assert not set(stopping.downloads) & set(resumed.downloads)
    straight_json = json.loads((tmp_path / "straight" / "dataset.json").read_text())
    resumed_json = json.loads((tmp_path / "second" / "dataset.json").read_text())
    assert resumed_json["digest"] == straight_json["digest"] and resumed_json["images"] == 5
    assert _members(tmp_path / "second" / "dataset.tar") == _members(tmp_path / "straight" / "dataset.tar")
    declared = json.loads((tmp_path / "second" / "outputs.json").read_text())
    assert {d["name"] for d in declared["outputs"]} == {"dataset.tar", "dataset.json", "attribution.txt"}
    assert not (tmp_path / "second" / "state.pt").exists()


def _members(package: Path) -> dict[str, object]:
    """A package's files, its manifest without the retrieval times (which differ between fetches)."""
    with tarfile.open(package) as tar:
        members: dict[str, object] = {m.name: tar.extractfile(m).read() for m in tar}
    members["manifest.jsonl"] = [{k: v for k, v in json.loads(line).items() if k != "retrieved_at"}
                                 for line in members["manifest.jsonl"].splitlines()]
    return members


def test_several_categories_become_the_dataset_s_classes(tmp_path: Path) -> None:
    cfg = IngestConfig.model_validate({**PLAN, "categories": ["Trees", "Towns"]})
    with fake_commons() as (fake, url, _):
        fake.categories = {"Category:Trees": [0, 2, 11], "Category:Towns": [1, 2, 6]}  # Lone tree is in both
        assert ingest_job.main(cfg, tmp_path, _client(url))
    described = json.loads((tmp_path / "dataset.json").read_text())
    assert described["classes"] == ["Trees", "Towns"]
    with tarfile.open(tmp_path / "dataset.tar") as tar:
        manifest = [json.loads(line) for line in tar.extractfile("manifest.jsonl").read().splitlines()]
    assert {r["title"]: r["class"] for r in manifest} == {
        "File:Volcano.png": "Trees", "File:Lone tree.png": "Trees", "File:Harbour.png": "Trees",
        "File:Heidelberg street.png": "Towns", "File:Small original.png": "Towns"}


def test_an_ingest_plan_names_one_source() -> None:
    for plan, message in [({"categories": []}, "exactly one source"),
                          ({"search": "trees"}, "exactly one source"),
                          ({"categories": ["A", "A"]}, "named twice"),
                          ({"licenses": ["cc-by-nc"]}, "licenses"),
                          ({"name": "Bad Name"}, "name")]:
        with pytest.raises(ValueError, match=message):
            parse_job_plan({**PLAN, **plan})


def _ingest_run(session: Session, settings, files: dict[str, bytes]) -> Run:
    admin = create_user(session, Role.admin)
    _, run = award(session, admin, create_proposal(session, create_user(session), create_call(session, admin),
                                                   job_plan=PLAN))
    run = session.get(Run, run.id)
    archive_outputs(session, settings, run, files)
    return run


def _outputs(tmp_path: Path) -> dict[str, bytes]:
    with fake_commons() as (_, url, _):
        assert ingest_job.main(IngestConfig.model_validate(PLAN), tmp_path, _client(url))
    return {name: (tmp_path / name).read_bytes() for name in ("dataset.tar", "dataset.json", "attribution.txt")}


def test_an_ingest_run_s_package_is_registered_by_its_pi(lite_session: Session, lite_settings,
                                                         tmp_path: Path) -> None:
    run = _ingest_run(lite_session, lite_settings, _outputs(tmp_path))
    version = register_from_run(lite_session, _store(lite_settings), run)
    assert (version.name, version.version, version.images, version.run_id) == ("commons-test", 1, 5, run.id)
    assert version.origin == "Wikimedia Commons"
    assert version.created_by == lite_session.get(Proposal, run.proposal_id).pi_id
    assert version.licenses == {"Public domain": 2, "CC BY-SA 3.0 de": 1, "CC BY-SA 4.0": 2}
    assert "PtrQs" in version.authors


def _store(settings):
    from service.archive.service import store_for

    return store_for(settings)


def _repacked(package: bytes, change, out: Path) -> bytes:  # type: ignore[no-untyped-def]
    with tarfile.open(fileobj=io.BytesIO(package)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    write_tar(out, list(change(members).items()))
    return out.read_bytes()


def _swapped_image(shard: bytes) -> bytes:
    """The shard with its first image's bytes replaced by its second's."""
    with tarfile.open(fileobj=io.BytesIO(shard)) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [(members[0][0], members[1][1]), *members[1:]]:
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    return out.getvalue()


def _tampered_manifest(members: dict[str, bytes]) -> dict[str, bytes]:
    lines = members["manifest.jsonl"].decode().splitlines()
    first = json.loads(lines[0])
    first["license"] = "CC0"  # a license the file never had
    return {**members, "manifest.jsonl": ("\n".join([json.dumps(first, sort_keys=True), *lines[1:]]) + "\n").encode()}


@pytest.mark.parametrize(("change", "message"), [
    (_tampered_manifest, "does not have the digest"),
    (lambda m: {**m, "shard-00000.tar": _swapped_image(m["shard-00000.tar"])}, "does not match its manifest"),
    (lambda m: {**m, "../escape": b"x"}, "not a package file"),
    (lambda m: {k: v for k, v in m.items() if k != "attribution.txt"}, "incomplete: attribution.txt"),
    (lambda m: {**m, "dataset.json": json.dumps({**json.loads(m["dataset.json"]), "name": "other"}).encode()},
     "named 'other', not 'commons-test'"),
])
def test_a_package_that_does_not_check_out_is_refused(lite_session: Session, lite_settings, tmp_path: Path,
                                                      change, message) -> None:
    files = _outputs(tmp_path)
    files["dataset.tar"] = _repacked(files["dataset.tar"], change, tmp_path / "repacked.tar")
    run = _ingest_run(lite_session, lite_settings, files)
    with pytest.raises(Invalid, match=message):
        register_from_run(lite_session, _store(lite_settings), run)


def _gzipped(members: dict[str, bytes], extra: tuple[str, int] | None = None) -> bytes:
    """The package as a gzip-compressed tar, with an `extra` member of that many zero bytes (a bomb: 64 MB of
    zeros compress to about 64 KB)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        items = list(members.items()) + ([(extra[0], b"\0" * extra[1])] if extra else [])
        for name, data in items:
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            tar.addfile(entry, io.BytesIO(data))
    return out.getvalue()


def test_a_compressed_package_is_refused_before_anything_is_expanded(lite_session: Session, lite_settings,
                                                                     tmp_path: Path, monkeypatch) -> None:
    """A pool node's dataset.tar is untrusted: a gzip bomb is refused by its first bytes, and nothing of it is
    decompressed (tarfile is never asked to read a member)."""
    files = _outputs(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(files["dataset.tar"])) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar}
    files["dataset.tar"] = _gzipped(members, ("zeros.bin", 64 << 20))
    assert len(files["dataset.tar"]) < 1 << 20
    run = _ingest_run(lite_session, lite_settings, files)
    read = {"bytes": 0}
    real_extract = tarfile.TarFile.extractfile

    def counted(self, member):  # type: ignore[no-untyped-def]
        read["bytes"] += member.size if isinstance(member, tarfile.TarInfo) else 0
        return real_extract(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", counted)
    with pytest.raises(Invalid, match="gzip-compressed; only plain tar files are taken"):
        register_from_run(lite_session, _store(lite_settings), run)
    assert read["bytes"] == 0


def test_a_shard_that_is_compressed_or_holds_an_oversized_image_is_refused(lite_session: Session, lite_settings,
                                                                          tmp_path: Path, monkeypatch) -> None:
    import jobs.package

    files = _outputs(tmp_path)
    gz = _repacked(files["dataset.tar"], lambda m: {**m, "shard-00000.tar": _gzipped(
        {n: d for n, d in _members_of(m["shard-00000.tar"]).items()})}, tmp_path / "gz.tar")
    with pytest.raises(Invalid, match="shard-00000.tar is gzip-compressed"):
        register_from_run(lite_session, _store(lite_settings), _ingest_run(lite_session, lite_settings,
                                                                           {**files, "dataset.tar": gz}))
    monkeypatch.setattr(jobs.package, "MAX_IMAGE_BYTES", 100)  # every image of the set is larger than this
    with pytest.raises(Invalid, match="over the 100 an image may have"):
        register_from_run(lite_session, _store(lite_settings), _ingest_run(lite_session, lite_settings, files))


def _members_of(tar_bytes: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}


def test_an_ingest_asks_the_pool_for_a_cpu_and_is_told_where_commons_is(lite_engine, lite_session: Session,
                                                                         lite_settings) -> None:
    """On a GPU pool, a node whose GPU is busy training still takes an ingest: it needs a CPU core, not a GPU."""
    from scheduler.loop import Scheduler
    from service.pool.standing import labels_for
    from tests.factories import create_machine
    from tests.pools import ScriptedPool

    admin = create_user(lite_session, Role.admin)
    machine, _ = create_machine(lite_session, create_user(lite_session), admin, gpu_model="GeForce GTX 1080 Ti",
                                gpu_count=1, vram_gb=11, cpus=4)

    class OneGpuMachine(ScriptedPool):
        def nodes(self):  # type: ignore[no-untyped-def]
            return [{"node_id": "attic", "state": "ALIVE", "labels": labels_for(machine),
                     "resources_total": {"CPU": 4, "GPU": 1}}]

    settings = lite_settings.model_copy(update={
        "gpus_per_run": 1, "commons_api_url": "http://commons.test/w/api.php",
        "commons_contact": "ops@observatory.example", "commons_min_interval_s": 2.0})
    pool = OneGpuMachine()
    call = create_call(lite_session, admin, capacity=10)
    award(lite_session, admin, create_proposal(lite_session, create_user(lite_session), call))
    scheduler = Scheduler(lite_engine, settings, pool)
    assert scheduler.dispatch() == 1 and pool.requests[0].num_gpus == 1  # the GPU is now busy
    award(lite_session, admin, create_proposal(lite_session, create_user(lite_session), call))
    award(lite_session, admin, create_proposal(lite_session, create_user(lite_session), call, job_plan=PLAN))
    assert scheduler.dispatch() == 1  # the second train run waits for the GPU; the ingest starts
    ingest = pool.requests[1]
    assert (ingest.num_gpus, ingest.num_cpus) == (0, 1.0)
    assert ingest.env["OBSERVATORY_COMMONS_API_URL"] == "http://commons.test/w/api.php"
    assert ingest.env["OBSERVATORY_COMMONS_CONTACT"] == "ops@observatory.example"
    assert ingest.env["OBSERVATORY_COMMONS_MIN_INTERVAL_S"] == "2.0"
    assert ingest.env["OBSERVATORY_COMMONS_FILE_HOSTS"] == "upload.wikimedia.org"
    assert "OBSERVATORY_COMMONS_CONTACT" not in pool.requests[0].env


def test_a_finished_ingest_is_checked_with_no_transaction_open_then_registered(
        lite_engine, lite_session: Session, lite_settings, lite_client, tmp_path: Path, monkeypatch) -> None:
    """The scheduler checks a finished ingest's package (every image against its checksum: minutes for a big
    one) before it opens the transaction that ends the run, so the database stays writable meanwhile; the run
    then registers the version in a few rows."""
    from scheduler.loop import Scheduler
    from scheduler.ray_backend import JobState
    from service.audit.service import record
    from service.datasets import service as datasets
    from tests.pools import FakeJob, ScriptedPool

    admin = create_user(lite_session, Role.admin)
    call = create_call(lite_session, admin, capacity=10)
    award(lite_session, admin, create_proposal(lite_session, create_user(lite_session), call, job_plan=PLAN))
    pool = ScriptedPool()
    scheduler = Scheduler(lite_engine, lite_settings.model_copy(update={"gpus_per_run": 0}), pool)
    assert scheduler.dispatch() == 1
    job = FakeJob(lite_client, pool.token())
    job.start()
    job.outputs(_outputs(tmp_path))
    job.end(0)
    pool.set(pool.submitted[0], JobState.succeeded, exit_code=0)
    checked_while = []
    real_check = datasets.check_run_package

    def check_and_write_meanwhile(store, run, sha):  # type: ignore[no-untyped-def]
        with Session(lite_engine) as other:  # someone else writes while the package is being checked
            record(other, None, "test.meanwhile", "none")
            other.commit()
        checked_while.append(run.id)
        return real_check(store, run, sha)

    monkeypatch.setattr(datasets, "check_run_package", check_and_write_meanwhile)
    assert scheduler.reconcile() == 1
    run = lite_session.exec(select(Run).where(Run.job_kind == "ingest")).one()
    lite_session.refresh(run)
    assert checked_while == [run.id]
    assert run.state == "succeeded" and run.message.endswith("registered as dataset commons-test@1")
