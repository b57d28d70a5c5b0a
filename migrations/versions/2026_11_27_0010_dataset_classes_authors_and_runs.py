"""dataset versions: their classes (for class-conditional models), the authors of their images, and the ingest
run that made them

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 12:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('classes', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('authors', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('run_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_dataset_versions_run_id_runs', 'runs', ['run_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('dataset_versions', schema=None) as batch_op:
        batch_op.drop_constraint('fk_dataset_versions_run_id_runs', type_='foreignkey')
        batch_op.drop_column('run_id')
        batch_op.drop_column('authors')
        batch_op.drop_column('classes')
