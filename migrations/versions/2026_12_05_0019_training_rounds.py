"""rounds of runs that several nodes train together (DiLoCo), and each attempt's worker

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05 12:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'training_rounds',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column('step', sa.Integer(), nullable=False),
        sa.Column('base_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('base_momentum_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('opened_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.Column('first_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('closed_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('result_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('momentum_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column('steps', sa.Integer(), nullable=False),
        sa.Column('samples', sa.Integer(), nullable=False),
        sa.Column('bytes_in', sa.BigInteger(), nullable=False),
        sa.Column('bytes_out', sa.BigInteger(), nullable=False),
        sa.Column('loss', sa.Float(), nullable=True),
        sa.Column('live_workers', sa.Integer(), nullable=False),
        sa.Column('contributors', sa.JSON(), nullable=False),
        sa.Column('late', sa.JSON(), nullable=False),
        sa.Column('finisher_attempt_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('run_id', 'number'),
    )
    op.create_index(op.f('ix_training_rounds_run_id'), 'training_rounds', ['run_id'], unique=False)
    op.create_table(
        'round_contributions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('round', sa.Integer(), nullable=False),
        sa.Column('attempt_id', sa.Integer(), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('worker', sa.Integer(), nullable=False),
        sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('samples', sa.Integer(), nullable=False),
        sa.Column('steps', sa.Integer(), nullable=False),
        sa.Column('loss', sa.Float(), nullable=True),
        sa.Column('received_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['attempt_id'], ['run_attempts.id']),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('run_id', 'round', 'attempt_id'),
    )
    op.create_index(op.f('ix_round_contributions_run_id'), 'round_contributions', ['run_id'], unique=False)
    op.create_index(op.f('ix_round_contributions_attempt_id'), 'round_contributions', ['attempt_id'], unique=False)
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('worker', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('stop_reason', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.alter_column('worker', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.drop_column('stop_reason')
        batch_op.drop_column('worker')
    op.drop_index(op.f('ix_round_contributions_attempt_id'), table_name='round_contributions')
    op.drop_index(op.f('ix_round_contributions_run_id'), table_name='round_contributions')
    op.drop_table('round_contributions')
    op.drop_index(op.f('ix_training_rounds_run_id'), table_name='training_rounds')
    op.drop_table('training_rounds')
