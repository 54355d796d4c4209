"""app.tanwcs (numpy TAN/TAN-SIP) against astropy.wcs (wcslib), and the kernel's choice between them."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from app.reproject_kernel import reproject_array
from app.tanwcs import tan_sip_from_cards


def _header(rng, *, sip: bool, pc_form: bool) -> dict:
    ra, dec, rot = rng.uniform(0, 360), rng.uniform(-85, 85), rng.uniform(0, 360)
    scale = rng.uniform(0.5, 5.0) / 3600
    c, s = np.cos(np.radians(rot)), np.sin(np.radians(rot))
    h = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": ra, "CRVAL2": dec,
         "CRPIX1": rng.uniform(100, 2000), "CRPIX2": rng.uniform(100, 2000), "RADESYS": "ICRS"}
    if pc_form:
        h.update({"CDELT1": -scale, "CDELT2": scale, "PC1_1": c, "PC1_2": -s, "PC2_1": s, "PC2_2": c})
    else:
        h.update({"CD1_1": -scale * c, "CD1_2": scale * s, "CD2_1": scale * s, "CD2_2": scale * c})
    if sip:
        r = 2000.0
        h["CTYPE1"], h["CTYPE2"] = "RA---TAN-SIP", "DEC--TAN-SIP"
        h["A_ORDER"] = h["B_ORDER"] = 3
        for key, power in (("A_2_0", 2), ("A_0_2", 2), ("B_1_1", 2), ("A_3_0", 3), ("B_0_3", 3), ("B_2_1", 3)):
            h[key] = rng.normal() * 3.0 / r**power
    return h


@pytest.mark.parametrize("sip", [False, True])
@pytest.mark.parametrize("pc_form", [False, True])
def test_tan_sip_matches_wcslib_to_1e9_px_both_ways(sip, pc_form):
    rng = np.random.default_rng(5 + 2 * sip + pc_form)
    for _ in range(10):
        h = _header(rng, sip=sip, pc_form=pc_form)
        ours = tan_sip_from_cards(h)
        assert ours is not None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = WCS(fits.Header(h))
        x, y = rng.uniform(-200, 4200, 3000), rng.uniform(-200, 4200, 3000)
        ra, dec = ref.all_pix2world(x, y, 0)
        ra1, dec1 = ours.pixel_to_world(x, y)
        scale_deg = np.sqrt(abs(np.linalg.det(ref.pixel_scale_matrix)))
        dra = ((ra1 - ra + 180) % 360 - 180) * np.cos(np.radians(dec))
        assert np.max(np.hypot(dra, dec1 - dec)) / scale_deg < 1e-9
        xb, yb = ours.world_to_pixel(ra, dec)
        assert np.max(np.hypot(xb - x, yb - y)) < 1e-9


@pytest.mark.parametrize("change", [
    {"CTYPE1": "RA---SIN", "CTYPE2": "DEC--SIN"},
    {"CTYPE1": "RA---TPV", "CTYPE2": "DEC--TPV", "PV1_1": 1.0},
    {"CROTA2": 10.0},
    {"LONPOLE": 0.0},
    {"RADESYS": "FK4"},
    {"CUNIT1": "arcsec"},
    {"CRVAL2": 90.0},
    {"A_ORDER": 2, "A_2_0": 1e-7},  # SIP keywords without the -SIP suffix
    {"CTYPE1": "DEC--TAN", "CTYPE2": "RA---TAN"},  # swapped axes
])
def test_headers_it_does_not_model_are_left_to_astropy(change):
    rng = np.random.default_rng(1)
    h = _header(rng, sip=False, pc_form=False)
    assert tan_sip_from_cards(h) is not None
    assert tan_sip_from_cards({**h, **change}) is None


def test_reprojection_from_headers_agrees_with_the_astropy_path():
    rng = np.random.default_rng(2)
    win = _header(rng, sip=True, pc_form=False)
    win.update({"CRVAL1": 150.0, "CRVAL2": 30.0, "CRPIX1": 60.5, "CRPIX2": 50.5})
    wout = {**win, "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRVAL1": 150.001, "CRPIX1": 40.0}
    for key in ("A_ORDER", "B_ORDER", "A_2_0", "A_0_2", "B_1_1", "A_3_0", "B_0_3", "B_2_1"):
        wout.pop(key)
    yy, xx = np.mgrid[0:100, 0:120]
    data = (5.0 + np.sin(xx / 7.0) + np.cos(yy / 5.0)).astype(np.float32)
    fast = reproject_array(data, None, win, wout, (90, 80))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        slow = reproject_array(data, None, WCS(fits.Header(win)), WCS(fits.Header(wout)), (90, 80))
    assert fast.step == slow.step and np.array_equal(fast.footprint, slow.footprint)
    ok = np.isfinite(slow.data)
    assert ok.sum() > 1000
    np.testing.assert_allclose(fast.data[ok], slow.data[ok], rtol=1e-6)


def test_reprojecting_tan_sip_headers_does_not_import_astropy():
    code = (
        "import sys, numpy as np\n"
        "from app.reproject_kernel import reproject_array\n"
        "h = {'CTYPE1': 'RA---TAN-SIP', 'CTYPE2': 'DEC--TAN-SIP', 'CRVAL1': 10.0, 'CRVAL2': 20.0,\n"
        "     'CRPIX1': 50.5, 'CRPIX2': 50.5, 'CD1_1': -5e-4, 'CD1_2': 0.0, 'CD2_1': 0.0, 'CD2_2': 5e-4,\n"
        "     'A_ORDER': 2, 'B_ORDER': 2, 'A_2_0': 1e-6}\n"
        "g = {k: v for k, v in h.items() if not k.startswith(('A_', 'B_'))}\n"
        "g.update(CTYPE1='RA---TAN', CTYPE2='DEC--TAN')\n"
        "r = reproject_array(np.ones((100, 100), np.float32), None, h, g, (100, 100))\n"
        "assert r.footprint.any()\n"
        "print(sorted(m for m in sys.modules if m.startswith('astropy')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
