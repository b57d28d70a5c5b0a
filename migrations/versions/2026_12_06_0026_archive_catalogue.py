"""the archive's catalogue of data products, DOIs on model and dataset versions, storage quotas, checkpoint sizes

Revision ID: 0026
Revises: 0025
Create Date: 2026-12-06 01:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0026'
down_revision = '0025'
branch_labels = None
depends_on = None

TEXT = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        'archive_products',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('ref', TEXT(length=220), nullable=False),
        sa.Column('kind', TEXT(length=10), nullable=False),
        sa.Column('job_kind', TEXT(length=40), nullable=False),
        sa.Column('title', TEXT(length=400), nullable=False),
        sa.Column('proposal_id', sa.Integer(), nullable=True),
        sa.Column('call_id', sa.Integer(), nullable=True),
        sa.Column('cycle_id', sa.Integer(), nullable=True),
        sa.Column('model', TEXT(length=120), nullable=False),
        sa.Column('dataset', TEXT(length=120), nullable=False),
        sa.Column('license', TEXT(length=20), nullable=False),
        sa.Column('text', TEXT(length=2000), nullable=False),
        sa.Column('url', TEXT(length=300), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=True),
        sa.Column('thumbnail', sa.Boolean(), nullable=False),
        sa.Column('public_from', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('made_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['proposal_id'], ['proposals.id']),
        sa.ForeignKeyConstraint(['call_id'], ['calls.id']),
        sa.ForeignKeyConstraint(['cycle_id'], ['cycles.id']),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('ref'),
    )
    with op.batch_alter_table('archive_products', schema=None) as batch_op:
        for column in ('kind', 'job_kind', 'proposal_id', 'call_id', 'cycle_id', 'model', 'dataset', 'license'):
            batch_op.create_index(batch_op.f(f'ix_archive_products_{column}'), [column], unique=False)
        batch_op.create_index('ix_archive_products_made_at_id', ['made_at', 'id'], unique=False)
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('doi', TEXT(length=200), nullable=False, server_default=''))
    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('doi', TEXT(length=200), nullable=False, server_default=''))
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('storage_quota_gb', sa.Float(), nullable=True))
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('checkpoint_size', sa.BigInteger(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.drop_column('checkpoint_size')
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('storage_quota_gb')
    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.drop_column('doi')
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_column('doi')
    op.drop_table('archive_products')
