"""the bundled training set is renamed skimage-samples (it is scikit-image's samples, not a Commons set)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 09:40:00

Stored job plans of proposals and runs that name `commons-mini` name `skimage-samples` instead, so that they still
validate and a run resumes with the same plan.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

TABLES = [sa.table(name, sa.column('id', sa.Integer), sa.column('job_plan', sa.JSON)) for name in ('proposals', 'runs')]


def _rename(old: str, new: str) -> None:
    connection = op.get_bind()
    for table in TABLES:
        for row in connection.execute(sa.select(table.c.id, table.c.job_plan)).all():
            plan = row.job_plan
            if isinstance(plan, dict) and plan.get('dataset') == old:
                connection.execute(table.update().where(table.c.id == row.id)
                                   .values(job_plan={**plan, 'dataset': new}))


def upgrade() -> None:
    _rename('commons-mini', 'skimage-samples')


def downgrade() -> None:
    _rename('skimage-samples', 'commons-mini')
