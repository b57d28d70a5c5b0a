"""Column types shared by the tables."""

from __future__ import annotations

from enum import Enum

from sqlalchemy import Enum as SAEnum


def enum_column(enum: type[Enum], length: int) -> SAEnum:
    """A VARCHAR holding the enum's value (no database enum type), read back as the enum member."""
    return SAEnum(enum, native_enum=False, length=length, create_constraint=False,
                  values_callable=lambda members: [member.value for member in members])
