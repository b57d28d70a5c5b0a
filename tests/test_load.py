"""Under load the observatory says "busy, retry" (503 with Retry-After) at once instead of failing with a 500 or
leaving clients waiting: when its database pool is exhausted, and past a number of requests in flight."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient

from service.config import Settings
from service.db import make_engine
from web.app import create_app
from web.middleware import LoadShedding


def test_an_exhausted_pool_is_a_503_not_a_500(lite_settings: Settings, sqlite_url: str) -> None:
    engine = make_engine(sqlite_url, pool_size=1, max_overflow=0, pool_timeout_s=0.2)
    held = engine.connect()  # every connection the pool has is busy elsewhere
    try:
        with TestClient(create_app(lite_settings, engine), raise_server_exceptions=False) as client:
            api = client.get("/api/calls")
            assert api.status_code == 503 and api.headers["retry-after"] == "2"
            assert "busy" in api.json()["detail"]
            page = client.get("/calls/1")
            assert page.status_code == 503 and "busy" in page.text and page.headers["retry-after"] == "2"
    finally:
        held.close()
        engine.dispose()


def test_requests_past_the_limit_are_shed_at_once() -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def slow_app(scope, receive, send) -> None:
        started.append(scope["path"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = LoadShedding(slow_app, limit=2)

    async def request(path: str) -> int:
        statuses: list[int] = []

        async def send(message) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        async def receive():
            return {"type": "http.request", "body": b""}

        await app({"type": "http", "path": path, "headers": []}, receive, send)
        return statuses[0]

    async def scenario() -> list[int]:
        tasks = [asyncio.create_task(request(f"/r{i}")) for i in range(5)]
        await asyncio.sleep(0.05)
        shed_before_release = [t.result() for t in tasks if t.done()]
        release.set()
        results = await asyncio.gather(*tasks)
        assert shed_before_release == [503, 503, 503]  # answered while the first two were still running
        return results

    results = asyncio.run(scenario())
    assert sorted(results) == [200, 200, 503, 503, 503] and len(started) == 2
    assert app.in_flight == 0


def test_routes_run_in_no_more_threads_than_the_pool_has_connections(lite_settings: Settings, lite_engine) -> None:
    import anyio

    assert lite_settings.request_threads <= lite_settings.db_pool_size + lite_settings.db_max_overflow
    with TestClient(create_app(lite_settings, lite_engine)) as client:
        tokens = client.portal.call(lambda: anyio.to_thread.current_default_thread_limiter().total_tokens)
    assert tokens == lite_settings.request_threads
