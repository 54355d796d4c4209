"""Stage 7b: transit mid-times from a light curve, and published transit-time tables.

Conventions: times are BJD_TDB in days (full Julian dates or a constant offset such as
BJD_TDB - 2454833, as long as the light curve and ``transit_params['t0']`` agree); sigmas
in days; fluxes normalised to 1 out of transit.

``transit_params`` keys (units):
  period (d), t0 (d, a reference mid-transit time), rp_rs, a_rs, inc (deg) or b (impact
  parameter), u ([u1, u2] quadratic limb darkening); optional: ecc (0), w (deg, 90),
  window (half-width of the fitting window in units of the total duration T14, 1.0),
  search (half-width of the coarse mid-time grid search in units of T14, 0.5),
  min_points (points per window, 10), min_coverage (fraction of the transit duration that
  must hold data on each side of the mid-time, 0.5), supersample (1) and exp_time (d,
  needed when supersample > 1).
"""
from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass

import numpy as np
import pandas as pd

TIME_OFFSETS = {2400000.0: "JD - 2400000", 2400000.5: "MJD", 2450000.0: "JD - 2450000",
                2454833.0: "BKJD (BJD - 2454833)", 2457000.0: "BTJD (BJD - 2457000)"}
_PARAM_KEYS = {"period", "t0", "rp_rs", "a_rs", "inc", "b", "u", "ecc", "w", "window", "search",
               "min_points", "min_coverage", "supersample", "exp_time"}
COLUMNS = ["epoch", "t_obs", "t_pred", "O_minus_C", "sigma", "flag", "n_points", "chi2_red"]


@dataclass(frozen=True)
class Ephemeris:
    """Weighted linear ephemeris t = t0 + period * epoch; cov is the 2x2 covariance (d^2)."""

    t0: float
    period: float
    cov: tuple[tuple[float, float], tuple[float, float]]
    chi2: float
    n: int

    def to_dict(self) -> dict:
        return {"t0": self.t0, "period": self.period, "cov": [list(r) for r in self.cov],
                "chi2": self.chi2, "n": self.n}


def fit_linear_ephemeris(epoch, t_obs, sigma) -> Ephemeris:
    """Weighted least-squares linear ephemeris with its covariance (not rescaled by chi2)."""
    epoch = np.asarray(epoch, float)
    t_obs = np.asarray(t_obs, float)
    sigma = np.asarray(sigma, float)
    if len(epoch) < 2 or len(np.unique(epoch)) < 2:
        raise ValueError(f"a linear ephemeris needs >= 2 distinct epochs, got {len(epoch)}")
    w = 1.0 / sigma ** 2
    a = np.column_stack([np.ones_like(epoch), epoch])
    fisher = a.T @ (a * w[:, None])
    cov = np.linalg.inv(fisher)
    coef = cov @ (a.T @ (w * t_obs))
    chi2 = float(np.sum(w * (t_obs - a @ coef) ** 2))
    return Ephemeris(float(coef[0]), float(coef[1]),
                     ((float(cov[0, 0]), float(cov[0, 1])), (float(cov[1, 0]), float(cov[1, 1]))),
                     chi2, len(epoch))


def _parse_params(p: dict) -> dict:
    if not isinstance(p, dict):
        raise ValueError(f"transit_params must be a dict, got {type(p).__name__}")
    unknown = sorted(set(p) - _PARAM_KEYS)
    if unknown:
        raise ValueError(f"unknown transit_params key(s) {unknown}; allowed {sorted(_PARAM_KEYS)}")
    for k in ("period", "t0", "rp_rs", "a_rs", "u"):
        if k not in p:
            raise ValueError(f"transit_params needs {k!r}")
    if ("inc" in p) == ("b" in p):
        raise ValueError("transit_params needs exactly one of 'inc' (deg) or 'b'")
    out = {"period": float(p["period"]), "t0": float(p["t0"]), "rp_rs": float(p["rp_rs"]),
           "a_rs": float(p["a_rs"]), "ecc": float(p.get("ecc", 0.0)), "w": float(p.get("w", 90.0)),
           "window": float(p.get("window", 1.0)), "search": float(p.get("search", 0.5)),
           "min_points": int(p.get("min_points", 10)),
           "min_coverage": float(p.get("min_coverage", 0.5)),
           "supersample": int(p.get("supersample", 1)), "exp_time": float(p.get("exp_time", 0.0))}
    u = list(p["u"])
    if len(u) != 2:
        raise ValueError(f"transit_params['u'] must be a quadratic pair [u1, u2], got {u}")
    out["u"] = [float(u[0]), float(u[1])]
    if out["period"] <= 0 or out["rp_rs"] <= 0 or out["a_rs"] <= 1:
        raise ValueError(f"need period > 0, rp_rs > 0, a_rs > 1; got {out['period']}, "
                         f"{out['rp_rs']}, {out['a_rs']}")
    if "b" in p:
        b = float(p["b"])
        if not 0 <= b < 1 + out["rp_rs"]:
            raise ValueError(f"impact parameter b={b} does not transit (rp_rs={out['rp_rs']})")
        out["inc"] = math.degrees(math.acos(b / out["a_rs"]))
    else:
        out["inc"] = float(p["inc"])
    b = out["a_rs"] * math.cos(math.radians(out["inc"]))
    if b >= 1 + out["rp_rs"]:
        raise ValueError(f"inc={out['inc']} deg gives impact parameter {b:.3f}: no transit")
    arg = math.sqrt((1 + out["rp_rs"]) ** 2 - b * b) / (out["a_rs"] * math.sin(math.radians(out["inc"])))
    out["t14"] = out["period"] / math.pi * math.asin(min(arg, 1.0))
    return out


def _batman_model(p: dict, t: np.ndarray):
    import batman

    bp = batman.TransitParams()
    bp.t0, bp.per, bp.rp, bp.a = 0.0, p["period"], p["rp_rs"], p["a_rs"]
    bp.inc, bp.ecc, bp.w = p["inc"], p["ecc"], p["w"]
    bp.limb_dark, bp.u = "quadratic", p["u"]
    kw = {}
    if p["supersample"] > 1:
        kw = {"supersample_factor": p["supersample"], "exp_time": p["exp_time"]}
    return bp, batman.TransitModel(bp, t, **kw)


def _fit_window(p, t, f, e, t_pred):
    """Least-squares fit of (tc, c0, c1) in one window; returns (tc, sigma, chi2_red, flag)."""
    from scipy.optimize import least_squares

    dt = t - t_pred
    bp, model = _batman_model(p, dt)
    half = 0.5 * p["t14"]

    def shape(tc):
        bp.t0 = tc
        return model.light_curve(bp)

    def resid(x):
        tc, c0, c1 = x
        return (f - shape(tc) * (c0 + c1 * dt)) / e

    grid = np.linspace(-p["search"] * p["t14"], p["search"] * p["t14"], 41)
    chi = [np.sum(resid([g, 1.0, 0.0]) ** 2) for g in grid]
    start = grid[int(np.argmin(chi))]
    sol = least_squares(resid, [start, 1.0, 0.0], x_scale=[half * 0.01, 1e-3, 1e-3], method="lm")
    n_free = 3
    dof = len(t) - n_free
    chi2_red = float(np.sum(sol.fun ** 2) / dof)
    tc = float(sol.x[0])
    if not sol.success or not np.isfinite(tc):
        return math.nan, math.nan, chi2_red, "fit_failed"
    jac = sol.jac
    try:
        cov = np.linalg.inv(jac.T @ jac)
    except np.linalg.LinAlgError:
        return math.nan, math.nan, chi2_red, "fit_failed"
    sig = math.sqrt(cov[0, 0] * max(1.0, chi2_red))
    if not np.isfinite(sig) or sig <= 0:
        return math.nan, math.nan, chi2_red, "fit_failed"
    if abs(tc) > p["window"] * p["t14"] - half:
        return math.nan, math.nan, chi2_red, "fit_failed"  # the transit left the window
    # coverage around the fitted mid-time: data on both sides of the transit
    before = np.count_nonzero((dt > tc - half) & (dt < tc))
    after = np.count_nonzero((dt >= tc) & (dt < tc + half))
    cadence = np.median(np.diff(t)) if len(t) > 1 else np.inf
    need = p["min_coverage"] * half / cadence
    if before < need or after < need:
        return math.nan, math.nan, chi2_red, "partial"
    return tc + t_pred, sig, chi2_red, "ok"


def extract_transit_times(light_curve: pd.DataFrame, transit_params: dict) -> pd.DataFrame:
    """Mid-transit times of every predicted transit covered by ``light_curve``.

    Returns a DataFrame with columns :data:`COLUMNS`; rows whose ``flag`` is not "ok"
    ("too_few_points", "partial", "fit_failed") have NaN t_obs/sigma/O_minus_C.
    ``df.attrs["ephemeris"]`` holds the linear ephemeris fitted to the "ok" rows
    (:meth:`Ephemeris.to_dict`), and t_pred/O_minus_C refer to it (with fewer than two ok
    rows, to the input ephemeris).
    """
    p = _parse_params(transit_params)
    for col in ("time", "flux", "flux_err"):
        if col not in light_curve.columns:
            raise ValueError(f"light curve needs column {col!r}; has {list(light_curve.columns)}")
    lc = light_curve[["time", "flux", "flux_err"]].astype(float)
    lc = lc[np.isfinite(lc["time"]) & np.isfinite(lc["flux"]) & np.isfinite(lc["flux_err"])
            & (lc["flux_err"] > 0)].sort_values("time")
    if lc.empty:
        raise ValueError("light curve has no finite points with flux_err > 0")
    t, f, e = (lc[c].to_numpy() for c in ("time", "flux", "flux_err"))
    check_time_convention(t, p["t0"], p["period"], what="light-curve times")
    first = math.ceil((t[0] - p["t0"]) / p["period"] - 0.5)
    last = math.floor((t[-1] - p["t0"]) / p["period"] + 0.5)
    width = p["window"] * p["t14"]
    rows = []
    for n in range(first, last + 1):
        t_pred = p["t0"] + n * p["period"]
        lo, hi = np.searchsorted(t, [t_pred - width, t_pred + width])
        if hi - lo == 0:
            continue  # no data at all: not an observed transit
        if hi - lo < max(p["min_points"], 4):
            rows.append((n, math.nan, t_pred, "too_few_points", hi - lo, math.nan))
            continue
        tc, sig, chi2_red, flag = _fit_window(p, t[lo:hi], f[lo:hi], e[lo:hi], t_pred)
        rows.append((n, tc, sig, flag, hi - lo, chi2_red))
    out = pd.DataFrame({"epoch": [r[0] for r in rows],
                        "t_obs": [r[1] if r[3] == "ok" else math.nan for r in rows],
                        "sigma": [r[2] if r[3] == "ok" else math.nan for r in rows],
                        "flag": [r[3] for r in rows], "n_points": [r[4] for r in rows],
                        "chi2_red": [r[5] for r in rows]})
    out["epoch"] = out["epoch"].astype(np.int64)
    ok = out["flag"] == "ok"
    if ok.sum() >= 2:
        eph = fit_linear_ephemeris(out.loc[ok, "epoch"], out.loc[ok, "t_obs"], out.loc[ok, "sigma"])
        t0, period = eph.t0, eph.period
        out.attrs["ephemeris"] = eph.to_dict()
    else:
        t0, period = p["t0"], p["period"]
        out.attrs["ephemeris"] = None
    out["t_pred"] = t0 + period * out["epoch"]
    out["O_minus_C"] = out["t_obs"] - out["t_pred"]
    return out[COLUMNS]


def check_time_convention(times, reference: float, period: float, what: str = "times") -> None:
    """ValueError with a hint when ``times`` and ``reference`` differ by a known JD offset."""
    times = np.asarray(times, float)
    if times.size == 0:
        return
    gap = float(np.median(times)) - reference
    if abs(gap) < 2000.0 * max(period, 1.0) and abs(gap) < 1.5e5:
        return
    off, sign = min(((o, sg) for o in TIME_OFFSETS for sg in (1.0, -1.0)),
                    key=lambda c: abs(gap - c[1] * c[0]))
    if abs(gap - sign * off) < 1.0e4:
        direction = "subtract" if sign > 0 else "add"
        raise ValueError(
            f"{what} (median {np.median(times):.3f}) and the reference time {reference:.3f} "
            f"differ by ~{gap:.0f} d: they look like different conventions "
            f"({TIME_OFFSETS[off]}, offset {off}); {direction} {off} so both are BJD_TDB or "
            f"both the same BJD_TDB offset")
    raise ValueError(f"{what} (median {np.median(times):.3f}) are {gap:.0f} d away from the "
                     f"reference time {reference:.3f}; check the time convention")


_TABLE_ALIASES = {"epoch": ("epoch", "n", "transit"), "t_obs": ("t_obs", "time", "bjd", "tc"),
                  "sigma": ("sigma", "err", "error", "sigma_days", "t_err"),
                  "planet": ("planet",)}


def load_transit_time_table(path_or_df, *, time_offset: float = 0.0, sigma_unit: str = "d",
                            planet: str | None = None) -> pd.DataFrame:
    """A published transit-time table as [planet, epoch, t_obs, sigma] (days, sorted).

    Accepts a DataFrame or a CSV/whitespace file with columns epoch, time (aliases t_obs, bjd,
    tc) and sigma (aliases err, error); an optional planet column (else ``planet``, default
    "b").  Times are BJD_TDB or an offset from it: ``time_offset`` is added (e.g. 2454833.0
    for BKJD) when you want full BJD_TDB; keep 0 to stay in the table's convention.
    ``sigma_unit``: "d", "min" or "s".  Duplicate epochs of one planet, NaN or non-positive
    sigmas raise ValueError; unsorted rows are sorted.
    """
    where = "transit-time table"
    if isinstance(path_or_df, pd.DataFrame):
        df = path_or_df.copy()
    else:
        df = read_transit_time_file(path_or_df)
        where = f"transit-time table {os.fspath(path_or_df)}"
    lower = {str(c).lower().strip(): c for c in df.columns}
    cols = {}
    for name, aliases in _TABLE_ALIASES.items():
        for a in aliases:
            if a in lower:
                cols[name] = lower[a]
                break
    missing = [k for k in ("epoch", "t_obs", "sigma") if k not in cols]
    if missing:
        raise ValueError(f"{where} needs columns {missing} (aliases "
                         f"{[_TABLE_ALIASES[m] for m in missing]}); has {list(df.columns)}")
    scale = {"d": 1.0, "min": 1.0 / 1440.0, "s": 1.0 / 86400.0}
    if sigma_unit not in scale:
        raise ValueError(f"sigma_unit must be one of {sorted(scale)}, got {sigma_unit!r}")
    out = pd.DataFrame({
        "planet": (df[cols["planet"]].astype(str) if "planet" in cols
                   else pd.Series([planet or "b"] * len(df), index=df.index)),
        "epoch": pd.to_numeric(df[cols["epoch"]], errors="coerce"),
        "t_obs": pd.to_numeric(df[cols["t_obs"]], errors="coerce") + float(time_offset),
        "sigma": pd.to_numeric(df[cols["sigma"]], errors="coerce") * scale[sigma_unit]})
    try:
        validate_ttv_table(out)
    except ValueError as exc:
        rows = " (rows are line numbers)" if where != "transit-time table" else ""
        raise ValueError(f"{where}{rows}: {exc}") from None
    out["epoch"] = out["epoch"].astype(np.int64)
    return out.sort_values(["planet", "epoch"]).reset_index(drop=True)


MAX_TABLE_BYTES = 16 * 2**20
MAX_EPOCH = 10_000_000  # |epoch| beyond this is a typo (10^7 orbits of even a 1-day planet is 27,000 years)


def read_transit_time_file(path) -> pd.DataFrame:
    """The rows of a transit-time text file as strings, indexed by 1-based line number.

    UTF-8 text (a BOM is dropped); ``#`` starts a comment; the first non-comment line names the columns, which are
    separated by commas, semicolons or tabs (the first of these the header contains), else by whitespace. Every
    problem is a ValueError naming the file (and the line): missing, too large, binary, empty, header only, a row
    with the wrong number of fields, duplicate column names.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"transit-time table {path} does not exist")
    size = os.path.getsize(path)
    if size > MAX_TABLE_BYTES:
        raise ValueError(f"transit-time table {path} is {size} bytes, more than the {MAX_TABLE_BYTES} allowed")
    with open(path, "rb") as fh:
        data = fh.read(MAX_TABLE_BYTES + 1)
    if b"\x00" in data:
        raise ValueError(f"transit-time table {path} is binary (or UTF-16) content; save it as UTF-8 text")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"transit-time table {path} is not UTF-8 text (byte {exc.start}); "
                         "save it as UTF-8") from None
    lines = [(n, ln.split("#", 1)[0]) for n, ln in enumerate(text.splitlines(), start=1)]
    lines = [(n, ln) for n, ln in lines if ln.strip()]
    if not lines:
        raise ValueError(f"transit-time table {path} is empty: it needs a header row naming epoch, time and "
                         "sigma columns, then one row per transit")
    header_line, header = lines[0]
    delim = next((d for d in (",", ";", "\t") if d in header), None)

    def split(line: str) -> list[str]:
        if delim is None:
            return line.split()
        return [f.strip() for f in next(csv.reader([line], delimiter=delim))]

    names = split(header)
    seen: set[str] = set()
    for name in names:
        key = name.lower().strip()
        if key in seen:
            raise ValueError(f"transit-time table {path} line {header_line}: column {name!r} appears twice")
        seen.add(key)
    if len(lines) == 1:
        raise ValueError(f"transit-time table {path} has a header (line {header_line}) but no rows")
    rows, index = [], []
    for number, line in lines[1:]:
        fields = split(line)
        if len(fields) != len(names):
            raise ValueError(f"transit-time table {path} line {number}: expected {len(names)} fields "
                             f"({', '.join(names)[:200]}), found {len(fields)}")
        rows.append(fields)
        index.append(number)
    return pd.DataFrame(rows, columns=names, index=index)


def validate_ttv_table(df: pd.DataFrame) -> None:
    """Raise ValueError for no rows, NaN times/epochs, non-integer or absurd epochs, bad sigmas, duplicates."""
    for col in ("planet", "epoch", "t_obs", "sigma"):
        if col not in df.columns:
            raise ValueError(f"transit times need column {col!r}; have {list(df.columns)}")
    if len(df) == 0:
        raise ValueError("no transit times: the table has no rows")
    bad = df.index[~np.isfinite(df["t_obs"].to_numpy(float))
                   | ~np.isfinite(df["epoch"].to_numpy(float))].tolist()
    if bad:
        raise ValueError(f"rows {bad[:10]} have a missing or non-numeric epoch or time")
    ep = df["epoch"].to_numpy(float)
    if np.any(ep != np.rint(ep)):
        raise ValueError(f"epochs must be integers, got {ep[ep != np.rint(ep)][:5].tolist()}")
    bad = df.index[np.abs(ep) > MAX_EPOCH].tolist()
    if bad:
        raise ValueError(f"rows {bad[:10]} have an epoch beyond +-{MAX_EPOCH}: "
                         f"{df.loc[bad[:10], 'epoch'].tolist()}")
    sig = df["sigma"].to_numpy(float)
    bad = df.index[~(np.isfinite(sig) & (sig > 0))].tolist()
    if bad:
        raise ValueError(f"sigma must be finite and > 0 days; rows {bad[:10]} have "
                         f"{df.loc[bad[:10], 'sigma'].tolist()}")
    dup = df.duplicated(["planet", "epoch"], keep=False)
    if dup.any():
        raise ValueError(f"duplicate epochs: {df.loc[dup, ['planet', 'epoch']].values.tolist()[:10]}")
