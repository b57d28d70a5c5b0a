"""finish failures counted per attempt (once per tick interval), not per run and scheduler; each attempt's uploads;
artifact sizes past 2 GiB

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-04 21:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('finish_failures', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('finish_failed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('output_sends', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('uploaded_bytes', sa.BigInteger(), nullable=False, server_default='0'))
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        for column in ('finish_failures', 'output_sends', 'uploaded_bytes'):
            batch_op.alter_column(column, server_default=None)
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('finish_failures')
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.alter_column('size', existing_type=sa.Integer(), type_=sa.BigInteger(), existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.alter_column('size', existing_type=sa.BigInteger(), type_=sa.Integer(), existing_nullable=False)
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('finish_failures', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.drop_column('uploaded_bytes')
        batch_op.drop_column('output_sends')
        batch_op.drop_column('finish_failed_at')
        batch_op.drop_column('finish_failures')
