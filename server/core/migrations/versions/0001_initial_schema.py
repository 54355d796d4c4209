"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-25 08:36:09.676587
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table('sites',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('latitude_deg', sa.Double(), nullable=True),
    sa.Column('longitude_deg', sa.Double(), nullable=True),
    sa.Column('height_m', sa.Double(), nullable=True),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('targets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('ra_deg', sa.Double(), nullable=True),
    sa.Column('dec_deg', sa.Double(), nullable=True),
    sa.Column('kind', sa.String(length=32), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    op.create_table('api_keys',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('prefix', sa.String(length=16), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.Column('revoked_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('key_hash')
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_api_keys_prefix'), ['prefix'], unique=False)

    op.create_table('campaigns',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=120), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('executor', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=True),
    sa.Column('config', sa.JSON(), nullable=False),
    sa.Column('seed_entropy', sa.String(length=80), nullable=True),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.Column('updated_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('campaigns', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_campaigns_status'), ['status'], unique=False)

    op.create_table('instruments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=False),
    sa.Column('camera', sa.String(length=120), nullable=False),
    sa.Column('telescope', sa.String(length=120), nullable=True),
    sa.Column('pixel_scale_arcsec', sa.Double(), nullable=True),
    sa.Column('gain_e_per_adu', sa.Double(), nullable=True),
    sa.Column('zero_point', sa.Double(), nullable=True),
    sa.Column('zero_point_err', sa.Double(), nullable=True),
    sa.Column('color_term', sa.Double(), nullable=True),
    sa.Column('color_term_err', sa.Double(), nullable=True),
    sa.Column('n_calibrations', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('site_id', 'camera', name='uq_instrument_site_camera')
    )
    op.create_table('light_curves',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('band', sa.String(length=16), nullable=False),
    sa.Column('n_points', sa.Integer(), nullable=False),
    sa.Column('n_rejected', sa.Integer(), nullable=False),
    sa.Column('storage_key', sa.String(length=255), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('light_curves', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_light_curves_target_id'), ['target_id'], unique=False)

    op.create_table('observations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('storage_key', sa.String(length=255), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('source_format', sa.String(length=32), nullable=False),
    sa.Column('original_name', sa.String(length=255), nullable=True),
    sa.Column('size_bytes', sa.BigInteger(), nullable=True),
    sa.Column('date_obs', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True),
    sa.Column('mjd', sa.Double(), nullable=True),
    sa.Column('exptime', sa.Double(), nullable=True),
    sa.Column('filter', sa.String(length=32), nullable=True),
    sa.Column('binning', sa.Integer(), nullable=True),
    sa.Column('gain', sa.Double(), nullable=True),
    sa.Column('site_id', sa.Integer(), nullable=True),
    sa.Column('instrument_id', sa.Integer(), nullable=True),
    sa.Column('target_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('wcs_failed', sa.Boolean(), nullable=False),
    sa.Column('wcs_failed_reason', sa.Text(), nullable=True),
    sa.Column('solved_storage_key', sa.String(length=255), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['instrument_id'], ['instruments.id'], ),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sha256')
    )
    with op.batch_alter_table('observations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_observations_date_obs'), ['date_obs'], unique=False)
        batch_op.create_index(batch_op.f('ix_observations_site_id'), ['site_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_observations_status'), ['status'], unique=False)
        batch_op.create_index(batch_op.f('ix_observations_target_id'), ['target_id'], unique=False)

    op.create_table('periodograms',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('light_curve_id', sa.Integer(), nullable=True),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('band', sa.String(length=16), nullable=True),
    sa.Column('best_period', sa.Double(), nullable=False),
    sa.Column('best_period_err', sa.Double(), nullable=True),
    sa.Column('fap', sa.Double(), nullable=True),
    sa.Column('fap_method', sa.String(length=16), nullable=True),
    sa.Column('storage_key', sa.String(length=255), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['light_curve_id'], ['light_curves.id'], ),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('periodograms', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_periodograms_target_id'), ['target_id'], unique=False)

    op.create_table('posteriors',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('bin_index', sa.Integer(), nullable=True),
    sa.Column('model', sa.String(length=32), nullable=False),
    sa.Column('n_runs', sa.Integer(), nullable=False),
    sa.Column('log_evidence', sa.Double(), nullable=True),
    sa.Column('log_evidence_err', sa.Double(), nullable=True),
    sa.Column('storage_key', sa.String(length=255), nullable=True),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.Column('updated_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('campaign_id', 'bin_index', 'model', name='uq_posterior')
    )
    with op.batch_alter_table('posteriors', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_posteriors_campaign_id'), ['campaign_id'], unique=False)

    op.create_table('stacks',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=True),
    sa.Column('band', sa.String(length=16), nullable=True),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('n_frames', sa.Integer(), nullable=False),
    sa.Column('grid', sa.JSON(), nullable=True),
    sa.Column('stacked_key', sa.String(length=255), nullable=True),
    sa.Column('uncertainty_key', sa.String(length=255), nullable=True),
    sa.Column('coverage_key', sa.String(length=255), nullable=True),
    sa.Column('meta', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], ),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('work_units',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=190), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('bin_index', sa.Integer(), nullable=True),
    sa.Column('run_index', sa.Integer(), nullable=True),
    sa.Column('spec', sa.JSON(), nullable=False),
    sa.Column('input_files', sa.JSON(), nullable=True),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('error_mask', sa.Integer(), nullable=False),
    sa.Column('boinc_wu_id', sa.BigInteger(), nullable=True),
    sa.Column('canonical_result_id', sa.Integer(), nullable=True),
    sa.Column('rsc_fpops_est', sa.Double(), nullable=True),
    sa.Column('assimilated_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('work_units', schema=None) as batch_op:
        batch_op.create_index('ix_wu_campaign_state', ['campaign_id', 'state'], unique=False)

    op.create_table('calibrations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('observation_id', sa.Integer(), nullable=False),
    sa.Column('catalog', sa.String(length=64), nullable=False),
    sa.Column('band', sa.String(length=16), nullable=True),
    sa.Column('zero_point', sa.Double(), nullable=False),
    sa.Column('zero_point_err', sa.Double(), nullable=True),
    sa.Column('color_term', sa.Double(), nullable=True),
    sa.Column('color_term_err', sa.Double(), nullable=True),
    sa.Column('scatter_mag', sa.Double(), nullable=True),
    sa.Column('n_matches', sa.Integer(), nullable=False),
    sa.Column('fwhm_px', sa.Double(), nullable=True),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['observation_id'], ['observations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('observation_id')
    )
    op.create_table('instrument_calibrations',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('instrument_id', sa.Integer(), nullable=False),
    sa.Column('observation_id', sa.Integer(), nullable=True),
    sa.Column('band', sa.String(length=16), nullable=True),
    sa.Column('zero_point', sa.Double(), nullable=False),
    sa.Column('zero_point_err', sa.Double(), nullable=True),
    sa.Column('color_term', sa.Double(), nullable=True),
    sa.Column('color_term_err', sa.Double(), nullable=True),
    sa.Column('scatter_mag', sa.Double(), nullable=True),
    sa.Column('n_stars', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['instrument_id'], ['instruments.id'], ),
    sa.ForeignKeyConstraint(['observation_id'], ['observations.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('instrument_calibrations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_instrument_calibrations_instrument_id'), ['instrument_id'], unique=False)

    op.create_table('photometry_points',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('observation_id', sa.Integer(), nullable=True),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('site_id', sa.Integer(), nullable=True),
    sa.Column('observer_code', sa.String(length=32), nullable=True),
    sa.Column('time_utc', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True),
    sa.Column('jd_utc', sa.Double(), nullable=False),
    sa.Column('bjd_tdb', sa.Double(), nullable=True),
    sa.Column('band', sa.String(length=16), nullable=False),
    sa.Column('mag', sa.Double(), nullable=True),
    sa.Column('mag_err', sa.Double(), nullable=True),
    sa.Column('flux', sa.Double(), nullable=True),
    sa.Column('flux_err', sa.Double(), nullable=True),
    sa.Column('is_upper_limit', sa.Boolean(), nullable=False),
    sa.Column('source', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['observation_id'], ['observations.id'], ),
    sa.ForeignKeyConstraint(['site_id'], ['sites.id'], ),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('photometry_points', schema=None) as batch_op:
        batch_op.create_index('ix_phot_target_band', ['target_id', 'band'], unique=False)
        batch_op.create_index(batch_op.f('ix_photometry_points_observation_id'), ['observation_id'], unique=False)

    op.create_table('results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('work_unit_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=190), nullable=False),
    sa.Column('storage_key', sa.String(length=255), nullable=True),
    sa.Column('sha256', sa.String(length=64), nullable=True),
    sa.Column('validate_state', sa.String(length=16), nullable=False),
    sa.Column('invalid_reason', sa.Text(), nullable=True),
    sa.Column('runtime_s', sa.Double(), nullable=True),
    sa.Column('summary', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['work_unit_id'], ['work_units.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name')
    )
    with op.batch_alter_table('results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_results_work_unit_id'), ['work_unit_id'], unique=False)

    op.create_table('stage_runs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('observation_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('started_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.Column('finished_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=True),
    sa.ForeignKeyConstraint(['observation_id'], ['observations.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('observation_id', 'stage', name='uq_stage_run')
    )
    op.create_table('transit_times',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('target_id', sa.Integer(), nullable=False),
    sa.Column('planet', sa.String(length=32), nullable=False),
    sa.Column('epoch', sa.Integer(), nullable=False),
    sa.Column('t_obs', sa.Double(), nullable=False),
    sa.Column('sigma', sa.Double(), nullable=False),
    sa.Column('t_pred', sa.Double(), nullable=True),
    sa.Column('flag', sa.String(length=32), nullable=True),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('observation_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime().with_variant(mysql.DATETIME(fsp=6), 'mariadb').with_variant(mysql.DATETIME(fsp=6), 'mysql'), nullable=False),
    sa.ForeignKeyConstraint(['observation_id'], ['observations.id'], ),
    sa.ForeignKeyConstraint(['target_id'], ['targets.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('target_id', 'planet', 'epoch', 'source', name='uq_transit_time')
    )
    with op.batch_alter_table('transit_times', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_transit_times_target_id'), ['target_id'], unique=False)




def downgrade() -> None:
    op.drop_table('transit_times')
    op.drop_table('stage_runs')
    op.drop_table('results')
    op.drop_table('photometry_points')
    op.drop_table('instrument_calibrations')
    op.drop_table('calibrations')
    op.drop_table('work_units')
    op.drop_table('stacks')
    op.drop_table('posteriors')
    op.drop_table('periodograms')
    op.drop_table('observations')
    op.drop_table('light_curves')
    op.drop_table('instruments')
    op.drop_table('campaigns')
    op.drop_table('api_keys')
    op.drop_table('targets')
    op.drop_table('sites')
