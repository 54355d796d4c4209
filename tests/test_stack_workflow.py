"""`openastro pipeline stack`: calibrated frames in the database -> tile work units (local executor) -> deep stack."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from click.testing import CliRunner

from server.cli import main
from server.core.db.models import Calibration, Observation, Stack, Target
from server.synth import write_frame
from imgback_frames import DEC0, RA0, common_flux, heterogeneous_specs, render, star_table

pytestmark = pytest.mark.slow


def _add_frames(app, tmp_path, frames, *, calibrated=True, solved=True):
    with app.db.session() as s:
        target = s.query(Target).filter_by(name="Stack field").one_or_none()
        if target is None:
            target = Target(name="Stack field", ra_deg=RA0, dec_deg=DEC0)
            s.add(target)
            s.flush()
        for i, frame in enumerate(frames):
            path = tmp_path / f"f{i}_{calibrated}_{solved}.fits"
            write_frame(frame, path, strip_wcs=not solved)
            key = app.store.put_file(path).key
            obs = Observation(sha256=key.rsplit("/", 1)[1], storage_key=key, kind="image", source_format="fits",
                              exptime=frame.spec.exptime_s, filter="V", target_id=target.id,
                              solved_storage_key=key if solved else None, status="calibrated")
            s.add(obs)
            s.flush()
            if calibrated:
                s.add(Calibration(observation_id=obs.id, catalog="truth", band="V", zero_point=frame.spec.zero_point,
                                  zero_point_err=0.005, n_matches=20))


def test_stack_command_co_adds_calibrated_frames_and_refuses_the_rest(oa_app, tmp_path):
    rng = np.random.default_rng(5)
    stars = star_table(rng)
    specs = heterogeneous_specs(4, rng, shape=(260, 260))
    fs = render(specs, rng, stars)
    _add_frames(oa_app, tmp_path, fs.frames[:3])
    _add_frames(oa_app, tmp_path, fs.frames[3:], calibrated=False)  # refused: no calibration

    env = {"OPENASTRO_VAR_DIR": oa_app.settings.var_dir, "OPENASTRO_PROGRESS": "false"}
    result = CliRunner().invoke(main, ["pipeline", "stack", "--target", "Stack field", "--filter", "V",
                                       "--tile", "128"], env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "refused" in result.output and "not photometrically calibrated" in result.output
    with oa_app.db.session() as s:
        stack = s.query(Stack).one()
        assert stack.status == "done" and stack.n_frames == 3 and stack.band == "V"
        keys = stack.stacked_key, stack.coverage_key, stack.uncertainty_key
    stacked, coverage, unc = (fits.getdata(oa_app.store.path(k)) for k in keys)
    header = fits.getheader(oa_app.store.path(keys[0]))
    assert coverage.max() == 3 and set(np.unique(coverage)) <= {0, 1, 2, 3}
    assert np.all(np.isfinite(unc[coverage > 0]))

    # bright stars covered by all three frames: aperture flux in the common unit (mag = 25 - 2.5 log10 F) within
    # 3% of the truth (bilinear resampling of ~2 px FWHM stars moves up to ~2%, see docs/image_back.md)
    wcs = WCS(header)
    bright = stars[stars["bright"]]
    x, y = wcs.world_to_pixel_values(bright["ra"].to_numpy(), bright["dec"].to_numpy())
    yy, xx = np.mgrid[0:stacked.shape[0], 0:stacked.shape[1]]
    checked = 0
    for xi, yi, mag in zip(x, y, bright["mag"]):
        r = np.hypot(xx - xi, yy - yi)
        ap, ring = r < 7, (r > 9) & (r < 12)
        # inside all three footprints (coverage counts survivors of the clip, so test it on the sky around the star)
        if not (ring.sum() > 50 and np.mean(coverage[ring] == 3) > 0.95):
            continue
        flux = np.nansum(stacked[ap])
        assert flux == pytest.approx(common_flux(mag), rel=0.03), (mag, flux, common_flux(mag))
        checked += 1
    assert checked >= 3


def test_stack_without_calibrated_frames_is_a_clear_error(oa_app, tmp_path):
    rng = np.random.default_rng(6)
    fs = render(heterogeneous_specs(1, rng, shape=(120, 120)), rng, star_table(rng))
    _add_frames(oa_app, tmp_path, fs.frames, calibrated=False, solved=False)
    env = {"OPENASTRO_VAR_DIR": oa_app.settings.var_dir}
    result = CliRunner().invoke(main, ["pipeline", "stack", "--target", "Stack field", "--filter", "V"], env=env)
    assert result.exit_code == 1
    assert "no calibrated V frames" in result.output and "no WCS" in result.output
