"""phase II: further runs on an award, sweeps, change requests

Revision ID: 0027
Revises: 0026
Create Date: 2026-12-06 02:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0027'
down_revision = '0026'
branch_labels = None
depends_on = None

TEXT = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        'change_requests',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('award_id', sa.Integer(), nullable=False),
        sa.Column('proposal_id', sa.Integer(), nullable=False),
        sa.Column('requested_by', sa.Integer(), nullable=False),
        sa.Column('job_plan', sa.JSON(), nullable=False),
        sa.Column('sweep', sa.JSON(), nullable=False),
        sa.Column('beyond', sa.JSON(), nullable=False),
        sa.Column('reason', TEXT(length=5000), nullable=False),
        sa.Column('state', sa.Enum('pending', 'approved', 'refused', name='changestate', native_enum=False,
                                   length=10), nullable=False),
        sa.Column('decided_by', sa.Integer(), nullable=True),
        sa.Column('decided_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
        sa.Column('note', TEXT(length=2000), nullable=False),
        sa.Column('run_ids', sa.JSON(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['award_id'], ['awards.id']),
        sa.ForeignKeyConstraint(['proposal_id'], ['proposals.id']),
        sa.ForeignKeyConstraint(['requested_by'], ['users.id']),
        sa.ForeignKeyConstraint(['decided_by'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('change_requests', schema=None) as batch_op:
        for column in ('award_id', 'proposal_id', 'state'):
            batch_op.create_index(batch_op.f(f'ix_change_requests_{column}'), [column], unique=False)
    with op.batch_alter_table('run_groups', schema=None) as batch_op:
        batch_op.add_column(sa.Column('field', TEXT(length=60), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('values', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('requested_by', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_runs_requested_by_users', 'users', ['requested_by'], ['id'])
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('team_run_share', sa.Float(), nullable=False, server_default='0.5'))


def downgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('team_run_share')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_runs_requested_by_users', type_='foreignkey')
        batch_op.drop_column('requested_by')
    with op.batch_alter_table('run_groups', schema=None) as batch_op:
        batch_op.drop_column('values')
        batch_op.drop_column('field')
    op.drop_table('change_requests')
