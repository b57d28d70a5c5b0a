"""server-side sessions and expiring tokens, sign-in throttling, verified e-mail

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27 01:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('login_failures',
    sa.Column('key', sqlmodel.sql.sqltypes.AutoString(length=400), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('window_started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('locked_until', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    # Tokens issued before expiry existed expire now: their holders sign in again.
    with op.batch_alter_table('api_tokens') as batch:
        batch.add_column(sa.Column('kind', sa.Enum('api', 'web', name='credentialkind', native_enum=False,
                                                   length=10, create_constraint=False),
                                   nullable=False, server_default='api'))
        batch.add_column(sa.Column('last_used_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False,
                                   server_default=sa.func.current_timestamp()))
        batch.add_column(sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False,
                                   server_default=sa.func.current_timestamp()))
    with op.batch_alter_table('api_tokens') as batch:
        batch.alter_column('kind', server_default=None)
        batch.alter_column('last_used_at', server_default=None)
        batch.alter_column('expires_at', server_default=None)
    with op.batch_alter_table('users') as batch:
        batch.add_column(sa.Column('email_verified', sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.add_column(sa.Column('unverified_email', sqlmodel.sql.sqltypes.AutoString(length=320),
                                   nullable=True))
    with op.batch_alter_table('users') as batch:
        batch.alter_column('email_verified', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('users') as batch:
        batch.drop_column('unverified_email')
        batch.drop_column('email_verified')
    with op.batch_alter_table('api_tokens') as batch:
        batch.drop_column('expires_at')
        batch.drop_column('last_used_at')
        batch.drop_column('kind')
    op.drop_table('login_failures')
