"""roles as a set, machines lent to the pool, award priority

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 05:45:00

Each person's single role becomes a set holding that role; awards start in priority class B; run attempts note the
owner's machine they ran on.
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

users = sa.table('users', sa.column('id', sa.Integer), sa.column('role', sa.String),
                 sa.column('roles', sa.JSON))


def upgrade() -> None:
    op.create_table('machines',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('owner_id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
    sa.Column('state', sa.Enum('pending', 'approved', 'rejected', 'revoked', 'left', name='machinestate',
                               native_enum=False, length=10), nullable=False),
    sa.Column('paused', sa.Boolean(), nullable=False),
    sa.Column('draining', sa.Boolean(), nullable=False),
    sa.Column('hours_per_day', sa.Float(), nullable=True),
    sa.Column('show_owner', sa.Boolean(), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('gpu_model', sqlmodel.sql.sqltypes.AutoString(length=120), nullable=True),
    sa.Column('gpu_count', sa.Integer(), nullable=False),
    sa.Column('vram_gb', sa.Float(), nullable=False),
    sa.Column('cuda_capability', sqlmodel.sql.sqltypes.AutoString(length=10), nullable=True),
    sa.Column('cpus', sa.Integer(), nullable=False),
    sa.Column('memory_gb', sa.Float(), nullable=False),
    sa.Column('release', sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
    sa.Column('measured_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('ray_node_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('message', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('decided_by', sa.Integer(), nullable=True),
    sa.Column('decided_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('last_contact_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['owner_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['decided_by'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('machines', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_machines_owner_id'), ['owner_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_machines_state'), ['state'], unique=False)

    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('machine_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_run_attempts_machine_id'), ['machine_id'], unique=False)
        batch_op.create_foreign_key('fk_run_attempts_machine_id_machines', 'machines', ['machine_id'], ['id'])

    with op.batch_alter_table('awards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Enum('A', 'B', 'C', name='priorityclass', native_enum=False,
                                                          length=1), nullable=False, server_default='B'))

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('roles', sa.JSON(), nullable=True))
    bind = op.get_bind()
    for user_id, role in bind.execute(sa.select(users.c.id, users.c.role)).all():
        bind.execute(users.update().where(users.c.id == user_id).values(roles=[role]))
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('roles', existing_type=sa.JSON(), nullable=False)
        batch_op.drop_column('role')


def downgrade() -> None:
    """Each person keeps one role: admin if they held it, else reviewer, else researcher (an owner's machines go)."""
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.Enum('researcher', 'reviewer', 'admin', name='role',
                                                      native_enum=False, length=20), nullable=True))
    bind = op.get_bind()
    for user_id, roles in bind.execute(sa.select(users.c.id, users.c.roles)).all():
        held = set(roles or [])
        role = next((r for r in ('admin', 'reviewer') if r in held), 'researcher')
        bind.execute(users.update().where(users.c.id == user_id).values(role=role))
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('role', existing_type=sa.String(20), nullable=False)
        batch_op.drop_column('roles')

    with op.batch_alter_table('awards', schema=None) as batch_op:
        batch_op.drop_column('priority')

    with op.batch_alter_table('run_attempts', schema=None) as batch_op:
        batch_op.drop_constraint('fk_run_attempts_machine_id_machines', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_run_attempts_machine_id'))
        batch_op.drop_column('machine_id')

    with op.batch_alter_table('machines', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_machines_state'))
        batch_op.drop_index(batch_op.f('ix_machines_owner_id'))
    op.drop_table('machines')
