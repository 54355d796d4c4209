"""Pure checks of volunteer results (what the init and compare programs decide on).

Nothing here unpickles: a result is opened as a zip, every member must be a ``.npy`` whose header
declares a plain (non-object) dtype, the declared sizes are bounded, and only then is it loaded with
``allow_pickle=False``. Every rejection raises :class:`InvalidResult` naming the offending value.

Init (one result, against its work unit's spec; :func:`check_result`, which the compare script and the
assimilator run again on every file they are handed):

* file and container (``validator/container.py``): a regular file (no link, device, FIFO) of at most the kind's
  ``max_nbytes``, checked on the open descriptor before reading; a zip of ``NAME.npy`` members whose declared
  sizes and ``.npy`` headers are checked before anything is decompressed (no object dtypes = pickles, at most
  :func:`expanded_limit` bytes for this work unit = no bombs); the expected member names only;
* envelope: format/version/kind of ``openastro.result``; the kind, seed (campaign entropy + work-unit spawn
  key) and, when recorded, the work-unit name;
* ``ttv-nested``: shapes consistent (n = niter + nlive rows, ``nlive`` as the spec asked), all finite,
  ``samples_u`` in [0, 1] and ``samples == prior(samples_u)``, ``logl`` non-decreasing, ``logvol`` exactly
  dynesty's static schedule (so rows cannot be added, dropped or duplicated: forged sample counts),
  ``logz`` re-integrated from ``logl``/``logvol``, and ``logl`` recomputed with the TTV likelihood of the spec
  for a few samples;
* ``ttv-emcee``: chain (nsteps, nwalkers, ndim) as the spec asked, finite, ``log_like`` recomputed;
* ``reproject-tile``: shapes = the spec's tile bounds, finite where weighted, weights >= 0.

Compare (two results of the same work unit, from different hosts):

* samplers statistically: floating point differs between hosts, so two honest runs differ; log Z must
  agree within ``K_SIGMA`` combined standard errors, and each parameter's posterior mean within
  ``K_SIGMA`` standard errors of the mean (from each run's weighted spread and Kish effective sample
  size) plus a small floor; posterior widths within a factor ``WIDTH_RATIO``;
* never equivalent: non-finite values anywhere, different seeds, different live points or chain shapes,
  nested iteration counts differing by more than a factor ``SAMPLES_RATIO``;
* tiles: same bounds, same NaN pattern, no infinities, values equal to a relative tolerance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from app.spec import ResultEnvelope, ResultFormatError, read_result
from server.core.boinc_contract import MAX_ROWS_PER_RUN
from validator.container import (MAX_EXPANSION, MAX_META_BYTES, InvalidResult, check_container,  # noqa: F401
                                 open_untrusted, sha256_of)

K_SIGMA = 5.0
WIDTH_RATIO = 3.0
SAMPLES_RATIO = 3.0           # two honest nested runs of one work unit differ far less in iterations than this
MEAN_FLOOR_SD = 0.05          # tolerance floor on posterior means, in posterior standard deviations
LOGZ_FLOOR = 0.1
N_RECOMPUTE = 6               # samples whose log-likelihood is recomputed by the init check
LOGL_ATOL = 1e-4              # cross-host floating-point slack on a recomputed log-likelihood
LOGL_RTOL = 1e-8
TILE_RTOL = 1e-5
_HEADROOM = 64 * 1024         # npy headers and scalars on top of the arrays' data

EXPECTED_ARRAYS = {
    "ttv-nested": {"samples", "samples_u", "samples_id", "samples_it", "ncall", "logl", "logvol", "logwt", "logz",
                   "logzerr", "information", "niter", "nlive", "eff"},
    "ttv-emcee": {"chain", "log_prob", "log_like"},
    "reproject-tile": {"tile", "weight", "footprint", "bounds"},
}


@dataclass(frozen=True)
class CheckedResult:
    kind: str
    envelope: ResultEnvelope
    summary: Mapping[str, Any]
    sha256: str = ""


# --- container and envelope ----------------------------------------------------------------------------

def expanded_limit(spec: Mapping[str, Any]) -> int:
    """The most uncompressed bytes an honest result of this work unit can hold (8 bytes per value), so the
    container check refuses a bigger declaration before decompressing anything."""
    kind = spec.get("kind")
    params = spec.get("params") or {}
    if kind == "ttv-nested":
        ndim = _likelihood(spec).prior.ndim
        values = MAX_ROWS_PER_RUN * (2 * ndim + 9)          # samples, samples_u + 9 per-row arrays
    elif kind == "ttv-emcee":
        sampler = params["sampler"]
        ndim = _likelihood(spec).prior.ndim
        values = int(sampler.get("nsteps", 2000)) * int(sampler.get("nwalkers", 32)) * (ndim + 2)
    elif kind == "reproject-tile":
        y0, y1, x0, x1 = (int(v) for v in params["tile_bounds"])
        values = 3 * max(0, y1 - y0) * max(0, x1 - x0)      # tile, weight, footprint
    else:
        raise InvalidResult(f"no checks for kind {kind!r}")
    return 8 * values + MAX_META_BYTES * 4 + _HEADROOM


def load_checked(source, max_nbytes: int, kind: str, spec: Mapping[str, Any] | None = None,
                 label: str | None = None) -> ResultEnvelope:
    """The envelope of a result whose container passed :func:`check_container` (bounded by the spec's
    :func:`expanded_limit` when a spec is given), with the work unit's kind."""
    if kind not in EXPECTED_ARRAYS:
        raise InvalidResult(f"no checks for kind {kind!r}")
    if isinstance(source, (str, Path)):
        with open_untrusted(source, max_nbytes) as handle:
            return load_checked(handle, max_nbytes, kind, spec, Path(source).name)
    limit = None if spec is None else expanded_limit(spec)
    check_container(source, max_nbytes, kind, EXPECTED_ARRAYS[kind], limit, label)
    try:
        envelope = read_result(source)
    except ResultFormatError as exc:
        raise InvalidResult(f"{label or 'result'}: {exc}") from None
    if envelope.kind != kind:
        raise InvalidResult(f"result kind {envelope.kind!r} is not the work unit's kind {kind!r}")
    return envelope


# --- per-kind init checks ------------------------------------------------------------------------------

def _finite(name: str, arr: np.ndarray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        raise InvalidResult(f"{name} has {int(bad.sum())} non-finite value(s) of {arr.size}")


def _ttv_result(envelope: ResultEnvelope):
    from app.tasks._ttv import ttv_result_from_envelope

    try:
        return ttv_result_from_envelope(envelope)
    except (ValueError, TypeError, KeyError) as exc:
        raise InvalidResult(f"not a well-formed {envelope.kind} result: {exc}") from None


def _likelihood(spec: Mapping[str, Any]):
    from app.ttv.likelihood import TTVLikelihood

    return TTVLikelihood(spec["params"]["likelihood"])


def check_seed(envelope: ResultEnvelope, spec: Mapping[str, Any]) -> None:
    """The result's seed is its work unit's: ``[campaign entropy, spawn key...]`` (SeedSequence), so another
    campaign's result differs in the entropy and another work unit's in the spawn key."""
    got, want = envelope.meta.get("seed"), list(spec["seed"])
    if not isinstance(got, list) or got != want:
        if isinstance(got, list) and got and got[:1] != want[:1]:
            raise InvalidResult(f"result seed {got!r} belongs to another campaign (entropy {got[0]!r}; this work "
                                f"unit's seed is {want!r})")
        raise InvalidResult(f"result seed {got!r} is not the work unit's {want!r}: another work unit's result")


def check_identity(envelope: ResultEnvelope, spec: Mapping[str, Any], wu_name: str | None) -> None:
    """Seed and (when the client recorded it from init_data.xml) work-unit name of the result."""
    check_seed(envelope, spec)
    got = envelope.meta.get("wu_name")
    if wu_name is not None and got is not None and got != wu_name:
        raise InvalidResult(f"result was computed for work unit {got!r}, not {wu_name!r}")


def check_ttv_nested(envelope: ResultEnvelope, spec: Mapping[str, Any], rng: np.random.Generator,
                     likelihood=None, max_rows: int | None = None) -> dict:
    from dynesty.utils import compute_integrals

    check_seed(envelope, spec)
    result = _ttv_result(envelope)
    like = likelihood or _likelihood(spec)
    a = result.arrays
    names = list(like.prior.names)
    if result.param_names != names:
        raise InvalidResult(f"param_names {result.param_names} are not the spec's {names}")
    ndim = len(names)
    n = len(a["logl"])
    nlive, niter = int(a["nlive"]), int(a["niter"])
    want_nlive = int(spec["params"]["sampler"].get("nlive", 0))
    if nlive != want_nlive:
        raise InvalidResult(f"nlive {nlive} is not the {want_nlive} live points the work unit asked for")
    if niter < 1 or n != niter + nlive:
        raise InvalidResult(f"sample count {n} != niter {niter} + nlive {nlive}: forged or truncated run")
    if max_rows is not None and n > max_rows:
        raise InvalidResult(f"{n} samples exceed the {max_rows} allowed per run")
    for key in ("samples", "samples_u"):
        if a[key].shape != (n, ndim):
            raise InvalidResult(f"{key} has shape {a[key].shape}, expected ({n}, {ndim})")
    for key in ("samples_id", "samples_it", "ncall", "logvol", "logwt", "logz", "logzerr", "information"):
        if a[key].shape != (n,):
            raise InvalidResult(f"{key} has shape {a[key].shape}, expected ({n},)")
    for key in ("samples", "samples_u", "logl", "logvol", "logwt", "logz", "logzerr", "information", "eff"):
        _finite(key, a[key])
    if float(a["eff"]) < 0:
        raise InvalidResult(f"sampling efficiency {float(a['eff'])!r} is negative")
    if np.any(a["samples_u"] < 0) or np.any(a["samples_u"] > 1):
        raise InvalidResult("samples_u leave the unit cube [0, 1]")
    if np.any(a["samples_id"] < 0) or np.any(a["samples_id"] >= nlive) or np.any(a["ncall"] < 0):
        raise InvalidResult("samples_id outside [0, nlive) or negative ncall")
    if np.any(np.diff(a["logl"]) < 0):
        raise InvalidResult("logl is not non-decreasing: not a nested-sampling run")
    # Volume schedule: every step shrinks ln X by ln((k+1)/k) with k live points; k = nlive except on
    # likelihood plateaus (dynesty then retires plateau points with k falling) and in the final tail, where
    # the live points are added with k = nlive, nlive-1, ..., 1. Rows cannot be added, dropped or
    # duplicated without breaking this; a forger who also rebuilds the schedule and the integrals changes ln Z,
    # which the comparison with the other replica catches.
    logvol = np.concatenate([[0.0], a["logvol"]])
    step = -np.diff(logvol)
    if not np.all(step > 0):
        raise InvalidResult("logvol is not strictly decreasing: forged sample counts")
    k = 1.0 / np.expm1(step)
    k_int = np.rint(k)
    bad = np.flatnonzero((np.abs(k - k_int) > 1e-6 * np.maximum(k_int, 1.0)) | (k_int < 1) | (k_int > nlive))
    if len(bad):
        i = int(bad[0])
        raise InvalidResult(f"logvol step {float(step[i])!r} at row {i} is not ln((k+1)/k) for 1 <= k <= nlive: "
                            "forged sample counts")
    if not np.array_equal(k_int[niter:], np.arange(nlive, 0, -1, dtype=float)):
        raise InvalidResult("the final nlive rows do not follow the live-point schedule: forged sample counts")
    born = a["samples_it"]
    if np.any(born < 0) or np.any(born[:niter] > np.arange(niter)) or np.any(born[niter:] > niter):
        raise InvalidResult("samples_it says a point died before it was proposed: forged sample counts")
    _, logz, logzvar, _ = compute_integrals(logl=a["logl"], logvol=a["logvol"])
    if not math.isclose(float(logz[-1]), float(a["logz"][-1]), rel_tol=1e-9, abs_tol=1e-6):
        raise InvalidResult(f"logz {float(a['logz'][-1])!r} does not integrate from logl/logvol "
                            f"({float(logz[-1])!r})")
    # Transform and likelihood spot checks, weighted towards the posterior mass and the last rows.
    picks = {n - 1, int(np.argmax(a["logwt"]))}
    picks.update(int(i) for i in rng.choice(n, size=min(n, N_RECOMPUTE), replace=False))
    for i in sorted(picks):
        x = like.prior(a["samples_u"][i])
        if not np.allclose(x, a["samples"][i], rtol=1e-9, atol=1e-9):
            raise InvalidResult(f"samples[{i}] is not prior(samples_u[{i}])")
        logl = like(a["samples"][i])
        if not math.isclose(logl, float(a["logl"][i]), rel_tol=LOGL_RTOL, abs_tol=LOGL_ATOL):
            raise InvalidResult(f"logl[{i}] = {float(a['logl'][i])!r} but the likelihood of samples[{i}] is "
                                f"{logl!r}: the log-likelihoods do not belong to the samples")
    lz, lze = result.log_evidence
    return {"kind": "ttv-nested", "n_samples": n, "nlive": nlive, "log_evidence": lz, "log_evidence_err": lze,
            **posterior_summary(result)}


def check_ttv_emcee(envelope: ResultEnvelope, spec: Mapping[str, Any], rng: np.random.Generator,
                    likelihood=None) -> dict:
    check_seed(envelope, spec)
    result = _ttv_result(envelope)
    like = likelihood or _likelihood(spec)
    a = result.arrays
    sampler = spec["params"]["sampler"]
    ndim = like.prior.ndim
    shape = (int(sampler.get("nsteps", 2000)), int(sampler.get("nwalkers", 32)), ndim)
    if a["chain"].shape != shape:
        raise InvalidResult(f"chain has shape {a['chain'].shape}, the work unit asked for {shape}")
    for key in ("log_prob", "log_like"):
        if a[key].shape != shape[:2]:
            raise InvalidResult(f"{key} has shape {a[key].shape}, expected {shape[:2]}")
    for key in ("chain", "log_prob", "log_like"):
        _finite(key, a[key])
    for _ in range(N_RECOMPUTE):
        i, j = int(rng.integers(shape[0])), int(rng.integers(shape[1]))
        logl = like(a["chain"][i, j])
        if not math.isclose(logl, float(a["log_like"][i, j]), rel_tol=LOGL_RTOL, abs_tol=LOGL_ATOL):
            raise InvalidResult(f"log_like[{i}, {j}] = {float(a['log_like'][i, j])!r} but the likelihood of the "
                                f"chain position is {logl!r}")
    return {"kind": "ttv-emcee", "n_samples": int(shape[0] * shape[1]), **posterior_summary(result)}


def check_tile(envelope: ResultEnvelope, spec: Mapping[str, Any]) -> dict:
    check_seed(envelope, spec)
    a = envelope.arrays
    y0, y1, x0, x1 = (int(v) for v in spec["params"]["tile_bounds"])
    shape = (y1 - y0, x1 - x0)
    for key in ("tile", "weight", "footprint"):
        if a[key].shape != shape:
            raise InvalidResult(f"{key} has shape {a[key].shape}, the tile is {shape}")
    if a["tile"].dtype.kind != "f" or a["weight"].dtype.kind != "f":
        raise InvalidResult(f"tile/weight must be floating point, got {a['tile'].dtype}/{a['weight'].dtype}")
    if a["bounds"].shape != (4,) or [int(v) for v in a["bounds"]] != [y0, y1, x0, x1]:
        raise InvalidResult(f"bounds {a['bounds'].tolist()!r} are not the work unit's {[y0, y1, x0, x1]}")
    weight = a["weight"]
    _finite("weight", weight)
    if np.any(weight < 0):
        raise InvalidResult("weight has negative values")
    foot = a["footprint"].astype(bool)
    if np.any(weight[~foot] > 0):
        raise InvalidResult("weight is positive outside the footprint")
    weighted = weight > 0
    _finite("tile (where weight > 0)", a["tile"][weighted])
    if not foot.any():
        raise InvalidResult("empty footprint: the tile does not overlap the frame it was cut for")
    return {"kind": "reproject-tile", "pixels": int(weighted.sum()), "bounds": [y0, y1, x0, x1]}


def check_result(path: Path, spec: Mapping[str, Any], max_nbytes: int, *, rng: np.random.Generator | None = None,
                 likelihood=None, max_rows: int | None = MAX_ROWS_PER_RUN, wu_name: str | None = None) -> CheckedResult:
    """Every check of one result file against its work unit (the validator's init check, repeated by the
    compare script and the assimilator): bounded open, container, envelope, kind, seed/work unit, then the
    kind's own checks. Spot checks draw from ``rng``, by default seeded from the file's SHA-256 (reproducible)."""
    kind = spec["kind"]
    if kind not in EXPECTED_ARRAYS:
        raise InvalidResult(f"no checks for kind {kind!r}")
    with open_untrusted(path, max_nbytes) as handle:
        digest = sha256_of(handle)
        envelope = load_checked(handle, max_nbytes, kind, spec, Path(path).name)
    rng = rng or np.random.default_rng(int(digest[:32], 16))
    check_identity(envelope, spec, wu_name)
    if kind == "ttv-nested":
        summary = check_ttv_nested(envelope, spec, rng, likelihood, max_rows)
    elif kind == "ttv-emcee":
        summary = check_ttv_emcee(envelope, spec, rng, likelihood)
    else:
        summary = check_tile(envelope, spec)
    return CheckedResult(kind, envelope, summary, digest)


# --- summaries and comparison ---------------------------------------------------------------------------

def weighted_posterior(result) -> tuple[np.ndarray, np.ndarray]:
    """(samples, normalised weights) of a TTV run (nested: importance weights; emcee: second half, equal)."""
    if result.kind == "ttv-nested":
        logwt = result.arrays["logwt"] - np.max(result.arrays["logwt"])
        w = np.exp(logwt)
        return result.arrays["samples"], w / w.sum()
    chain = result.arrays["chain"]
    flat = chain[len(chain) // 2:].reshape(-1, chain.shape[-1])
    return flat, np.full(len(flat), 1.0 / len(flat))


def _ess(result, weights: np.ndarray) -> float:
    if result.kind == "ttv-nested":
        return float(1.0 / np.sum(weights ** 2))
    chain = result.arrays["chain"]
    half = chain[len(chain) // 2:]
    import emcee

    # quiet=True: a chain shorter than 50 tau gives a (logged) lower bound on tau instead of raising
    tau = float(np.max(emcee.autocorr.integrated_time(half, quiet=True)))
    if not math.isfinite(tau):
        tau = float(len(half))
    return max(1.0, half.shape[0] * half.shape[1] / max(tau, 1.0))


def posterior_summary(result) -> dict:
    samples, w = weighted_posterior(result)
    mean = np.sum(samples * w[:, None], axis=0)
    sd = np.sqrt(np.maximum(np.sum((samples - mean) ** 2 * w[:, None], axis=0), 0.0))
    return {"param_names": result.param_names, "mean": mean.tolist(), "sd": sd.tolist(), "ess": _ess(result, w)}


@dataclass(frozen=True)
class Comparison:
    equivalent: bool
    reason: str


def _all_finite(values) -> bool:
    return bool(np.all(np.isfinite(np.asarray(values, dtype=np.float64))))


def compare_ttv(a, b) -> Comparison:
    """Statistical agreement of two runs of one work unit. Anything non-finite is never equivalent (NaN fails
    every ``>`` test, so it is checked first), nor are runs of different sizes (live points, chain shape, or
    nested iterations differing by more than a factor ``SAMPLES_RATIO``)."""
    if a.kind != b.kind or a.param_names != b.param_names:
        return Comparison(False, f"different kinds/parameters: {a.kind} {a.param_names} vs {b.kind} {b.param_names}")
    for label, run in (("first", a), ("second", b)):
        bad = sorted(k for k, v in run.arrays.items() if np.asarray(v).dtype.kind == "f" and not _all_finite(v))
        if bad:
            return Comparison(False, f"the {label} run has non-finite values in {bad}")
    if a.kind == "ttv-nested":
        na, nb = int(a.arrays["nlive"]), int(b.arrays["nlive"])
        ia, ib = int(a.arrays["niter"]), int(b.arrays["niter"])
        if na != nb:
            return Comparison(False, f"live points differ: {na} vs {nb}")
        if min(ia, ib) < 1 or max(ia, ib) / min(ia, ib) > SAMPLES_RATIO:
            return Comparison(False, f"iterations {ia} and {ib} differ by more than a factor {SAMPLES_RATIO}")
        (za, ea), (zb, eb) = a.log_evidence, b.log_evidence
        if not _all_finite([za, ea, zb, eb]):
            return Comparison(False, f"non-finite log Z: {za!r} +- {ea!r} vs {zb!r} +- {eb!r}")
        tol = K_SIGMA * math.hypot(ea, eb) + LOGZ_FLOOR
        if abs(za - zb) > tol:
            return Comparison(False, f"log Z {za:.3f} +- {ea:.3f} vs {zb:.3f} +- {eb:.3f} differ by more than {tol:.3f}")
    elif a.arrays["chain"].shape != b.arrays["chain"].shape:
        return Comparison(False, f"chain shapes {a.arrays['chain'].shape} vs {b.arrays['chain'].shape}")
    sa, sb = posterior_summary(a), posterior_summary(b)
    if not _all_finite([*sa["mean"], *sa["sd"], *sb["mean"], *sb["sd"], sa["ess"], sb["ess"]]):
        return Comparison(False, "non-finite posterior mean, width or effective sample size")
    for k, name in enumerate(a.param_names):
        ma, mb, da, db = sa["mean"][k], sb["mean"][k], sa["sd"][k], sb["sd"][k]
        pooled = math.sqrt(0.5 * (da * da + db * db))
        tol = K_SIGMA * math.sqrt(da * da / sa["ess"] + db * db / sb["ess"]) + MEAN_FLOOR_SD * pooled
        if not abs(ma - mb) <= tol:
            return Comparison(False, f"{name}: posterior means {ma:.6g} and {mb:.6g} differ by more than {tol:.3g}")
        if min(da, db) > 0 and max(da, db) / min(da, db) > WIDTH_RATIO:
            return Comparison(False, f"{name}: posterior widths {da:.3g} and {db:.3g} differ by more than "
                                     f"a factor {WIDTH_RATIO}")
        if (da == 0) != (db == 0):
            return Comparison(False, f"{name}: one posterior has zero width ({da!r} vs {db!r})")
    return Comparison(True, "statistically equivalent")


def compare_tiles(a: ResultEnvelope, b: ResultEnvelope) -> Comparison:
    if a.arrays["bounds"].tolist() != b.arrays["bounds"].tolist():
        return Comparison(False, f"bounds {a.arrays['bounds'].tolist()} vs {b.arrays['bounds'].tolist()}")
    ta, tb = a.arrays["tile"].astype(np.float64), b.arrays["tile"].astype(np.float64)
    if ta.shape != tb.shape:
        return Comparison(False, f"tile shapes {ta.shape} vs {tb.shape}")
    if np.isinf(ta).any() or np.isinf(tb).any():
        return Comparison(False, "a tile holds infinite values")
    nan_a, nan_b = np.isnan(ta), np.isnan(tb)
    if not np.array_equal(nan_a, nan_b):
        return Comparison(False, f"NaN patterns differ in {int(np.sum(nan_a != nan_b))} pixels")
    ok = ~nan_a
    scale = float(np.max(np.abs(ta[ok]))) if ok.any() else 0.0
    atol = TILE_RTOL * max(scale, 1e-30)
    if not np.allclose(ta[ok], tb[ok], rtol=TILE_RTOL, atol=atol):
        diff = float(np.max(np.abs(ta[ok] - tb[ok])))
        return Comparison(False, f"tile values differ by up to {diff:.3g} (tolerance {TILE_RTOL} relative)")
    wa, wb = a.arrays["weight"].astype(np.float64), b.arrays["weight"].astype(np.float64)
    if wa.shape != wb.shape or not (_all_finite(wa) and _all_finite(wb)):
        return Comparison(False, "weight tiles differ in shape or hold non-finite values")
    wscale = max(float(np.max(np.abs(wa))) if wa.size else 0.0, 1e-30)
    if not np.allclose(wa, wb, rtol=TILE_RTOL, atol=TILE_RTOL * wscale):
        return Comparison(False, "weight tiles differ beyond tolerance")
    return Comparison(True, "tiles agree")


def compare_envelopes(a: ResultEnvelope, b: ResultEnvelope) -> Comparison:
    if a.kind != b.kind:
        return Comparison(False, f"kinds differ: {a.kind} vs {b.kind}")
    if a.meta.get("seed") != b.meta.get("seed"):
        return Comparison(False, f"seeds differ: {a.meta.get('seed')!r} vs {b.meta.get('seed')!r}")
    if a.kind == "reproject-tile":
        return compare_tiles(a, b)
    try:
        return compare_ttv(_ttv_result(a), _ttv_result(b))
    except InvalidResult as exc:
        return Comparison(False, str(exc))
