"""operation kinds with steps (params, plan, encrypted secrets); members observed one by one

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('operations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('params', sa.JSON(), nullable=False, server_default='{}'))
        batch_op.add_column(sa.Column('steps', sa.JSON(), nullable=False, server_default='[]'))
        batch_op.add_column(sa.Column('step', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('secrets_encrypted', sa.Text(), nullable=True))
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.add_column(sa.Column('role', sa.String(length=16), nullable=False, server_default='primary'))
        batch_op.add_column(sa.Column('observed', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('members', schema=None) as batch_op:
        batch_op.drop_column('observed')
        batch_op.drop_column('role')
    with op.batch_alter_table('operations', schema=None) as batch_op:
        batch_op.drop_column('secrets_encrypted')
        batch_op.drop_column('step')
        batch_op.drop_column('steps')
        batch_op.drop_column('params')
