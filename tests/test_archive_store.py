"""One storage interface, two stores: the local folder and an S3-compatible bucket (a real S3 server process)."""

from __future__ import annotations

import hashlib
import io
import stat
from collections.abc import Iterator

import httpx
import pytest

from service.archive.service import store_for
from service.archive.store import ArchiveStore, LocalStore
from tests.s3 import s3_server


@pytest.fixture(params=["local", "s3"])
def store(request, lite_settings) -> Iterator[ArchiveStore]:
    if request.param == "local":
        yield store_for(lite_settings)
        return
    with s3_server() as s3:
        yield store_for(lite_settings.model_copy(update=s3))


def test_put_stream_exists_size_range(store: ArchiveStore) -> None:
    data = bytes(range(256)) * 5000
    sha, size = store.put(io.BytesIO(data))
    assert (sha, size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert store.put(io.BytesIO(data)) == (sha, size)  # written once, named by its digest
    assert store.exists(sha) and store.size(sha) == len(data) and not store.exists("0" * 64)
    assert b"".join(store.open_range(sha)) == data
    assert b"".join(store.open_range(sha, 1000, 1999)) == data[1000:2000]
    with pytest.raises(ValueError, match="larger than 10 bytes"):
        store.put(io.BytesIO(data), limit=10)
    with pytest.raises(ValueError, match="not a sha256"):
        store.exists("../../secret_key")


def test_objects_are_listed_put_again_anew_and_deleted(store: ArchiveStore) -> None:
    import time

    data = b"an output sent twice"
    sha, _ = store.put(io.BytesIO(data))
    listed = {name: (size, written) for name, size, written in store.objects()}
    assert listed[sha][0] == len(data)
    time.sleep(1.1)
    store.put(io.BytesIO(data))  # the same bytes again: the object is marked as written now
    again = {name: written for name, _, written in store.objects()}
    assert again[sha] > listed[sha][1]
    store.delete(sha)
    store.delete(sha)  # gone already: nothing happens
    assert not store.exists(sha) and sha not in {name for name, _, _ in store.objects()}


def test_an_unreachable_bucket_is_an_outage_not_a_crash(lite_settings) -> None:
    from service.archive.store import ArchiveUnavailable
    from tests.live import free_port

    down = store_for(lite_settings.model_copy(update={
        "archive_store": "s3", "s3_bucket": "archive", "s3_endpoint_url": f"http://127.0.0.1:{free_port()}",
        "s3_access_key_id": "k", "s3_secret_access_key": "s"}))
    for call in (lambda: down.exists("0" * 64), lambda: down.put(io.BytesIO(b"x")), lambda: list(down.objects()),
                 lambda: down.delete("0" * 64)):
        with pytest.raises(ArchiveUnavailable, match="cannot be reached"):
            call()


def test_presign_serves_the_object_without_the_observatory(store: ArchiveStore) -> None:
    sha, _ = store.put(io.BytesIO(b"checkpoint bytes"))
    url = store.presign(sha, expires_s=60)
    if isinstance(store, LocalStore):
        assert url is None  # the local folder has no URL of its own: the observatory serves it
        assert stat.S_IMODE(store.local_path(sha).stat().st_mode) == 0o600
    else:
        assert httpx.get(url).content == b"checkpoint bytes"
        assert "X-Amz-Signature=" in url and "X-Amz-Expires=60" in url


def test_downloads_from_a_bucket_support_ranges(lite_session, lite_settings, lite_engine) -> None:
    from fastapi.testclient import TestClient

    from service.models import Role, Run
    from tests.factories import archive_outputs, auth_headers, award, create_call, create_proposal, create_user
    from web.app import create_app

    with s3_server() as s3:
        settings = lite_settings.model_copy(update=s3)
        admin, pi = create_user(lite_session, Role.admin), create_user(lite_session)
        _, run = award(lite_session, admin, create_proposal(lite_session, pi, create_call(lite_session, admin)))
        data = b"\x89PNG\r\n\x1a\n" + bytes(range(200))
        archive_outputs(lite_session, settings, lite_session.get(Run, run.id), {"samples.png": data})
        with TestClient(create_app(settings, lite_engine)) as client:
            headers = auth_headers(lite_session, pi)
            url = f"/api/runs/{run.id}/artifacts/samples.png"
            whole = client.get(url, headers=headers)
            assert whole.status_code == 200 and whole.content == data
            assert whole.headers["content-disposition"].startswith("inline")
            part = client.get(url, headers={**headers, "Range": "bytes=8-17"})
            assert part.status_code == 206 and part.content == data[8:18]
            assert part.headers["content-range"] == f"bytes 8-17/{len(data)}"
            assert client.get(url, headers={**headers, "Range": "bytes=999-"}).status_code == 416
