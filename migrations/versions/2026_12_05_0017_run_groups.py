"""run groups: an award's family of experts and their router, each an ordinary run; a family model version

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-05 01:25:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'run_groups',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('award_id', sa.Integer(), nullable=False),
        sa.Column('proposal_id', sa.Integer(), nullable=False),
        sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column('k', sa.Integer(), nullable=False),
        sa.Column('partition', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column('dataset', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=False),
        sa.Column('replaces_id', sa.Integer(), nullable=True),
        sa.Column('kept', sa.JSON(), server_default='{}', nullable=False),
        sa.Column('requested_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['award_id'], ['awards.id']),
        sa.ForeignKeyConstraint(['proposal_id'], ['proposals.id']),
        sa.ForeignKeyConstraint(['requested_by'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('run_groups', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_run_groups_award_id'), ['award_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_run_groups_proposal_id'), ['proposal_id'], unique=False)
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('group_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_runs_group_id'), ['group_id'], unique=False)
        batch_op.create_foreign_key('fk_runs_group_id', 'run_groups', ['group_id'], ['id'])
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('family', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_column('family')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_constraint('fk_runs_group_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_runs_group_id'))
        batch_op.drop_column('group_id')
    with op.batch_alter_table('run_groups', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_run_groups_proposal_id'))
        batch_op.drop_index(batch_op.f('ix_run_groups_award_id'))
    op.drop_table('run_groups')
