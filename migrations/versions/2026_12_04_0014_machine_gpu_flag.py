"""machines keep the GPU model of their first join; a later join that reports another is flagged

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04 22:15:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('machines', schema=None) as batch_op:
        batch_op.add_column(sa.Column('first_gpu_model', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True))
        batch_op.add_column(sa.Column('gpu_flag', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False,
                                      server_default=''))
    with op.batch_alter_table('machines', schema=None) as batch_op:
        batch_op.alter_column('gpu_flag', server_default=None)
    op.execute("UPDATE machines SET first_gpu_model = gpu_model WHERE measured_at IS NOT NULL")


def downgrade() -> None:
    with op.batch_alter_table('machines', schema=None) as batch_op:
        batch_op.drop_column('gpu_flag')
        batch_op.drop_column('first_gpu_model')
