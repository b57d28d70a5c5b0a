"""a volunteer's training: the states it shipped, the segments chosen to check it, and the checks

Revision ID: 0022
Revises: 0021
Create Date: 2026-12-05 21:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0022'
down_revision = '0021'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('held_checkpoints', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('segments', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('segment_check', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.drop_column('segment_check')
        batch_op.drop_column('segments')
        batch_op.drop_column('held_checkpoints')
