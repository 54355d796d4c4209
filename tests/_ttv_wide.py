"""The wide-prior Kepler-88-like problem of issue 22 (perturber 14-40 d, 1-2000 Earth masses), as the
pipeline plans it: one task spec per model (0, 1, 2 perturbers), each with its whole prior box in one bin."""
import numpy as np
import pandas as pd

from app.ttv.synthetic import kepler88_like
from server.ttv.inference import plan_tasks

WIDE = {"stellar_mass": 0.99, "perturber_period": [14.0, 40.0], "perturber_mass": [1.0, 2000.0],
        "perturber_period_bins": [[14.0, 40.0]], "second_perturber_period": [45.0, 90.0],
        "known_mass": 8.7, "models": [0, 1, 2]}


def wide_system(n_transits=40, seed=2):
    return kepler88_like(np.random.default_rng(seed), n_transits=n_transits)


def wide_table(system):
    return pd.DataFrame({"planet": "b", "epoch": system.epochs, "t_obs": system.times,
                         "sigma": system.sigma})


def wide_task_specs(n_transits=40, seed=2, **config):
    """{model: task params} for the whole wide prior box of each model."""
    _, tasks, _ = plan_tasks(wide_table(wide_system(n_transits, seed)), dict(WIDE, **config))
    return {t["model"]: t["spec"] for t in tasks}
