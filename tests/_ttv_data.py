"""Shared synthetic TTV problems for the tests (small and cheap)."""
import numpy as np

from app.ttv.synthetic import kepler88_like


def small_task(n_transits=20, nlive=20, sampler=None, seed=5):
    """3 free parameters (perturber mass, period in a narrow bin, phase); b fully fixed."""
    s = kepler88_like(np.random.default_rng(seed), n_transits=n_transits)
    b, c = s.truth_spec["planets"]
    prior = {"stellar_mass": 0.99, "planets": [
        b,
        {"name": "c", "mass": {"dist": "loguniform", "min": 150.0, "max": 300.0},
         "period": {"dist": "uniform", "min": 22.25, "max": 22.35},
         "ecc": {"dist": "fixed", "e": 0.04, "omega_deg": 250.0},
         "tconj": {"dist": "phase", "t_ref": 0.0}}]}
    like = {"prior": prior, "observed": {"b": {"epoch": s.epochs.tolist(),
                                               "time": s.times.tolist(),
                                               "sigma": s.sigma.tolist()}}}
    sampler = sampler or {"name": "dynesty", "nlive": nlive, "sample": "rwalk", "dlogz": 0.5}
    return {"likelihood": like, "sampler": sampler, "label": {"test": "small"}}, s
