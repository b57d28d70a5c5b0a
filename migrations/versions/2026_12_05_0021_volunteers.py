"""volunteers' machines, their trust, and results held until validated

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-05 18:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0021'
down_revision = '0020'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('machines', schema=None) as batch_op:
        batch_op.add_column(sa.Column('volunteer', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column('trust', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('wrong_results', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('replicas', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('held_outputs', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('verdict', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False,
                                      server_default=''))


def downgrade() -> None:
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.drop_column('verdict')
        batch_op.drop_column('held_outputs')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('replicas')
    with op.batch_alter_table('machines', schema=None) as batch_op:
        batch_op.drop_column('wrong_results')
        batch_op.drop_column('trust')
        batch_op.drop_column('volunteer')
