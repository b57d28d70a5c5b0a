"""donor shares: a call's reserved share, proposals that claim one, and the shares awarded

Revision ID: 0023
Revises: 0022
Create Date: 2026-12-05 22:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0023'
down_revision = '0022'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('donor_share', sa.Float(), nullable=False, server_default='0'))
    with op.batch_alter_table('proposals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('donor_claim', sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_table(
        'donor_shares',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('call_id', sa.Integer(), nullable=False),
        sa.Column('proposal_id', sa.Integer(), nullable=False),
        sa.Column('owner_id', sa.Integer(), nullable=False),
        sa.Column('award_id', sa.Integer(), nullable=False),
        sa.Column('gpu_hours', sa.Float(), nullable=False),
        sa.Column('credit_spent', sa.Float(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['call_id'], ['calls.id']),
        sa.ForeignKeyConstraint(['proposal_id'], ['proposals.id']),
        sa.ForeignKeyConstraint(['owner_id'], ['users.id']),
        sa.ForeignKeyConstraint(['award_id'], ['awards.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('proposal_id'),
    )
    with op.batch_alter_table('donor_shares', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_donor_shares_call_id'), ['call_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_donor_shares_owner_id'), ['owner_id'], unique=False)


def downgrade() -> None:
    op.drop_table('donor_shares')
    with op.batch_alter_table('proposals', schema=None) as batch_op:
        batch_op.drop_column('donor_claim')
    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_column('donor_share')
