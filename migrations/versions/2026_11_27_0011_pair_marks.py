"""pair marks: people's judgement of an analysis's shown pairs (copy or not), one per person and pair

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-27 12:45:21
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pair_marks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('seed', sa.Integer(), nullable=False),
    sa.Column('training_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('verdict', sa.Enum('copy', 'not_copy', name='verdict', native_enum=False, length=10), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('updated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('run_id', 'seed', 'user_id', name='uq_pair_mark_per_person')
    )
    with op.batch_alter_table('pair_marks', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_pair_marks_run_id'), ['run_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('pair_marks', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_pair_marks_run_id'))

    op.drop_table('pair_marks')
