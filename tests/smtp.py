"""A real SMTP server for the tests: aiosmtpd on loopback, keeping what it receives."""

from __future__ import annotations

from email import message_from_bytes
from email.policy import default


class Inbox:
    """An aiosmtpd handler that keeps every message it receives, parsed."""

    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(message_from_bytes(envelope.content, policy=default))
        return "250 OK"
