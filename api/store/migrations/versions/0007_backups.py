"""backups: the backup policy of a cluster and its backups (pgBackRest)

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'backup_policies',
        sa.Column('cluster_id', sa.String(length=32), sa.ForeignKey('clusters.id', ondelete='CASCADE'),
                  primary_key=True),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('archive_enabled', sa.Boolean(), nullable=False),
        sa.Column('archive_frequency_minute', sa.Integer(), nullable=False),
        sa.Column('retention_period_day', sa.Integer(), nullable=False),
        sa.Column('starting_time_hour', sa.Integer(), nullable=False),
        sa.Column('verify_period_day', sa.Integer(), nullable=False),
        sa.Column('next_backup_at', sa.DateTime(), nullable=True),
        sa.Column('next_verify_at', sa.DateTime(), nullable=True),
        sa.Column('schedule_error', sa.Text(), nullable=True),
        sa.Column('last_info', sa.JSON(), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('modified_at', sa.DateTime(), nullable=False),
    )
    op.create_table(
        'backups',
        sa.Column('id', sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column('cluster_id', sa.String(length=32), sa.ForeignKey('clusters.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('number', sa.Integer(), nullable=False),
        sa.Column('label', sa.String(length=64), nullable=False),
        sa.Column('type', sa.String(length=8), nullable=False),
        sa.Column('prior', sa.String(length=64), nullable=True),
        sa.Column('started_at', sa.DateTime(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=False),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('repo_size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('lsn_start', sa.String(length=32), nullable=False),
        sa.Column('lsn_stop', sa.String(length=32), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('state_detail', sa.Text(), nullable=False),
        sa.Column('software_version', sa.String(length=32), nullable=False),
        sa.Column('operation_id', sa.String(length=40), nullable=True),
        sa.Column('verified_at', sa.DateTime(), nullable=True),
        sa.Column('verify_state', sa.String(length=16), nullable=True),
        sa.Column('verify_detail', sa.JSON(), nullable=False),
        sa.UniqueConstraint('cluster_id', 'number', name='uq_backup_cluster_number'),
        sa.UniqueConstraint('cluster_id', 'label', name='uq_backup_cluster_label'),
    )
    op.create_index('ix_backups_cluster_id', 'backups', ['cluster_id'])


def downgrade() -> None:
    op.drop_index('ix_backups_cluster_id', table_name='backups')
    op.drop_table('backups')
    op.drop_table('backup_policies')
