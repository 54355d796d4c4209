"""Small work units of every kind and BOINC-like slot layouts, for the volunteer-app tests and
``benchmarks/bench_app.py``.

A slot is laid out like the ones a real client made (../shared/boinc-captures/)::

    ROOT/projects/127.0.0.1_openastro_test/PHYSICAL_NAMES   input files, output targets
    ROOT/slots/0/                                           the task's working directory
        init_data.xml                                       the captured file (ncpus 1)
        wu.json, cutout.fits, result.npz                    stubs "<soft_link>../../projects/..."
                                                            (mode "stub") or real copies of the
                                                            inputs and no output (mode "copy")
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

PROJECT = "127.0.0.1_openastro_test"
CAPTURED_INIT_DATA = Path(__file__).parent / "data" / "boinc" / "init_data.xml"


@dataclass(frozen=True)
class WorkUnit:
    name: str
    spec: dict
    files: dict  # open name -> bytes (inputs other than wu.json)


@dataclass(frozen=True)
class Slot:
    root: Path
    slot_dir: Path
    output_path: Path  # where the result lands (stub target or slot file)
    mode: str


# --- work units ---------------------------------------------------------------------------------

def _tan_header(crval, cdelt_deg, rot_deg, shape):
    c, s = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    return {"NAXIS": 2, "NAXIS1": shape[1], "NAXIS2": shape[0],
            "CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CUNIT1": "deg", "CUNIT2": "deg",
            "CRVAL1": float(crval[0]), "CRVAL2": float(crval[1]),
            "CRPIX1": (shape[1] + 1) / 2.0, "CRPIX2": (shape[0] + 1) / 2.0,
            "CD1_1": float(-cdelt_deg * c), "CD1_2": float(cdelt_deg * s),
            "CD2_1": float(cdelt_deg * s), "CD2_2": float(cdelt_deg * c)}


def reproject_tile_workunit(seed: int = 11, frame_shape=(1100, 1100), tile=(0, 900, 0, 900)) -> WorkUnit:
    """A smooth star field on a TAN frame; one output tile of a rotated, rescaled TAN grid."""
    from astropy.io import fits

    from app.reproject_kernel import as_wcs, cutout_for_tile

    rng = np.random.default_rng(seed)
    ny, nx = frame_shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    image = 100.0 + 0.01 * xx + 0.02 * yy
    for _ in range(60):
        y0, x0 = rng.uniform(0, ny), rng.uniform(0, nx)
        image += rng.uniform(50, 500) * np.exp(-((yy - y0) ** 2 + (xx - x0) ** 2) / (2 * 2.0 ** 2))
    image = image.astype(np.float32)
    weight = np.ones_like(image)
    weight[:, :5] = 0.0  # a masked edge column band
    in_hdr = _tan_header((150.0, 2.0), 2.0 / 3600, 0.0, frame_shape)
    out_hdr = _tan_header((150.01, 2.005), 2.2 / 3600, 12.0, (1000, 1000))
    box = cutout_for_tile(frame_shape, as_wcs(in_hdr), as_wcs(out_hdr), tile, margin_px=2)
    if box is None:
        raise RuntimeError("test geometry: the tile does not overlap the frame")
    cy0, cy1, cx0, cx1 = box
    header = fits.Header(in_hdr)
    primary = fits.PrimaryHDU(image[cy0:cy1, cx0:cx1], header=header)
    weight_hdu = fits.ImageHDU(weight[cy0:cy1, cx0:cx1], name="WEIGHT")
    import io

    buffer = io.BytesIO()
    fits.HDUList([primary, weight_hdu]).writeto(buffer)
    spec = {"format": "openastro.wu", "version": 1, "kind": "reproject-tile",
            "seed": [seed, 0], "inputs": {"cutout": "cutout.fits"},
            "params": {"output_wcs": out_hdr, "tile_bounds": list(tile),
                       "cutout_origin": [cy0, cx0], "method": "bilinear"}}
    return WorkUnit("oa_tile_test_1", spec, {"cutout.fits": buffer.getvalue()})


def _ttv_likelihood(seed: int, n_transits: int) -> dict:
    from app.ttv.synthetic import kepler88_like

    system = kepler88_like(np.random.default_rng(seed), n_transits=n_transits)
    prior = json.loads(json.dumps(system.truth_spec))
    perturber = prior["planets"][1]
    # Free: perturber mass (Earth masses), period and conjunction time (days); the rest fixed at
    # the truth (c.mass 206.6, c.period 22.3, c.tconj 12.0).
    perturber["mass"] = {"dist": "loguniform", "min": 150.0, "max": 260.0}
    perturber["period"] = {"dist": "uniform", "min": 22.2, "max": 22.4}
    perturber["tconj"] = {"dist": "uniform", "min": 11.9, "max": 12.1}
    observed = {"b": {"epoch": system.epochs.tolist(), "time": system.times.tolist(),
                      "sigma": system.sigma.tolist()}}
    return {"prior": prior, "observed": observed}


def ttv_nested_workunit(seed: int = 7, nlive: int = 30) -> WorkUnit:
    params = {"likelihood": _ttv_likelihood(seed, 30),
              "sampler": {"name": "dynesty", "nlive": nlive, "sample": "rwalk", "dlogz": 0.5},
              "label": {"system": "kepler88-like", "bin": [22.2, 22.4]}}
    spec = {"format": "openastro.wu", "version": 1, "kind": "ttv-nested", "seed": [20261125, 3],
            "inputs": {}, "params": params}
    return WorkUnit("oa_ttv_nested_test_1", spec, {})


def ttv_emcee_workunit(seed: int = 7) -> WorkUnit:
    params = {"likelihood": _ttv_likelihood(seed, 30),
              "sampler": {"name": "emcee", "nwalkers": 16, "nsteps": 150},
              "label": {"system": "kepler88-like"}}
    spec = {"format": "openastro.wu", "version": 1, "kind": "ttv-emcee", "seed": [20261125, 4],
            "inputs": {}, "params": params}
    return WorkUnit("oa_ttv_emcee_test_1", spec, {})


# --- slots --------------------------------------------------------------------------------------

def init_data_xml(wu_name: str, *, checkpoint_period: float | None = None, ncpus: float | None = None) -> str:
    """The captured init_data.xml with this work unit's name (and optional overrides)."""
    text = CAPTURED_INIT_DATA.read_text()
    text = re.sub(r"<wu_name>.*?</wu_name>", f"<wu_name>{wu_name}</wu_name>", text)
    text = re.sub(r"<result_name>.*?</result_name>", f"<result_name>{wu_name}_0</result_name>", text)
    if checkpoint_period is not None:
        text = re.sub(r"<checkpoint_period>.*?</checkpoint_period>",
                      f"<checkpoint_period>{checkpoint_period:.6f}</checkpoint_period>", text)
    if ncpus is not None:
        text = re.sub(r"<ncpus>.*?</ncpus>", f"<ncpus>{ncpus:.6f}</ncpus>", text)
    return text


def _stub(physical: str) -> str:
    return f"<soft_link>../../projects/{PROJECT}/{physical}</soft_link>\n"


def lay_out_slot(root: Path, wu: WorkUnit, *, mode: str = "stub", init_data: str | None = "default",
                 out_name: str = "result.npz") -> Slot:
    """Make ROOT/projects/PROJECT and ROOT/slots/0 for ``wu`` (see module doc)."""
    if mode not in ("stub", "copy"):
        raise ValueError(f"mode must be 'stub' or 'copy', got {mode!r}")
    project = root / "projects" / PROJECT
    slot = root / "slots" / "0"
    project.mkdir(parents=True)
    slot.mkdir(parents=True)
    files = {"wu.json": json.dumps(wu.spec).encode(), **wu.files}
    for open_name, data in files.items():
        physical = f"{wu.name}_{open_name.replace('.', '_')}"
        (project / physical).write_bytes(data)
        if mode == "stub":
            (slot / open_name).write_text(_stub(physical))
        else:
            (slot / open_name).write_bytes(data)
    if mode == "stub":
        physical_out = f"{wu.name}_0_r1509969383_0"
        (slot / out_name).write_text(_stub(physical_out))
        output_path = project / physical_out
    else:
        output_path = slot / out_name
    if init_data == "default":
        init_data = init_data_xml(wu.name)
    if init_data is not None:
        (slot / "init_data.xml").write_text(init_data)
    return Slot(root=root, slot_dir=slot, output_path=output_path, mode=mode)
