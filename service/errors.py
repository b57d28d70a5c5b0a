"""Domain errors carry the HTTP status and a message a person can act on."""

from __future__ import annotations


class DomainError(Exception):
    status_code = 400

    def __init__(self, message: str, retry_after_s: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = retry_after_s


class NotFound(DomainError):
    status_code = 404


class Forbidden(DomainError):
    status_code = 403


class Conflict(DomainError):
    status_code = 409


class Invalid(DomainError):
    status_code = 422


class Unauthenticated(DomainError):
    status_code = 401


class TooManyRequests(DomainError):
    status_code = 429


class Busy(DomainError):
    status_code = 503

    def __init__(self, message: str, retry_after_s: int | None = 2) -> None:
        super().__init__(message, retry_after_s)
