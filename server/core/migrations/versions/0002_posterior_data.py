"""which data each posterior used: a hash of its transit-time table and the transit-time ids

Revision ID: 0002
Revises: 0001
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('posteriors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('data_sha256', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('transit_time_ids', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('warm_started_from', sa.Integer(), nullable=True))
        batch_op.create_index('ix_posteriors_data_sha256', ['data_sha256'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('posteriors', schema=None) as batch_op:
        batch_op.drop_index('ix_posteriors_data_sha256')
        batch_op.drop_column('warm_started_from')
        batch_op.drop_column('transit_time_ids')
        batch_op.drop_column('data_sha256')
