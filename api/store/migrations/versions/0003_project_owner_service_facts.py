"""projects belong to an account; service facts (e.g. the agent facade's cluster id)

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

# 0002 left the unique constraint on projects.name unnamed: a naming convention lets batch mode
# (SQLite) find it; PostgreSQL named it projects_name_key.
NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def upgrade() -> None:
    # Project names were unique across the service, which told every account the others' names:
    # they are unique per owner now.
    unique_name = 'projects_name_key' if op.get_bind().dialect.name == 'postgresql' else 'uq_projects_name'
    with op.batch_alter_table('projects', schema=None, naming_convention=NAMING) as batch_op:
        batch_op.drop_constraint(unique_name, type_='unique')
        batch_op.add_column(sa.Column('owner_id', sa.String(length=32), nullable=True))
        batch_op.create_foreign_key('fk_projects_owner_id', 'accounts', ['owner_id'], ['id'])
        batch_op.create_index('ix_projects_owner_id', ['owner_id'], unique=False)
        batch_op.create_unique_constraint('uq_project_owner_name', ['owner_id', 'name'])
    op.create_table('service_facts',
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('value', sa.String(length=255), nullable=False),
    sa.PrimaryKeyConstraint('key')
    )


def downgrade() -> None:
    op.drop_table('service_facts')
    with op.batch_alter_table('projects', schema=None) as batch_op:
        batch_op.drop_constraint('uq_project_owner_name', type_='unique')
        batch_op.drop_index('ix_projects_owner_id')
        batch_op.drop_constraint('fk_projects_owner_id', type_='foreignkey')
        batch_op.drop_column('owner_id')
        batch_op.create_unique_constraint('projects_name_key', ['name'])
