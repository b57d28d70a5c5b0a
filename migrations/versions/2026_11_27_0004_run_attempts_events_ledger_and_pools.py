"""run attempts, events, ledger and pools

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 02:47:58.614534

Awards become ledger accounts credited with their GPU-hours; what runs were charged before becomes one debit
each (rounded to whole GPU-seconds), so no usage is lost.
"""
from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pools',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('head_address', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('head_node_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('scheduler_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('heartbeat_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('ledger_accounts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('award_id', sa.Integer(), nullable=True),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['award_id'], ['awards.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('award_id')
    )
    op.create_table('ledger_entries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('account_id', sa.Integer(), nullable=False),
    sa.Column('kind', sa.Enum('credit', 'debit', 'refund', name='entrykind', native_enum=False, length=10), nullable=False),
    sa.Column('amount', sa.Integer(), nullable=False),
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=True),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['account_id'], ['ledger_accounts.id'], ),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key')
    )
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_ledger_entries_account_id'), ['account_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_ledger_entries_run_id'), ['run_id'], unique=False)

    op.create_table('run_attempts',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('number', sa.Integer(), nullable=False),
    sa.Column('pool', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('submission_id', sqlmodel.sql.sqltypes.AutoString(length=100), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('state', sa.Enum('starting', 'running', 'succeeded', 'failed', 'lost', 'stopped', name='attemptstate', native_enum=False, length=20), nullable=False),
    sa.Column('node_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('node_name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('gpus', sa.Integer(), nullable=False),
    sa.Column('charge_factor', sa.Float(), nullable=False),
    sa.Column('resume_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('resume_step', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_heard_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('charged_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('checkpoint_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('checkpoint_step', sa.Integer(), nullable=False),
    sa.Column('checkpoint_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('log_bytes', sa.Integer(), nullable=False),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('reported', sa.JSON(), nullable=False),
    sa.Column('ended_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('submission_id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_run_attempts_pool'), ['pool'], unique=False)
        batch_op.create_index(batch_op.f('ix_run_attempts_run_id'), ['run_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_run_attempts_state'), ['state'], unique=False)

    op.create_table('run_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('run_id', sa.Integer(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=True),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
    sa.Column('from_state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('to_state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('actor', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
    sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['run_id'], ['runs.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('run_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_run_events_run_id'), ['run_id'], unique=False)

    op.create_table('attempt_log_chunks',
    sa.Column('attempt_id', sa.Integer(), nullable=False),
    sa.Column('offset', sa.Integer(), nullable=False),
    sa.Column('text', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.ForeignKeyConstraint(['attempt_id'], ['run_attempts.id'], ),
    sa.PrimaryKeyConstraint('attempt_id', 'offset')
    )
    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('attempt', sa.Integer(), nullable=True))

    _usage_into_the_ledger()
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pool', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column('stop_reason', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True))
        batch_op.add_column(sa.Column('resume_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True))
        batch_op.add_column(sa.Column('resume_step', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('retries_used', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('finish_failures', sa.Integer(), nullable=False, server_default='0'))
        batch_op.drop_column('charged_until')
        batch_op.drop_column('gpu_seconds')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        for column in ('resume_step', 'retries_used', 'finish_failures'):
            batch_op.alter_column(column, server_default=None)


def _usage_into_the_ledger() -> None:
    bind = op.get_bind()
    now = datetime.now(UTC)
    accounts = {}
    for award_id, hours in bind.execute(sa.text("SELECT id, gpu_hours FROM awards ORDER BY id")).fetchall():
        bind.execute(sa.text("INSERT INTO ledger_accounts (award_id, name, created_at) VALUES (:a, :n, :t)"),
                     {"a": award_id, "n": f"award {award_id}", "t": now})
        accounts[award_id] = bind.execute(sa.text("SELECT id FROM ledger_accounts WHERE award_id = :a"),
                                          {"a": award_id}).scalar_one()
        _entry(bind, accounts[award_id], "credit", round(hours * 3600), f"award:{award_id}", None,
               f"awarded {hours:g} GPU-hours", now)
    for run_id, award_id, used in bind.execute(
            sa.text("SELECT id, award_id, gpu_seconds FROM runs WHERE gpu_seconds > 0 ORDER BY id")).fetchall():
        _entry(bind, accounts[award_id], "debit", -round(used), f"debit:run-{run_id}:before-ledger", run_id,
               "charged before the ledger existed", now)


def _entry(bind, account_id, kind, amount, key, run_id, note, now) -> None:  # type: ignore[no-untyped-def]
    bind.execute(sa.text("INSERT INTO ledger_entries (account_id, kind, amount, key, run_id, note, created_at) "
                         "VALUES (:account, :kind, :amount, :key, :run, :note, :t)"),
                 {"account": account_id, "kind": kind, "amount": amount, "key": key, "run": run_id, "note": note,
                  "t": now})



def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('gpu_seconds', sa.Float(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('charged_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.drop_column('finish_failures')
        batch_op.drop_column('retries_used')
        batch_op.drop_column('resume_step')
        batch_op.drop_column('resume_sha256')
        batch_op.drop_column('stop_reason')
        batch_op.drop_column('pool')

    with op.batch_alter_table('artifacts', schema=None) as batch_op:
        batch_op.drop_column('attempt')

    op.drop_table('attempt_log_chunks')
    with op.batch_alter_table('run_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_run_events_run_id'))

    op.drop_table('run_events')
    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_run_attempts_state'))
        batch_op.drop_index(batch_op.f('ix_run_attempts_run_id'))
        batch_op.drop_index(batch_op.f('ix_run_attempts_pool'))

    op.drop_table('run_attempts')
    with op.batch_alter_table('ledger_entries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_ledger_entries_run_id'))
        batch_op.drop_index(batch_op.f('ix_ledger_entries_account_id'))

    op.execute("UPDATE runs SET gpu_seconds = COALESCE((SELECT -SUM(amount) FROM ledger_entries "
               "WHERE ledger_entries.run_id = runs.id), 0)")
    op.drop_table('ledger_entries')
    op.drop_table('ledger_accounts')
    op.drop_table('pools')
