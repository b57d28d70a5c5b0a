"""dataset partitions: a dataset version cut into K clusters for a family of experts

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-05 01:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'dataset_partitions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('dataset_id', sa.Integer(), nullable=False),
        sa.Column('k', sa.Integer(), nullable=False),
        sa.Column('seed', sa.Integer(), nullable=False),
        sa.Column('digest', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column('file_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('sizes', sa.JSON(), nullable=False),
        sa.Column('licenses', sa.JSON(), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['created_by'], ['users.id']),
        sa.ForeignKeyConstraint(['dataset_id'], ['dataset_versions.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('dataset_id', 'k', 'seed', name='uq_partition_dataset_k_seed'),
        sa.UniqueConstraint('digest'),
    )
    with op.batch_alter_table('dataset_partitions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_dataset_partitions_dataset_id'), ['dataset_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('dataset_partitions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_dataset_partitions_dataset_id'))
    op.drop_table('dataset_partitions')
