"""marks keep their pair's distance ratio, so that the threshold people's marks suggest can be worked out

Revision ID: 0030
Revises: 0029
Create Date: 2026-12-06 05:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0030'
down_revision = '0029'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('pair_marks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ratio', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('pair_marks', schema=None) as batch_op:
        batch_op.drop_column('ratio')
