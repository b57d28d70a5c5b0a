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
        batch_op.add_column(sa.Column('team', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False,
                                      server_default=''))
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('replicas', sa.Integer(), nullable=False, server_default='0'))
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('held_outputs', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('verdict', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False,
                                      server_default=''))


    op.create_table(
        'volunteer_credits',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('machine_id', sa.Integer(), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=False),
        sa.Column('run_id', sa.Integer(), nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('gpu_seconds', sa.Integer(), nullable=False),
        sa.Column('credit', sa.Float(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['machine_id'], ['machines.id']),
        sa.ForeignKeyConstraint(['owner_id'], ['users.id']),
        sa.ForeignKeyConstraint(['run_id'], ['runs.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('run_id', 'attempt', name='uq_credit_run_attempt'),
    )
    with op.batch_alter_table('volunteer_credits', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_volunteer_credits_machine_id'), ['machine_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_volunteer_credits_owner_id'), ['owner_id'], unique=False)


def downgrade() -> None:
    op.drop_table('volunteer_credits')
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.drop_column('verdict')
        batch_op.drop_column('held_outputs')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('replicas')
    with op.batch_alter_table('machines', schema=None) as batch_op:
        batch_op.drop_column('team')
        batch_op.drop_column('wrong_results')
        batch_op.drop_column('trust')
        batch_op.drop_column('volunteer')
