"""engine catalog: datastores and their versions (seeded at start-up, managed at /mgmt)

Revision ID: 0008
Revises: 0007

Clusters keep their `engine_version_id` (e.g. `postgresql-15`): the start-up seed gives the
versions it discovers those same ids, so every existing cluster's version resolves.
"""
from alembic import op
import sqlalchemy as sa


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'datastores',
        sa.Column('id', sa.String(length=32), primary_key=True),
        sa.Column('name', sa.String(length=64), nullable=False),
        sa.Column('default_version_id', sa.String(length=64), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('modified_at', sa.DateTime(), nullable=False),
        sa.UniqueConstraint('name', name='uq_datastores_name'),
    )
    op.create_table(
        'datastore_versions',
        sa.Column('id', sa.String(length=64), primary_key=True),
        sa.Column('datastore_id', sa.String(length=32), sa.ForeignKey('datastores.id'), nullable=False),
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('major', sa.String(length=8), nullable=False),
        sa.Column('manager', sa.String(length=32), nullable=False),
        sa.Column('packages', sa.String(length=255), nullable=False),
        sa.Column('binaries', sa.String(length=255), nullable=False),
        sa.Column('image_id', sa.String(length=255), nullable=False),
        sa.Column('active', sa.Boolean(), nullable=False),
        sa.Column('end_of_service', sa.Boolean(), nullable=False),
        sa.Column('origin', sa.String(length=16), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('modified_at', sa.DateTime(), nullable=False),
        sa.UniqueConstraint('datastore_id', 'name', name='uq_datastore_version_name'),
    )
    op.create_index('ix_datastore_versions_datastore_id', 'datastore_versions', ['datastore_id'])


def downgrade() -> None:
    op.drop_index('ix_datastore_versions_datastore_id', table_name='datastore_versions')
    op.drop_table('datastore_versions')
    op.drop_table('datastores')
