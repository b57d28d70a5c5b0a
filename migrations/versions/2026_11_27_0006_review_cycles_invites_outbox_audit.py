"""peer review: cycles and call kinds, invites, assignments and reviews, the audit log and the e-mail outbox

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 08:25:14

Each existing call gets a cycle of its own with its capacity and no Director's reserve, and is a regular,
dual-anonymous call; awarded proposals become accepted.
"""
from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

calls = sa.table('calls', sa.column('id', sa.Integer), sa.column('title', sa.String),
                 sa.column('capacity_gpu_hours', sa.Float), sa.column('created_by', sa.Integer),
                 sa.column('created_at', sa.DateTime), sa.column('cycle_id', sa.Integer))
cycles = sa.table('cycles', sa.column('id', sa.Integer), sa.column('name', sa.String),
                  sa.column('capacity_gpu_hours', sa.Float), sa.column('director_reserve_gpu_hours', sa.Float),
                  sa.column('created_by', sa.Integer), sa.column('created_at', sa.DateTime))
proposals = sa.table('proposals', sa.column('state', sa.String))


def upgrade() -> None:
    op.create_table('outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('to_address', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=300), nullable=False),
    sa.Column('body', sqlmodel.sql.sqltypes.AutoString(length=20000), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('sent_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_sent_at'), ['sent_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbox_to_address'), ['to_address'], unique=False)

    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=60), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_log_action'), ['action'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)

    op.create_table('cycles',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('capacity_gpu_hours', sa.Float(), nullable=False),
    sa.Column('director_reserve_gpu_hours', sa.Float(), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('proposal_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('proposal_id', sa.Integer(), nullable=False),
    sa.Column('actor_id', sa.Integer(), nullable=True),
    sa.Column('from_state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('to_state', sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
    sa.Column('at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['actor_id'], ['users.id'], ),
    sa.ForeignKeyConstraint(['proposal_id'], ['proposals.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('proposal_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_proposal_events_proposal_id'), ['proposal_id'], unique=False)

    op.create_table('proposal_invites',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('proposal_id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('email', sqlmodel.sql.sqltypes.AutoString(length=320), nullable=False),
    sa.Column('created_by', sa.Integer(), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('expires_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('used_by', sa.Integer(), nullable=True),
    sa.Column('used_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.Column('revoked_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['created_by'], ['users.id'], ),
    sa.ForeignKeyConstraint(['proposal_id'], ['proposals.id'], ),
    sa.ForeignKeyConstraint(['used_by'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('token_hash')
    )
    with op.batch_alter_table('proposal_invites', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_proposal_invites_proposal_id'), ['proposal_id'], unique=False)

    op.create_table('review_assignments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('call_id', sa.Integer(), nullable=False),
    sa.Column('proposal_id', sa.Integer(), nullable=False),
    sa.Column('reviewer_id', sa.Integer(), nullable=False),
    sa.Column('state', sa.Enum('invited', 'accepted', 'conflict', 'submitted', name='assignmentstate', native_enum=False, length=10), nullable=False),
    sa.Column('conflict_reason', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
    sa.Column('created_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.Column('responded_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True),
    sa.ForeignKeyConstraint(['call_id'], ['calls.id'], ),
    sa.ForeignKeyConstraint(['proposal_id'], ['proposals.id'], ),
    sa.ForeignKeyConstraint(['reviewer_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('proposal_id', 'reviewer_id', name='uq_assignment_once')
    )
    with op.batch_alter_table('review_assignments', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_review_assignments_call_id'), ['call_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_assignments_proposal_id'), ['proposal_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_review_assignments_reviewer_id'), ['reviewer_id'], unique=False)

    op.create_table('reviews',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('assignment_id', sa.Integer(), nullable=False),
    sa.Column('grade', sa.Float(), nullable=False),
    sa.Column('expertise', sa.Enum('low', 'medium', 'high', name='expertise', native_enum=False, length=10), nullable=False),
    sa.Column('for_committee', sqlmodel.sql.sqltypes.AutoString(length=10000), nullable=False),
    sa.Column('for_pi', sqlmodel.sql.sqltypes.AutoString(length=10000), nullable=False),
    sa.Column('submitted_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['assignment_id'], ['review_assignments.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('assignment_id')
    )
    op.create_table('review_ratings',
    sa.Column('review_id', sa.Integer(), nullable=False),
    sa.Column('helpfulness', sa.Integer(), nullable=False),
    sa.Column('rated_by', sa.Integer(), nullable=False),
    sa.Column('rated_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['rated_by'], ['users.id'], ),
    sa.ForeignKeyConstraint(['review_id'], ['reviews.id'], ),
    sa.PrimaryKeyConstraint('review_id')
    )
    with op.batch_alter_table('awards', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tops_up_award_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key('fk_awards_tops_up_award_id', 'awards', ['tops_up_award_id'], ['id'])

    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cycle_id', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('kind', sa.Enum('regular', 'director', 'supplemental', name='callkind', native_enum=False, length=20), nullable=False, server_default='regular'))
        batch_op.add_column(sa.Column('dual_anonymous', sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.add_column(sa.Column('reviewers_per_proposal', sa.Integer(), nullable=False, server_default='3'))
        batch_op.add_column(sa.Column('reviewer_cap', sa.Integer(), nullable=False, server_default='8'))
        batch_op.add_column(sa.Column('triage_fraction', sa.Float(), nullable=False, server_default='0.3'))
        batch_op.add_column(sa.Column('review_started_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column('decisions_released_at', sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))

    connection = op.get_bind()
    for call in connection.execute(sa.select(calls)).all():
        cycle_id = connection.execute(cycles.insert().values(
            name=call.title, capacity_gpu_hours=call.capacity_gpu_hours, director_reserve_gpu_hours=0.0,
            created_by=call.created_by, created_at=call.created_at).returning(cycles.c.id)).scalar_one()
        connection.execute(calls.update().where(calls.c.id == call.id).values(cycle_id=cycle_id))
    connection.execute(proposals.update().where(proposals.c.state == 'awarded').values(state='accepted'))

    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.alter_column('cycle_id', existing_type=sa.Integer(), nullable=False)
        batch_op.create_index(batch_op.f('ix_calls_cycle_id'), ['cycle_id'], unique=False)
        batch_op.create_foreign_key('fk_calls_cycle_id', 'cycles', ['cycle_id'], ['id'])

    with op.batch_alter_table('proposals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_award_id', sa.Integer(), nullable=True))

    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('institution', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False, server_default=''))



def downgrade() -> None:
    connection = op.get_bind()
    connection.execute(proposals.update().where(proposals.c.state.in_(['accepted', 'under_review']))
                       .values(state='awarded'))
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('institution')

    with op.batch_alter_table('proposals', schema=None) as batch_op:
        batch_op.drop_column('parent_award_id')

    with op.batch_alter_table('calls', schema=None) as batch_op:
        batch_op.drop_constraint('fk_calls_cycle_id', type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_calls_cycle_id'))
        batch_op.drop_column('decisions_released_at')
        batch_op.drop_column('review_started_at')
        batch_op.drop_column('triage_fraction')
        batch_op.drop_column('reviewer_cap')
        batch_op.drop_column('reviewers_per_proposal')
        batch_op.drop_column('dual_anonymous')
        batch_op.drop_column('kind')
        batch_op.drop_column('cycle_id')

    with op.batch_alter_table('awards', schema=None) as batch_op:
        batch_op.drop_constraint('fk_awards_tops_up_award_id', type_='foreignkey')
        batch_op.drop_column('tops_up_award_id')

    op.drop_table('review_ratings')
    op.drop_table('reviews')
    with op.batch_alter_table('review_assignments', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_review_assignments_reviewer_id'))
        batch_op.drop_index(batch_op.f('ix_review_assignments_proposal_id'))
        batch_op.drop_index(batch_op.f('ix_review_assignments_call_id'))

    op.drop_table('review_assignments')
    with op.batch_alter_table('proposal_invites', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_proposal_invites_proposal_id'))

    op.drop_table('proposal_invites')
    with op.batch_alter_table('proposal_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_proposal_events_proposal_id'))

    op.drop_table('proposal_events')
    op.drop_table('cycles')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))
        batch_op.drop_index(batch_op.f('ix_audit_log_action'))

    op.drop_table('audit_log')
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outbox_to_address'))
        batch_op.drop_index(batch_op.f('ix_outbox_sent_at'))

    op.drop_table('outbox')
