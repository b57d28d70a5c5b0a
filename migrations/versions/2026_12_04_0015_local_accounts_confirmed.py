"""self-made accounts confirm their address by a link; the local accounts made before this are taken as confirmed

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04 22:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0015'
down_revision = '0014'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.get_bind().execute(sa.text("UPDATE users SET email_verified = :yes WHERE password_hash IS NOT NULL"),
                          {"yes": True})


def downgrade() -> None:
    op.get_bind().execute(sa.text("DELETE FROM api_tokens WHERE kind = 'verify'"))
