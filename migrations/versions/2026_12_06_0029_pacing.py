"""pacing: reminders sent once per point of an award's period, a cycle's pool account, expiry entries

Revision ID: 0029
Revises: 0028
Create Date: 2026-12-06 04:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0029'
down_revision = '0028'
branch_labels = None
depends_on = None

KINDS_BEFORE = ('credit', 'debit', 'refund')
KINDS_AFTER = ('credit', 'debit', 'refund', 'expiry', 'returned')


def upgrade() -> None:
    op.create_table(
        'award_reminders',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('award_id', sa.Integer(), nullable=False),
        sa.Column('point', sa.Float(), nullable=False),
        sa.Column('used_share', sa.Float(), nullable=False),
        sa.Column('sent_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['award_id'], ['awards.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('award_id', 'point', name='uq_reminder_once'),
    )
    with op.batch_alter_table('award_reminders', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_award_reminders_award_id'), ['award_id'], unique=False)
    with op.batch_alter_table('ledger_accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cycle_id', sa.Integer(), nullable=True))
        batch_op.create_unique_constraint('uq_ledger_accounts_cycle_id', ['cycle_id'])
        batch_op.create_foreign_key('fk_ledger_accounts_cycle_id_cycles', 'cycles', ['cycle_id'], ['id'])
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.alter_column('kind', existing_type=sa.Enum(*KINDS_BEFORE, name='entrykind', native_enum=False,
                                                            length=10),
                              type_=sa.Enum(*KINDS_AFTER, name='entrykind', native_enum=False, length=10),
                              existing_nullable=False)


def downgrade() -> None:
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.alter_column('kind', existing_type=sa.Enum(*KINDS_AFTER, name='entrykind', native_enum=False,
                                                            length=10),
                              type_=sa.Enum(*KINDS_BEFORE, name='entrykind', native_enum=False, length=10),
                              existing_nullable=False)
    with op.batch_alter_table('ledger_accounts', schema=None) as batch_op:
        batch_op.drop_constraint('fk_ledger_accounts_cycle_id_cycles', type_='foreignkey')
        batch_op.drop_constraint('uq_ledger_accounts_cycle_id', type_='unique')
        batch_op.drop_column('cycle_id')
    op.drop_table('award_reminders')
