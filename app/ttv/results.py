"""Versioned plain-data result files for TTV runs (``.npz``, loaded with allow_pickle=False).

Schema ``openastro.ttv-result`` version 1.  Every file has ``meta``: a 0-d unicode array
holding a JSON object with at least ``format``, ``version``, ``kind`` and ``param_names``.

``kind == "ttv-nested"`` (dynesty static run) arrays, one row per dead/live sample:
  samples (n, ndim) free physical parameters (see app.ttv.priors), samples_u (n, ndim),
  samples_id, samples_it, ncall (int64, n), logl, logvol, logwt, logz, logzerr,
  information (float64, n); scalars (0-d) niter, nlive (int64), eff (float64).
``kind == "ttv-emcee"``: chain (nsteps, nwalkers, ndim) physical parameters,
  log_prob (nsteps, nwalkers), log_like (nsteps, nwalkers).
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np

from ..atomic import atomic_open

FORMAT = "openastro.ttv-result"
VERSION = 1
KINDS = ("ttv-nested", "ttv-emcee")
_NESTED = {"samples": (2, np.float64), "samples_u": (2, np.float64), "samples_id": (1, np.int64),
           "samples_it": (1, np.int64), "ncall": (1, np.int64), "logl": (1, np.float64),
           "logvol": (1, np.float64), "logwt": (1, np.float64), "logz": (1, np.float64),
           "logzerr": (1, np.float64), "information": (1, np.float64),
           "niter": (0, np.int64), "nlive": (0, np.int64), "eff": (0, np.float64)}
_EMCEE = {"chain": (3, np.float64), "log_prob": (2, np.float64), "log_like": (2, np.float64)}
_SCHEMA = {"ttv-nested": _NESTED, "ttv-emcee": _EMCEE}


@dataclass(frozen=True)
class TTVRunResult:
    """One sampler run: ``kind``, ``meta`` (plain JSON data) and the arrays of that kind."""

    kind: str
    meta: dict
    arrays: dict = field(repr=False)

    @property
    def param_names(self) -> list[str]:
        return list(self.meta["param_names"])

    @property
    def log_evidence(self) -> tuple[float, float]:
        """(ln Z, its error) for nested runs; (nan, nan) for emcee."""
        if self.kind != "ttv-nested":
            return float("nan"), float("nan")
        return float(self.arrays["logz"][-1]), float(self.arrays["logzerr"][-1])

    def posterior(self, rng: np.random.Generator, n: int | None = None,
                  burn_fraction: float = 0.5) -> np.ndarray:
        """Equal-weight posterior samples (physical parameters)."""
        if self.kind == "ttv-nested":
            logwt = self.arrays["logwt"] - self.arrays["logz"][-1]
            w = np.exp(logwt - logwt.max())
            w /= w.sum()
            n = n or int(max(1, round(1.0 / np.sum(w * w))))  # Kish effective sample size
            idx = rng.choice(len(w), size=n, p=w)
            return self.arrays["samples"][idx]
        chain = self.arrays["chain"]
        flat = chain[int(len(chain) * burn_fraction):].reshape(-1, chain.shape[-1])
        if n is None or n >= len(flat):
            return flat.copy()
        return flat[rng.choice(len(flat), size=n, replace=False)]


def _check_array(kind: str, name: str, value: np.ndarray) -> np.ndarray:
    ndim, dtype = _SCHEMA[kind][name]
    arr = np.asarray(value)
    if arr.ndim != ndim:
        raise ValueError(f"{kind} result array {name!r} must be {ndim}-D, got shape {arr.shape}")
    if not np.can_cast(arr.dtype, dtype, casting="same_kind"):
        raise ValueError(f"{kind} result array {name!r} must be {np.dtype(dtype).name}, "
                         f"got {arr.dtype}")
    return arr.astype(dtype, copy=False)


def make_result(kind: str, meta: dict, arrays: dict) -> TTVRunResult:
    """Build a validated result (fills format/version/kind into meta)."""
    if kind not in KINDS:
        raise ValueError(f"unknown result kind {kind!r}; expected one of {KINDS}")
    missing = sorted(set(_SCHEMA[kind]) - set(arrays))
    extra = sorted(set(arrays) - set(_SCHEMA[kind]))
    if missing or extra:
        raise ValueError(f"{kind} result arrays: missing {missing}, unexpected {extra}")
    checked = {k: _check_array(kind, k, v) for k, v in arrays.items()}
    meta = dict(meta, format=FORMAT, version=VERSION, kind=kind)
    if "param_names" not in meta:
        raise ValueError("result meta needs 'param_names'")
    json.dumps(meta)  # must be plain data; raises TypeError otherwise
    return TTVRunResult(kind, meta, checked)


def save_result(path: str | os.PathLike, result: TTVRunResult) -> None:
    """Write ``result`` atomically (temp file in the same directory, fsync, os.replace)."""
    with atomic_open(path) as fh:
        np.savez(fh, meta=np.array(json.dumps(result.meta, sort_keys=True)), **result.arrays)


def load_result(path: str | os.PathLike) -> TTVRunResult:
    """Load and validate a result file; ValueError names what is wrong with it."""
    if not os.path.isfile(path) or not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a readable .npz file (missing or not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except ValueError as exc:  # object arrays need pickle: refused
        raise ValueError(f"{path}: not a plain-data TTV result ({exc})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from None
    if "meta" not in data:
        raise ValueError(f"{path}: no 'meta' entry; not an {FORMAT} file")
    try:
        meta = json.loads(str(data.pop("meta")))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: 'meta' is not JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        got = meta.get("format") if isinstance(meta, dict) else meta
        raise ValueError(f"{path}: format {got!r} is not {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise ValueError(f"{path}: {FORMAT} version {meta.get('version')!r} is not supported "
                         f"(this app reads version {VERSION})")
    try:
        return make_result(meta.get("kind"), meta, data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: {exc}") from None


def to_dynesty_results(result: TTVRunResult):
    """Rebuild a ``dynesty.results.Results`` from a nested result (for merge_runs, plots)."""
    if result.kind != "ttv-nested":
        raise ValueError(f"only ttv-nested results rebuild dynesty Results, got {result.kind!r}")
    from dynesty.results import Results

    a = result.arrays
    n = len(a["logl"])
    return Results([
        ("nlive", int(a["nlive"])), ("niter", int(a["niter"])), ("ncall", a["ncall"]),
        ("eff", float(a["eff"])), ("samples", a["samples"]), ("samples_id", a["samples_id"]),
        ("samples_it", a["samples_it"]), ("samples_u", a["samples_u"]), ("logwt", a["logwt"]),
        ("logl", a["logl"]), ("logvol", a["logvol"]), ("logz", a["logz"]),
        ("logzerr", a["logzerr"]), ("information", a["information"]),
        ("blob", np.zeros(n)),
    ])


def from_dynesty_results(res, meta: dict) -> TTVRunResult:
    """Plain-data result from a ``dynesty.results.Results`` (e.g. after merge_runs)."""
    return make_result("ttv-nested", meta, {
        "samples": res.samples, "samples_u": res.samples_u, "samples_id": res.samples_id,
        "samples_it": res.samples_it, "ncall": np.asarray(res.ncall),
        "logl": res.logl, "logvol": res.logvol, "logwt": res.logwt, "logz": res.logz,
        "logzerr": res.logzerr, "information": res.information,
        "niter": np.int64(res.niter), "nlive": np.int64(res.nlive),
        "eff": np.float64(res.eff)})
