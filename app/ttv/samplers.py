"""Sampler strategies for the TTV likelihood: dynesty static nested sampling and emcee.

Each strategy is a small object with one method::

    run(loglike, prior, seed, checkpoint_path, *, checkpoint_every_s, on_progress,
        should_stop, meta) -> SamplerOutcome

* ``loglike``: callable free-parameter vector -> ln L (picklable; app.ttv.likelihood).
* ``prior``: app.ttv.priors.PriorTransform (unit cube -> free parameters).
* ``seed``: list of ints, the entropy of a ``numpy.random.SeedSequence``.
* checkpoints are written atomically (temp file in the same directory, fsync,
  os.replace) every ``checkpoint_every_s`` seconds and when ``should_stop()`` turns
  true; a run restarted with the same arguments resumes from the checkpoint and gives
  bit-for-bit the result of an uninterrupted run (same machine, same libraries).
* ``on_progress(fraction_done)`` is called regularly with a non-decreasing fraction.

The dynesty checkpoint is dynesty's own pickled sampler wrapped in our versioned envelope;
it stays on the machine that wrote it (never uploaded).  The emcee checkpoint is a plain
``.npz``.

Both put the likelihood's ``diagnostics`` (calls, and the -inf rejections by reason; see
app.ttv.likelihood) into the result meta as ``likelihood_diagnostics`` and carry them through
a checkpoint (inside the pickled likelihood for dynesty, in the JSON meta for emcee; a
checkpoint written before they existed resumes with the counts of this session only).
emcee walkers start only where ln L is finite.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import time
from dataclasses import dataclass

import numpy as np

from ..atomic import atomic_open

from .results import TTVRunResult, make_result

CHECKPOINT_FORMAT = "openastro.ttv-checkpoint"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class SamplerOutcome:
    """``status`` is "done" (``result`` set) or "stopped" (checkpoint written, no result)."""

    status: str
    result: TTVRunResult | None
    ncall: int


def run_fingerprint(loglike, prior, seed, options: dict) -> str:
    """Hash of everything that defines a run; a checkpoint from another run is refused."""
    spec = getattr(loglike, "spec", None)
    blob = json.dumps({"like": spec, "prior": prior.spec.to_dict(), "seed": list(seed),
                       "options": options, "dt": getattr(loglike, "dt", None)},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class _Progress:
    """Non-decreasing progress reporting, rate-limited to one call per 0.5 s.

    ``callback(fraction)``; ``status(info)``, when given, gets the same beats with the sampler's own numbers
    (``fraction`` and, for dynesty, ``iteration``, ``ncall``, ``log_z``; for emcee ``step``, ``nsteps``).
    """

    def __init__(self, callback, status=None):
        self.callback = callback
        self.status = status
        self.best = 0.0
        self.last = -math.inf

    def __call__(self, fraction: float, force: bool = False, **info) -> None:
        if self.callback is None and self.status is None:
            return
        self.best = max(self.best, min(max(fraction, 0.0), 1.0))
        now = time.monotonic()
        if force or now - self.last >= 0.5:
            self.last = now
            if self.callback is not None:
                self.callback(self.best)
            if self.status is not None:
                self.status(dict(info, fraction=self.best))


def _diagnostics(loglike) -> dict | None:
    diag = getattr(loglike, "diagnostics", None)
    return None if diag is None else dict(diag)


def _dynesty_loglike(sampler, default):
    """The likelihood object a dynesty sampler calls (a restored sampler holds its own copy)."""
    wrapped = getattr(getattr(sampler, "loglikelihood", None), "loglikelihood", None)
    return getattr(wrapped, "func", default)


class _UnitCube:
    """Picklable emcee target in unit-cube coordinates (periodic coordinates wrap)."""

    def __init__(self, loglike, prior):
        self.loglike = loglike
        self.prior = prior
        self.periodic = np.array(prior.periodic, dtype=int)

    def __call__(self, u):
        u = np.array(u, dtype=np.float64)
        if len(self.periodic):
            u[self.periodic] %= 1.0
        if np.any(u < 0.0) or np.any(u > 1.0):
            return -np.inf
        return self.loglike(self.prior(u))


class DynestyStrategy:
    """dynesty static nested sampling (``sample`` in rwalk, rslice, unif, slice...)."""

    name = "dynesty"

    def __init__(self, nlive: int = 100, sample: str = "rwalk", bound: str = "multi",
                 walks: int | None = None, slices: int | None = None, dlogz: float = 0.1,
                 maxcall: int | None = None):
        if int(nlive) < 2:
            raise ValueError(f"nlive must be >= 2, got {nlive}")
        if not dlogz > 0:
            raise ValueError(f"dlogz must be > 0, got {dlogz}")
        self.options = {"nlive": int(nlive), "sample": sample, "bound": bound, "walks": walks,
                        "slices": slices, "dlogz": float(dlogz), "maxcall": maxcall}

    def _new_sampler(self, loglike, prior, seed):
        import dynesty

        o = self.options
        kwargs = {"nlive": o["nlive"], "sample": o["sample"], "bound": o["bound"],
                  "rstate": np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed))),
                  "periodic": list(prior.periodic) or None}
        if o["walks"] is not None:
            kwargs["walks"] = o["walks"]
        if o["slices"] is not None:
            kwargs["slices"] = o["slices"]
        return dynesty.NestedSampler(loglike, prior, prior.ndim, **kwargs)

    def _save(self, path, sampler, fingerprint):
        import dynesty

        state = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                 "kind": "dynesty", "dynesty_version": dynesty.__version__,
                 "fingerprint": fingerprint, "sampler": sampler}
        with atomic_open(path) as fh:
            pickle.dump(state, fh, protocol=pickle.HIGHEST_PROTOCOL)

    def _restore(self, path, fingerprint):
        import dynesty

        with open(path, "rb") as fh:
            state = pickle.load(fh)  # our own checkpoint, written on this machine
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not an {CHECKPOINT_FORMAT} file")
        if state.get("format_version") != CHECKPOINT_VERSION or state.get("kind") != "dynesty":
            raise ValueError(f"{path}: checkpoint format {state.get('format_version')!r}/"
                             f"{state.get('kind')!r} is not dynesty v{CHECKPOINT_VERSION}")
        if state.get("dynesty_version") != dynesty.__version__:
            raise ValueError(f"{path} was written by dynesty {state.get('dynesty_version')}, "
                             f"this is {dynesty.__version__}; cannot resume bit-for-bit")
        if state.get("fingerprint") != fingerprint:
            raise ValueError(f"{path} belongs to a different run (data, prior, seed or options "
                             f"differ); refusing to resume from it")
        return state["sampler"]

    def run(self, loglike, prior, seed, checkpoint_path=None, *, checkpoint_every_s=60.0,
            on_progress=None, should_stop=None, meta=None, on_status=None) -> SamplerOutcome:
        from dynesty.utils import compute_integrals

        fingerprint = run_fingerprint(loglike, prior, seed, self.options)
        resumed = checkpoint_path is not None and os.path.exists(checkpoint_path)
        sampler = (self._restore(checkpoint_path, fingerprint) if resumed
                   else self._new_sampler(loglike, prior, seed))
        progress = _Progress(on_progress, on_status)
        dlogz = self.options["dlogz"]
        last_save = time.monotonic()
        stopped = False
        for res in sampler.sample(dlogz=dlogz, maxcall=self.options["maxcall"], resume=resumed,
                                  save_bounds=False):
            # honest fraction done: ln X shrinks by 1/nlive per iteration; the run ends when
            # ln Lmax + ln X <= ln Z + ln(dlogz) (remaining evidence below the threshold).
            lmax = float(np.max(sampler.live_logl))
            target = min(res.logz + math.log(dlogz) - lmax, -1e-9)
            progress(res.logvol / target if res.logz > -1e299 else 0.0, iteration=int(sampler.it),
                     ncall=int(sampler.ncall), log_z=float(res.logz))
            if checkpoint_path is not None and should_stop is not None and should_stop():
                self._save(checkpoint_path, sampler, fingerprint)
                stopped = True
                break
            if checkpoint_path is not None and time.monotonic() - last_save >= checkpoint_every_s:
                self._save(checkpoint_path, sampler, fingerprint)
                last_save = time.monotonic()
        if stopped:
            progress(progress.best, force=True)
            return SamplerOutcome("stopped", None, int(sampler.ncall))
        for _ in sampler.add_live_points():
            pass
        run = sampler.saved_run
        logwt, logz, logzvar, h = compute_integrals(logl=np.asarray(run["logl"]),
                                                    logvol=np.asarray(run["logvol"]))
        arrays = {"samples": np.asarray(run["v"]), "samples_u": np.asarray(run["u"]),
                  "samples_id": np.asarray(run["id"]), "samples_it": np.asarray(run["it"]),
                  "ncall": np.asarray(run["nc"]), "logl": np.asarray(run["logl"]),
                  "logvol": np.asarray(run["logvol"]), "logwt": logwt, "logz": logz,
                  "logzerr": np.sqrt(np.maximum(logzvar, 0.0)), "information": h,
                  "niter": np.int64(sampler.it - 1), "nlive": np.int64(sampler.nlive),
                  "eff": np.float64(sampler.eff)}
        meta = dict(meta or {}, sampler="dynesty", options=self.options, seed=list(seed),
                    param_names=list(prior.names), ncall_total=int(sampler.ncall),
                    likelihood_diagnostics=_diagnostics(_dynesty_loglike(sampler, loglike)))
        progress(1.0, force=True)
        return SamplerOutcome("done", make_result("ttv-nested", meta, arrays), int(sampler.ncall))


class EmceeStrategy:
    """emcee affine-invariant ensemble, in unit-cube coordinates of the prior.

    Start: ``init_samples`` (n x ndim free physical parameters, e.g. a previous
    posterior; walkers are drawn from it) or, without it, an optimiser (Nelder-Mead from
    the best of ``n_starts`` prior draws) followed by a small ball of radius ``ball``.
    """

    name = "emcee"

    def __init__(self, nwalkers: int = 32, nsteps: int = 2000, init_samples=None,
                 n_starts: int = 64, ball: float = 1e-4):
        if int(nwalkers) < 4 or int(nwalkers) % 2:
            raise ValueError(f"nwalkers must be even and >= 4, got {nwalkers}")
        if int(nsteps) < 1:
            raise ValueError(f"nsteps must be >= 1, got {nsteps}")
        self.options = {"nwalkers": int(nwalkers), "nsteps": int(nsteps),
                        "n_starts": int(n_starts), "ball": float(ball),
                        "warm_start": init_samples is not None}
        self.init_samples = None if init_samples is None else np.asarray(init_samples, float)

    def _initial(self, target, prior, rng) -> np.ndarray:
        """Walker start positions (unit cube), every one at a finite ln L."""
        nw, ndim = self.options["nwalkers"], prior.ndim
        if self.init_samples is not None:
            if self.init_samples.ndim != 2 or self.init_samples.shape[1] != ndim:
                raise ValueError(f"init_samples must be (n, {ndim}), got "
                                 f"{self.init_samples.shape}")
            idx = rng.choice(len(self.init_samples), size=nw,
                             replace=len(self.init_samples) < nw)
            u0 = np.array([prior.inverse(x) for x in self.init_samples[idx]])
            u0 = np.clip(u0 + self.options["ball"] * rng.standard_normal(u0.shape), 0, 1)
            return self._finite_walkers(u0, target, rng)
        from scipy.optimize import minimize

        starts = rng.random((self.options["n_starts"], ndim))
        values = [target(u) for u in starts]
        k = int(np.argmax(values))
        best, best_value = starts[k], values[k]
        extra = 0
        while not np.isfinite(best_value) and extra < 100 * self.options["n_starts"]:
            best = rng.random(ndim)  # the whole first batch failed: keep drawing from the prior
            best_value = target(best)
            extra += 1
        if not np.isfinite(best_value):
            raise ValueError(f"no finite ln L in {self.options['n_starts'] + extra} prior draws; the "
                             f"prior allows no configuration that produces every observed transit "
                             f"(likelihood diagnostics: {_diagnostics(target.loglike)})")

        def objective(u):
            value = target(u)
            return -value if np.isfinite(value) else 1e300

        opt = minimize(objective, best, method="Nelder-Mead",
                       options={"maxfev": 400 * ndim, "xatol": 1e-9, "fatol": 1e-6})
        centre = opt.x if -opt.fun >= target(best) else best
        if not np.isfinite(target(centre)):
            centre = best
        u0 = np.clip(centre + self.options["ball"] * rng.standard_normal((nw, ndim)), 0, 1)
        return self._finite_walkers(u0, target, rng, fallback=best)

    def _finite_walkers(self, u0, target, rng, fallback=None, max_tries=100) -> np.ndarray:
        """Redraw walkers at a non-finite ln L: around a walker with a finite ln L (or
        ``fallback``), with the same ball radius; ValueError when none can be found."""
        ball = self.options["ball"]
        values = np.array([target(u) for u in u0])
        for _ in range(max_tries):
            bad = np.flatnonzero(~np.isfinite(values))
            if len(bad) == 0:
                return u0
            good = np.flatnonzero(np.isfinite(values))
            anchors = u0[good] if len(good) else (None if fallback is None else fallback[None, :])
            if anchors is None:
                break
            for i in bad:
                u = anchors[rng.integers(len(anchors))] + ball * rng.standard_normal(u0.shape[1])
                u0[i] = np.clip(u, 0, 1)
                values[i] = target(u0[i])
        raise ValueError(f"could not start {int(np.sum(~np.isfinite(values)))} of {len(u0)} emcee "
                         f"walkers at a finite ln L (likelihood diagnostics: "
                         f"{_diagnostics(target.loglike)}); give init_samples inside the region "
                         f"where every observed transit is produced")

    def _fingerprint(self, loglike, prior, seed):
        opts = dict(self.options)
        if self.init_samples is not None:
            opts["init_sha"] = hashlib.sha256(self.init_samples.tobytes()).hexdigest()
        return run_fingerprint(loglike, prior, seed, opts)

    def _save(self, path, fingerprint, chain_u, log_prob, n_done, random_state, diagnostics):
        meta = {"format": CHECKPOINT_FORMAT, "format_version": CHECKPOINT_VERSION,
                "kind": "emcee", "fingerprint": fingerprint, "n_done": int(n_done),
                "likelihood_diagnostics": diagnostics}
        _, key, pos, has_gauss, gauss = random_state
        with atomic_open(path) as fh:
            np.savez(fh, meta=np.array(json.dumps(meta)), chain_u=chain_u[:n_done],
                     log_prob=log_prob[:n_done], rs_key=np.asarray(key, dtype=np.uint32),
                     rs_pos=np.int64(pos), rs_has_gauss=np.int64(has_gauss), rs_gauss=np.float64(gauss))

    def run(self, loglike, prior, seed, checkpoint_path=None, *, checkpoint_every_s=60.0,
            on_progress=None, should_stop=None, meta=None, on_status=None) -> SamplerOutcome:
        import emcee

        nw, nsteps, ndim = self.options["nwalkers"], self.options["nsteps"], prior.ndim
        target = _UnitCube(loglike, prior)
        fingerprint = self._fingerprint(loglike, prior, seed)
        chain_u = np.empty((nsteps, nw, ndim))
        log_prob = np.empty((nsteps, nw))
        sampler = emcee.EnsembleSampler(nw, ndim, target)
        if checkpoint_path is not None and os.path.exists(checkpoint_path):
            with np.load(checkpoint_path, allow_pickle=False) as ck:
                ck_meta = json.loads(str(ck["meta"]))
                if (ck_meta.get("format") != CHECKPOINT_FORMAT or ck_meta.get("kind") != "emcee"
                        or ck_meta.get("format_version") != CHECKPOINT_VERSION):
                    raise ValueError(f"{checkpoint_path} is not an emcee checkpoint "
                                     f"v{CHECKPOINT_VERSION}: {ck_meta}")
                if ck_meta["fingerprint"] != fingerprint:
                    raise ValueError(f"{checkpoint_path} belongs to a different run; refusing "
                                     f"to resume from it")
                n_done = ck_meta["n_done"]
                chain_u[:n_done] = ck["chain_u"]
                log_prob[:n_done] = ck["log_prob"]
                rs = ("MT19937", ck["rs_key"], int(ck["rs_pos"]), int(ck["rs_has_gauss"]),
                      float(ck["rs_gauss"]))
                if hasattr(loglike, "restore_diagnostics"):
                    loglike.restore_diagnostics(ck_meta.get("likelihood_diagnostics"))
            state = emcee.State(chain_u[n_done - 1].copy(), log_prob=log_prob[n_done - 1].copy(),
                                random_state=rs)
        else:
            ss = np.random.SeedSequence(seed)
            init_ss, walk_ss = ss.spawn(2)
            u0 = self._initial(target, prior, np.random.Generator(np.random.PCG64(init_ss)))
            rs = np.random.RandomState(np.random.MT19937(walk_ss)).get_state()
            state = emcee.State(u0, random_state=rs)
            n_done = 0
        sampler.random_state = state.random_state
        progress = _Progress(on_progress, on_status)
        last_save = time.monotonic()
        step = n_done
        if step < nsteps:
            for st in sampler.sample(state, iterations=nsteps - n_done, store=False,
                                     skip_initial_state_check=n_done > 0):
                chain_u[step] = st.coords
                log_prob[step] = st.log_prob
                step += 1
                progress(step / nsteps, step=step, nsteps=nsteps)
                if checkpoint_path is None:
                    continue
                if should_stop is not None and should_stop():
                    self._save(checkpoint_path, fingerprint, chain_u, log_prob, step,
                               sampler.random_state, _diagnostics(loglike))
                    progress(progress.best, force=True)
                    return SamplerOutcome("stopped", None, 0)
                if time.monotonic() - last_save >= checkpoint_every_s:
                    self._save(checkpoint_path, fingerprint, chain_u, log_prob, step,
                               sampler.random_state, _diagnostics(loglike))
                    last_save = time.monotonic()
        chain = np.empty_like(chain_u)
        for i in range(nsteps):
            for j in range(nw):
                u = chain_u[i, j].copy()
                if len(target.periodic):
                    u[target.periodic] %= 1.0
                chain[i, j] = prior(u)
        meta = dict(meta or {}, sampler="emcee", options=self.options, seed=list(seed),
                    param_names=list(prior.names), likelihood_diagnostics=_diagnostics(loglike))
        progress(1.0, force=True)
        result = make_result("ttv-emcee", meta, {"chain": chain, "log_prob": log_prob,
                                                 "log_like": log_prob.copy()})
        return SamplerOutcome("done", result, nsteps * nw)


def make_strategy(options: dict):
    """Strategy from plain options: {"name": "dynesty"|"emcee", ...constructor kwargs}."""
    if not isinstance(options, dict) or "name" not in options:
        raise ValueError(f"sampler options need a 'name' (dynesty or emcee), got {options!r}")
    opts = dict(options)
    name = opts.pop("name")
    table = {"dynesty": DynestyStrategy, "emcee": EmceeStrategy}
    if name not in table:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(table)}")
    try:
        return table[name](**opts)
    except TypeError as exc:
        raise ValueError(f"bad options for sampler {name!r}: {exc}") from None
