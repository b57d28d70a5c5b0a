"""withdrawals of training images, and model versions marked withdrawn

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05 01:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'withdrawals',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('image_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('page_id', sa.Integer(), nullable=True),
        sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
        sa.Column('reason', sa.Enum('deleted', 'license_changed', 'author_request', 'other', name='withdrawalreason',
                                    native_enum=False, length=20), nullable=False),
        sa.Column('note', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
        sa.Column('recorded_by', sa.Integer(), nullable=True),
        sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(['recorded_by'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('image_sha256'),
    )
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('withdrawn_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('withdrawn_reason', sqlmodel.sql.sqltypes.AutoString(length=500),
                                      nullable=False, server_default=''))
        batch_op.add_column(sa.Column('replaced_by_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_model_versions_replaced_by', 'model_versions', ['replaced_by_id'], ['id'])
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.alter_column('withdrawn_reason', server_default=None)


def downgrade() -> None:
    with op.batch_alter_table('model_versions', schema=None) as batch_op:
        batch_op.drop_constraint('fk_model_versions_replaced_by', type_='foreignkey')
        batch_op.drop_column('replaced_by_id')
        batch_op.drop_column('withdrawn_reason')
        batch_op.drop_column('withdrawn_at')
    op.drop_table('withdrawals')
