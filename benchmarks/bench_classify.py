"""Real/bogus classification benchmark: 100 candidates through our numpy braai beside the direct-loop anchor.

Run: ``python -m benchmarks.bench_classify [--n 100] [--heldout 2000] [--repeats 3]`` (from the repository
root; thread counts pinned to 1). Prints, measured in the same run on the same 100 injected triplets:

* ``score_triplets(model="braai")`` (preprocessing + forward pass; the model is loaded once before timing)
  and the anchor, a direct per-output-pixel forward pass (:mod:`server.transients.cnn_reference`), with
  the ratio and the largest score difference between the two;
* our own model (``model="openastro"``) on the same 100;
* the ROC AUC of both models on a held-out injection set (seed not used in training).
Goal (issue #16): 100 candidates in < 1 s on one CPU core.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from server.transients.classify import BRAAI_NORMALISATION, load_braai, score_triplets  # noqa: E402
from server.transients.preprocess import normalise  # noqa: E402
from server.transients.cnn_reference import reference_forward  # noqa: E402
from server.transients.injections import make_set  # noqa: E402
from server.transients.train import roc_auc  # noqa: E402

BENCH_SEED = 4242        # the 100 timed candidates
HELDOUT_SEED = 777       # held-out AUC set (training uses TrainConfig.seed's spawned streams)


def _best(fn, repeats: int) -> tuple[float, np.ndarray]:
    best, out = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="candidates timed")
    parser.add_argument("--heldout", type=int, default=2000, help="held-out injections for the ROC AUC")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many timings")
    args = parser.parse_args(argv)

    candidates = make_set(np.random.default_rng(BENCH_SEED), args.n).triplets
    net = load_braai()
    score_triplets(candidates[:2])  # warm-up (model load, first BLAS call)
    ours_t, ours = _best(lambda: score_triplets(candidates, "braai"), args.repeats)
    anchor_t, anchor = _best(lambda: reference_forward(net, normalise(candidates, BRAAI_NORMALISATION)), 1)
    score_triplets(candidates[:2], "openastro")
    own_t, _ = _best(lambda: score_triplets(candidates, "openastro"), args.repeats)
    print(f"{args.n} candidates, one CPU core (best of {args.repeats}; anchor once)")
    print(f"  braai d6_m7, numpy (ours)         {ours_t:8.3f} s")
    print(f"  braai d6_m7, direct loop (anchor) {anchor_t:8.3f} s   ratio anchor/ours {anchor_t / ours_t:6.1f}x"
          f"   max |score difference| {np.max(np.abs(ours - anchor)):.2e}")
    print(f"  openastro model, numpy            {own_t:8.3f} s")

    heldout = make_set(np.random.default_rng(HELDOUT_SEED), args.heldout)
    for model in ("braai", "openastro"):
        scores = score_triplets(heldout.triplets, model)
        auc = roc_auc(scores, heldout.labels)
        print(f"  ROC AUC on {args.heldout} held-out injections ({int(heldout.labels.sum())} real): "
              f"{model:9s} {auc:.4f}")
        for kind in np.unique(heldout.kinds):
            sel = heldout.kinds == kind
            print(f"      {kind:16s} n={sel.sum():4d}  median score {np.median(scores[sel]):.3f}")


if __name__ == "__main__":
    main()
