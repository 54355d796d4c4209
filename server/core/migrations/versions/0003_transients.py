"""transients: reference images, objects, candidates and alerts

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

UTC = sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mysql', 'mariadb')


def upgrade() -> None:
    op.create_table(
        'transient_references',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('target_id', sa.Integer(), nullable=False),
        sa.Column('band', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('image_key', sa.String(length=255), nullable=True),
        sa.Column('uncertainty_key', sa.String(length=255), nullable=True),
        sa.Column('coverage_key', sa.String(length=255), nullable=True),
        sa.Column('n_frames', sa.Integer(), nullable=False),
        sa.Column('fwhm_arcsec', sa.Double(), nullable=True),
        sa.Column('depth_mag', sa.Double(), nullable=True),
        sa.Column('mjd_start', sa.Double(), nullable=True),
        sa.Column('mjd_end', sa.Double(), nullable=True),
        sa.Column('instruments', sa.JSON(), nullable=True),
        sa.Column('provenance', sa.JSON(), nullable=True),
        sa.Column('built_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['target_id'], ['targets.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_transient_references_target_id', 'transient_references', ['target_id'], unique=False)
    op.create_table(
        'transient_objects',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=32), nullable=False),
        sa.Column('ra_deg', sa.Double(), nullable=False),
        sa.Column('dec_deg', sa.Double(), nullable=False),
        sa.Column('first_jd', sa.Double(), nullable=False),
        sa.Column('last_jd', sa.Double(), nullable=False),
        sa.Column('n_detections', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_index('ix_transient_objects_dec_deg', 'transient_objects', ['dec_deg'], unique=False)
    op.create_table(
        'transient_candidates',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('observation_id', sa.Integer(), nullable=False),
        sa.Column('reference_id', sa.Integer(), nullable=False),
        sa.Column('object_id', sa.Integer(), nullable=True),
        sa.Column('jd', sa.Double(), nullable=False),
        sa.Column('band', sa.String(length=16), nullable=True),
        sa.Column('x', sa.Double(), nullable=False),
        sa.Column('y', sa.Double(), nullable=False),
        sa.Column('ra_deg', sa.Double(), nullable=False),
        sa.Column('dec_deg', sa.Double(), nullable=False),
        sa.Column('sign', sa.Integer(), nullable=False),
        sa.Column('snr', sa.Double(), nullable=False),
        sa.Column('flux', sa.Double(), nullable=False),
        sa.Column('flux_err', sa.Double(), nullable=False),
        sa.Column('mag', sa.Double(), nullable=True),
        sa.Column('mag_err', sa.Double(), nullable=True),
        sa.Column('fwhm_px', sa.Double(), nullable=True),
        sa.Column('elongation', sa.Double(), nullable=True),
        sa.Column('rb', sa.Double(), nullable=True),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('crossmatch', sa.JSON(), nullable=True),
        sa.Column('triplet_key', sa.String(length=255), nullable=True),
        sa.Column('triplet_index', sa.Integer(), nullable=True),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['object_id'], ['transient_objects.id']),
        sa.ForeignKeyConstraint(['observation_id'], ['observations.id']),
        sa.ForeignKeyConstraint(['reference_id'], ['transient_references.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_transient_candidates_object_id', 'transient_candidates', ['object_id'], unique=False)
    op.create_index('ix_transient_candidates_observation_id', 'transient_candidates', ['observation_id'],
                    unique=False)
    op.create_table(
        'transient_alerts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('candidate_id', sa.Integer(), nullable=False),
        sa.Column('object_id', sa.Integer(), nullable=False),
        sa.Column('ra_deg', sa.Double(), nullable=False),
        sa.Column('dec_deg', sa.Double(), nullable=False),
        sa.Column('jd', sa.Double(), nullable=False),
        sa.Column('mag', sa.Double(), nullable=True),
        sa.Column('rb', sa.Double(), nullable=False),
        sa.Column('n_previous', sa.Integer(), nullable=False),
        sa.Column('avro_key', sa.String(length=255), nullable=True),
        sa.Column('voevent_key', sa.String(length=255), nullable=True),
        sa.Column('created_at', UTC, nullable=False),
        sa.ForeignKeyConstraint(['candidate_id'], ['transient_candidates.id']),
        sa.ForeignKeyConstraint(['object_id'], ['transient_objects.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('candidate_id'),
    )
    op.create_index('ix_transient_alerts_created_at', 'transient_alerts', ['created_at'], unique=False)
    op.create_index('ix_transient_alerts_object_id', 'transient_alerts', ['object_id'], unique=False)


def downgrade() -> None:
    # Dropping a table drops its indexes; MariaDB refuses to drop an index a foreign key needs on its own.
    op.drop_table('transient_alerts')
    op.drop_table('transient_candidates')
    op.drop_table('transient_objects')
    op.drop_table('transient_references')
