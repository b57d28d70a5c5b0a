"""The password policy: long enough, and not guessable (zxcvbn's estimate, which knows common passwords,
keyboard patterns, repeats and the account's own name and address)."""

from __future__ import annotations

from zxcvbn import zxcvbn

from service.errors import Invalid

MIN_LENGTH = 10
MIN_SCORE = 3  # zxcvbn's 0-4 scale: 3 is "safely unguessable" against an online attack
ESTIMATED_LENGTH = 72  # zxcvbn refuses longer passwords: it judges their first 72 characters, the rest only adds


def check_password(password: str, *, email: str = "", name: str = "") -> None:
    """Raise Invalid, saying how to do better, for a password that is short, trivial or common."""
    if len(password.strip()) < MIN_LENGTH:
        raise Invalid(f"password: use at least {MIN_LENGTH} characters (a few unrelated words work well)")
    known = [part for part in (email, email.split("@")[0], name) if part]
    verdict = zxcvbn(password[:ESTIMATED_LENGTH], user_inputs=known)
    if verdict["score"] < MIN_SCORE:
        hint = verdict["feedback"].get("warning") or "it is too easy to guess"
        raise Invalid(f"password: {hint.rstrip('.')}; a few unrelated words work well")
