"""Labelled 63x63 cutout triplets (science, reference, difference) for training and testing real/bogus models.

Pure numpy with an explicit ``numpy.random.Generator``. Units: counts (ADU, gain 1); positions in pixels with
(0, 0) the centre of the first pixel; the candidate sits near the centre pixel (31, 31).

Every triplet is made the same way: a static scene (sky, optionally a galaxy-like host and field stars) is
drawn through the science PSF and through the reference PSF; ``science = scene_sci + transient + noise_sci``,
``reference = scene_ref + noise_ref`` (a deeper image: less noise), and the difference is science minus the
reference *as the subtraction would model it in the science PSF*, ``difference = science - (scene_sci +
noise_ref)``. With a perfect subtraction the difference holds only the transient and the noise of both
images; the bogus kinds are the ways a subtraction goes wrong.

Real (label 1): a point source (Gaussian or Moffat, FWHM 1.5-4.5 px) of S/N 5-60 in the difference, on a flat
sky, on a galaxy-like host (exponential disc, offset), or as a brightening field star.
Bogus (label 0), ``BOGUS_KINDS``: a cosmic ray (sharp, unconvolved hit or short track in the science image), a
hot pixel, a satellite trail (a line through the cutout in the science PSF), a misaligned-subtraction dipole
(the reference star shifted by 0.5-2 px), a PSF-mismatch residual (the reference matched with the wrong
width: a ring/donut or a sharp core in a moat), an edge artefact (part of the cutout off the image: NaN, with a
step/ramp residual along the edge).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SIZE = 63
CENTRE = (SIZE - 1) / 2.0
REAL_KINDS = ("flat", "host", "variable_star")
BOGUS_KINDS = ("cosmic_ray", "hot_pixel", "satellite_trail", "dipole", "psf_mismatch", "edge")


@dataclass(frozen=True)
class TripletSet:
    """``triplets`` (N, 63, 63, 3) float32 raw cutouts; ``labels`` (N,) 1 = real, 0 = bogus; ``kinds`` (N,)."""

    triplets: np.ndarray
    labels: np.ndarray
    kinds: np.ndarray


_yy, _xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float64)


def psf_image(x0: float, y0: float, fwhm: float, beta: float | None = None) -> np.ndarray:
    """A unit-flux PSF on the cutout grid: Gaussian (``beta`` None) or Moffat with index ``beta``."""
    r2 = (_xx - x0) ** 2 + (_yy - y0) ** 2
    if beta is None:
        sigma = fwhm / 2.3548200450309493
        image = np.exp(-0.5 * r2 / sigma ** 2)
    else:
        alpha = fwhm / (2.0 * np.sqrt(2.0 ** (1.0 / beta) - 1.0))
        image = (1.0 + r2 / alpha ** 2) ** (-beta)
    return image / image.sum()


def _noise_equivalent_area(psf: np.ndarray) -> float:
    return 1.0 / float((psf ** 2).sum())


@dataclass(frozen=True)
class _Conditions:
    sky: float
    read_noise: float
    ref_depth: float     # reference noise = science noise / sqrt(ref_depth)
    fwhm_sci: float
    fwhm_ref: float
    beta: float | None


def _conditions(rng: np.random.Generator) -> _Conditions:
    fwhm_sci = rng.uniform(1.5, 4.5)
    beta = None if rng.random() < 0.5 else rng.uniform(2.5, 4.5)
    return _Conditions(sky=rng.uniform(100.0, 3000.0), read_noise=rng.uniform(3.0, 10.0),
                       ref_depth=rng.uniform(2.0, 8.0), fwhm_sci=fwhm_sci,
                       fwhm_ref=fwhm_sci * rng.uniform(0.7, 1.1), beta=beta)


def _static_scene(rng: np.random.Generator, c: _Conditions, host: bool) -> tuple[np.ndarray, np.ndarray]:
    """The static sky in the science PSF and in the reference PSF (field stars, optionally a host galaxy)."""
    sci = np.full((SIZE, SIZE), c.sky)
    ref = np.full((SIZE, SIZE), c.sky)
    for _ in range(rng.poisson(2.0)):  # field stars away from the centre
        x, y = rng.uniform(0, SIZE - 1, 2)
        if np.hypot(x - CENTRE, y - CENTRE) < 8:
            continue
        flux = 10 ** rng.uniform(3.0, 5.0)
        sci += flux * psf_image(x, y, c.fwhm_sci, c.beta)
        ref += flux * psf_image(x, y, c.fwhm_ref, c.beta)
    if host:
        scale = rng.uniform(3.0, 8.0)
        dx, dy = rng.normal(0.0, 3.0, 2)
        q, theta = rng.uniform(0.4, 1.0), rng.uniform(0, np.pi)
        u = (_xx - CENTRE - dx) * np.cos(theta) + (_yy - CENTRE - dy) * np.sin(theta)
        v = -(_xx - CENTRE - dx) * np.sin(theta) + (_yy - CENTRE - dy) * np.cos(theta)
        disc = np.exp(-np.hypot(u, v / q) / scale)
        peak = c.sky * rng.uniform(0.2, 3.0)
        # the host is extended: seeing barely changes it; the same profile in both images
        sci += peak * disc
        ref += peak * disc
    return sci, ref


def _noise(rng: np.random.Generator, image: np.ndarray, read_noise: float, depth: float = 1.0) -> np.ndarray:
    sigma = np.sqrt(np.clip(image, 0, None) + read_noise ** 2) / np.sqrt(depth)
    return rng.normal(0.0, 1.0, image.shape) * sigma


def _flux_for_snr(snr: float, c: _Conditions, psf: np.ndarray, background: float) -> float:
    """Flux giving PSF-fit S/N ``snr`` in the difference (background-limited, science + reference noise)."""
    var = (background + c.read_noise ** 2) * (1.0 + 1.0 / c.ref_depth)
    return snr * np.sqrt(var * _noise_equivalent_area(psf))


def _triplet(rng, c: _Conditions, scene_sci, scene_ref, sci_extra, model_sci=None) -> np.ndarray:
    """Science, reference and difference from the noiseless parts (see the module docstring)."""
    science = scene_sci + sci_extra
    noise_ref = _noise(rng, scene_ref, c.read_noise, c.ref_depth)
    reference = scene_ref + noise_ref
    science = science + _noise(rng, science, c.read_noise)
    modelled = scene_sci if model_sci is None else model_sci
    difference = science - (modelled + noise_ref)
    return np.stack([science, reference, difference], axis=-1)


def make_real(rng: np.random.Generator, kind: str | None = None, snr: float | None = None) -> tuple[np.ndarray, str]:
    kind = kind or REAL_KINDS[rng.integers(len(REAL_KINDS))]
    if kind not in REAL_KINDS:
        raise ValueError(f"unknown real kind {kind!r} (known: {', '.join(REAL_KINDS)})")
    c = _conditions(rng)
    scene_sci, scene_ref = _static_scene(rng, c, host=(kind == "host"))
    x0, y0 = CENTRE + rng.uniform(-1.0, 1.0, 2)
    psf = psf_image(x0, y0, c.fwhm_sci, c.beta)
    if kind == "variable_star":
        base = 10 ** rng.uniform(3.0, 4.5)
        scene_sci = scene_sci + base * psf
        scene_ref = scene_ref + base * psf_image(x0, y0, c.fwhm_ref, c.beta)
    snr = float(snr if snr is not None else np.exp(rng.uniform(np.log(5.0), np.log(60.0))))
    flux = _flux_for_snr(snr, c, psf, float(scene_sci[int(round(y0)), int(round(x0))]))
    return _triplet(rng, c, scene_sci, scene_ref, flux * psf), kind


def make_bogus(rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, str]:
    kind = kind or BOGUS_KINDS[rng.integers(len(BOGUS_KINDS))]
    if kind not in BOGUS_KINDS:
        raise ValueError(f"unknown bogus kind {kind!r} (known: {', '.join(BOGUS_KINDS)})")
    c = _conditions(rng)
    scene_sci, scene_ref = _static_scene(rng, c, host=rng.random() < 0.3)
    sigma_sky = np.sqrt(c.sky + c.read_noise ** 2)
    extra = np.zeros((SIZE, SIZE))
    model_sci = None
    ic = int(CENTRE)
    if kind == "cosmic_ray":
        amp = sigma_sky * rng.uniform(8.0, 80.0)
        length = rng.integers(1, 6)
        angle = rng.uniform(0, np.pi)
        for step in range(length):
            x = int(round(ic + step * np.cos(angle))) + rng.integers(-1, 2) * (step == 0)
            y = int(round(ic + step * np.sin(angle)))
            extra[y, x] += amp * rng.uniform(0.5, 1.0)
    elif kind == "hot_pixel":
        extra[ic + rng.integers(-1, 2), ic + rng.integers(-1, 2)] = sigma_sky * rng.uniform(8.0, 200.0)
    elif kind == "satellite_trail":
        angle = rng.uniform(0, np.pi)
        offset = rng.uniform(-1.5, 1.5)
        dist = (_xx - CENTRE) * np.sin(angle) - (_yy - CENTRE) * np.cos(angle) - offset
        sigma = c.fwhm_sci / 2.3548200450309493
        per_pixel = sigma_sky * rng.uniform(2.0, 30.0)
        extra = per_pixel * np.exp(-0.5 * (dist / sigma) ** 2)
    elif kind == "dipole":
        flux = 10 ** rng.uniform(3.5, 5.5)
        x0, y0 = CENTRE + rng.uniform(-1.0, 1.0, 2)
        shift = rng.uniform(0.5, 2.0)
        angle = rng.uniform(0, 2 * np.pi)
        star_sci = flux * psf_image(x0, y0, c.fwhm_sci, c.beta)
        scene_sci = scene_sci + star_sci
        scene_ref = scene_ref + flux * psf_image(x0, y0, c.fwhm_ref, c.beta)
        # the subtraction models the star where the misaligned reference puts it
        model_sci = scene_sci - star_sci + flux * psf_image(x0 + shift * np.cos(angle), y0 + shift * np.sin(angle),
                                                            c.fwhm_sci, c.beta)
    elif kind == "psf_mismatch":
        flux = 10 ** rng.uniform(3.5, 5.5)
        x0, y0 = CENTRE + rng.uniform(-0.5, 0.5, 2)
        star_sci = flux * psf_image(x0, y0, c.fwhm_sci, c.beta)
        scene_sci = scene_sci + star_sci
        scene_ref = scene_ref + flux * psf_image(x0, y0, c.fwhm_ref, c.beta)
        wrong = c.fwhm_sci * (rng.uniform(1.15, 1.5) if rng.random() < 0.5 else rng.uniform(0.6, 0.85))
        model_sci = scene_sci - star_sci + flux * psf_image(x0, y0, wrong, c.beta)
    else:  # edge: the cutout runs off the image; a step residual along the edge
        depth = rng.integers(5, 30)
        side = rng.integers(4)
        triplet = _triplet(rng, c, scene_sci, scene_ref, extra)
        mask = np.zeros((SIZE, SIZE), bool)
        index = [slice(None), slice(None)]
        index[side % 2] = slice(0, depth) if side < 2 else slice(SIZE - depth, SIZE)
        mask[tuple(index)] = True
        edge = np.zeros((SIZE, SIZE), bool)
        grown = np.roll(mask, (3 if side < 2 else -3), axis=side % 2)
        edge[grown & ~mask] = True
        triplet[..., 2][edge] += sigma_sky * rng.uniform(5.0, 40.0) * rng.choice([-1.0, 1.0])
        triplet[mask] = np.nan
        return triplet, kind
    return _triplet(rng, c, scene_sci, scene_ref, extra, model_sci), kind


def make_set(rng: np.random.Generator, n: int, real_fraction: float = 0.5) -> TripletSet:
    """``n`` labelled triplets, real with probability ``real_fraction``, bogus kinds uniformly."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not 0.0 <= real_fraction <= 1.0:
        raise ValueError(f"real_fraction must be in [0, 1], got {real_fraction}")
    triplets = np.empty((n, SIZE, SIZE, 3), dtype=np.float32)
    labels = (rng.random(n) < real_fraction).astype(np.int8)
    kinds = []
    for i in range(n):
        triplets[i], kind = make_real(rng) if labels[i] else make_bogus(rng)
        kinds.append(kind)
    return TripletSet(triplets, labels, np.array(kinds))
