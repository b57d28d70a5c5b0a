"""expertise: reviewers' keywords, proposals' subject and keywords, bids, the chair's assignment choices

Revision ID: 0028
Revises: 0027
Create Date: 2026-12-06 03:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0028'
down_revision = '0027'
branch_labels = None
depends_on = None

TEXT = sqlmodel.sql.sqltypes.AutoString
WHEN = sqlmodel.sql.sqltypes.UTCDateTime


def upgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expertise', sa.JSON(), nullable=False, server_default='[]'))
    with op.batch_alter_table('proposals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('subject', TEXT(length=100), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('keywords', sa.JSON(), nullable=False, server_default='[]'))
    op.create_table(
        'review_bids',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('call_id', sa.Integer(), nullable=False),
        sa.Column('proposal_id', sa.Integer(), nullable=False),
        sa.Column('reviewer_id', sa.Integer(), nullable=False),
        sa.Column('bid', sa.Enum('eager', 'willing', 'not_my_field', name='bid', native_enum=False, length=20),
                  nullable=False),
        sa.Column('created_at', WHEN(), nullable=False),
        sa.ForeignKeyConstraint(['call_id'], ['calls.id']),
        sa.ForeignKeyConstraint(['proposal_id'], ['proposals.id']),
        sa.ForeignKeyConstraint(['reviewer_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('proposal_id', 'reviewer_id', name='uq_bid_once'),
    )
    with op.batch_alter_table('review_bids', schema=None) as batch_op:
        for column in ('call_id', 'proposal_id', 'reviewer_id'):
            batch_op.create_index(batch_op.f(f'ix_review_bids_{column}'), [column], unique=False)
    op.create_table(
        'assignment_choices',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('call_id', sa.Integer(), nullable=False),
        sa.Column('proposal_id', sa.Integer(), nullable=False),
        sa.Column('reviewer_id', sa.Integer(), nullable=False),
        sa.Column('choice', TEXT(length=10), nullable=False),
        sa.Column('made_by', sa.Integer(), nullable=False),
        sa.Column('created_at', WHEN(), nullable=False),
        sa.ForeignKeyConstraint(['call_id'], ['calls.id']),
        sa.ForeignKeyConstraint(['proposal_id'], ['proposals.id']),
        sa.ForeignKeyConstraint(['reviewer_id'], ['users.id']),
        sa.ForeignKeyConstraint(['made_by'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('proposal_id', 'reviewer_id', name='uq_choice_once'),
    )
    with op.batch_alter_table('assignment_choices', schema=None) as batch_op:
        for column in ('call_id', 'proposal_id'):
            batch_op.create_index(batch_op.f(f'ix_assignment_choices_{column}'), [column], unique=False)


def downgrade() -> None:
    op.drop_table('assignment_choices')
    op.drop_table('review_bids')
    with op.batch_alter_table('proposals', schema=None) as batch_op:
        batch_op.drop_column('keywords')
        batch_op.drop_column('subject')
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('expertise')
