"""each round's int8 update of the global weights, when they travel down that way

Revision ID: 0020
Revises: 0019
Create Date: 2026-12-05 15:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0020'
down_revision = '0019'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('training_rounds', schema=None) as batch_op:
        batch_op.add_column(sa.Column('update_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('training_rounds', schema=None) as batch_op:
        batch_op.drop_column('update_sha256')
