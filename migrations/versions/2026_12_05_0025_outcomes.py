"""outcomes: papers, preprints, datasets and software that came of an award

Revision ID: 0025
Revises: 0024
Create Date: 2026-12-05 23:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0025'
down_revision = '0024'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'outcomes',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('proposal_id', sa.Integer(), nullable=False),
        sa.Column('kind', sa.Enum('paper', 'preprint', 'dataset', 'software', 'other', name='outcomekind',
                                  native_enum=False, length=20), nullable=False),
        sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column('doi', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column('url', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
        sa.Column('year', sa.Integer(), nullable=True),
        sa.Column('added_by', sa.Integer(), nullable=False),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['proposal_id'], ['proposals.id']),
        sa.ForeignKeyConstraint(['added_by'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    with op.batch_alter_table('outcomes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outcomes_proposal_id'), ['proposal_id'], unique=False)


def downgrade() -> None:
    op.drop_table('outcomes')
