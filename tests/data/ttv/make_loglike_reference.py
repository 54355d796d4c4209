"""Writes loglike_reference.json: ln L of the TTV likelihood at fixed unit-cube draws, computed by the code
BEFORE the crash-proof likelihood (commit 6f8e8e6), so tests/test_ttv_robust.py can check that every vector that
worked then gives a bitwise-identical ln L now.

Run once at that commit: ``python tests/data/ttv/make_loglike_reference.py``.  That code called the ``TTVFast``
C symbol, which exit()s the process on an integrator error; here it is swapped for ``TTVFast_main`` (the function
``TTVFast`` wraps, identical output when its status is OK) raising instead, so the run survives and such vectors
are recorded as "error".
"""
import ctypes
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # tests/

from _ttv_data import small_task  # noqa: E402
from _ttv_wide import wide_task_specs  # noqa: E402

import app.ttv.model as model  # noqa: E402
from app.ttv.likelihood import TTVLikelihood  # noqa: E402


def _raising_core():
    from ttvfast import _ttvfast

    fn = ctypes.CDLL(_ttvfast.__file__).TTVFast_main
    fn.restype = ctypes.c_int
    fn.argtypes = [ctypes.c_void_p, ctypes.c_double, ctypes.c_double, ctypes.c_double, ctypes.c_int,
                   ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_int]

    def call(*args):
        status = fn(*args)
        if status != 0:
            raise RuntimeError(f"TTVFast status {status}")
    return call


def main():
    model._CORE = _raising_core()
    cases = {f"wide-{m}": spec["likelihood"] for m, spec in wide_task_specs(n_transits=40).items()}
    cases["small"] = small_task()[0]["likelihood"]
    out = {"note": "ln L per draw as float.hex, or 'error'; see make_loglike_reference.py", "cases": {}}
    for name, spec in cases.items():
        like = TTVLikelihood(spec)
        rng = np.random.default_rng(20261207)
        u = rng.random((300, like.prior.ndim))
        values = []
        for row in u:
            try:
                values.append(float(like(like.prior(row))).hex())
            except (RuntimeError, ValueError) as exc:
                values.append("error")
        out["cases"][name] = {"u": u.tolist(), "logl": values}
        print(name, sum(v == "error" for v in values), "errors,",
              sum(v == float(-1e300).hex() for v in values), "at -1e300")
    with open(os.path.join(HERE, "loglike_reference.json"), "w") as fh:
        json.dump(out, fh)


if __name__ == "__main__":
    main()
