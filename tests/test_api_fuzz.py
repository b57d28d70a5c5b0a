"""Schemathesis fuzzes every JSON API operation from the OpenAPI schema, on SQLite and PostgreSQL, as an
anonymous caller, a researcher and an admin: whatever it sends, the answer is never a 5xx."""

from __future__ import annotations

import os

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from sqlmodel import Session

from service.config import Settings
from service.models import Role, Run, User
from tests.factories import archive_outputs, auth_headers, award, create_call, create_proposal, create_user

# A longer campaign: OBSERVATORY_FUZZ_EXAMPLES=200 (the suite keeps to a few minutes with 15).
EXAMPLES_PER_OPERATION = int(os.environ.get("OBSERVATORY_FUZZ_EXAMPLES", "15"))


def _world(session: Session, settings: Settings) -> dict[str, User | None]:
    """A call, proposals (one awarded, with outputs; one a draft) and people; returns the callers."""
    admin, researcher = create_user(session, Role.admin), create_user(session)
    call = create_call(session, admin, capacity=100)
    _, run = award(session, admin, create_proposal(session, researcher, call))
    create_proposal(session, researcher, call, submit=False)
    archive_outputs(session, settings, session.get(Run, run.id), {"samples.png": b"\x89PNG\r\n\x1a\n"})
    return {"anonymous": None, "researcher": researcher, "admin": admin}


def test_no_input_gets_a_server_error(client: TestClient, session: Session, settings: Settings) -> None:
    callers = _world(session, settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20

    for operation in operations:
        @given(case=operation.as_strategy())
        @hypothesis_settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True, database=None,
                             suppress_health_check=list(HealthCheck))
        def fuzz(case) -> None:
            for who, user in callers.items():
                # A fresh token each time: a fuzzed sign-out revokes the one it was sent with.
                response = case.call(headers=auth_headers(session, user) if user else {})
                if response.status_code >= 500:
                    failures.append(f"{who}: {case.method} {case.formatted_path} {case.body!r:.200} -> "
                                    f"{response.status_code} {response.text[:200]}")

        fuzz()
    print(f"fuzzed {len(operations)} operations, {EXAMPLES_PER_OPERATION} cases each, as {len(callers)} callers: "
          f"{len(failures)} server errors")
    assert failures == []
