"""operations record which API process runs their job and the job's process group

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

COLUMNS = (
    # The API process that owns the job (queued it, runs it): host name, kernel boot id, pid and
    # the pid's start time (clock ticks since boot, /proc/<pid>/stat), which together prove
    # whether that process is still alive.
    ('worker_host', sa.String(length=255)),
    ('worker_boot_id', sa.String(length=64)),
    ('worker_pid', sa.Integer()),
    ('worker_start', sa.BigInteger()),
    # The job's process group (its leader's pid) and the leader's start time.
    ('job_pgid', sa.Integer()),
    ('job_start', sa.BigInteger()),
)


def upgrade() -> None:
    with op.batch_alter_table('operations', schema=None) as batch_op:
        for name, type_ in COLUMNS:
            batch_op.add_column(sa.Column(name, type_, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('operations', schema=None) as batch_op:
        for name, _type in reversed(COLUMNS):
            batch_op.drop_column(name)
