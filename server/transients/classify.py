"""Real/bogus scores for 63x63 cutout triplets: the pretrained ZTF braai model and our own, one numpy forward pass.

``score_triplets(triplets, model)`` takes raw cutouts ``(N, 63, 63, 3)`` in the ZTF order (science, reference,
difference) and returns scores in [0, 1] (1 = real). Each model carries its own preprocessing, because the
model was trained on inputs prepared that way:

* ``"braai"``: ZTF's braai ``d6_m7`` (Duev et al. 2019, MIT licence, ``models/braai/``), run by our own code
  (:mod:`server.transients.cnn`; no TensorFlow). braai's run notebook (github dmitryduev/braai
  ``nb/braai_run.ipynb``, ``make_triplet``) prepares a cutout as: NaN -> 0 (``np.nan_to_num``), then, for
  models up to d6_m7, ``tf.keras.utils.normalize`` (each *row* divided by its own L2 norm, a zero norm left
  as is); later models divide the whole cutout by its L2 norm. :data:`BRAAI_NORMALISATION` records which
  one d6_m7 uses here and ``docs/transients.md`` the measurement behind it.
* ``"openastro"`` or a path to a saved model: our CNN trained on injections by ``openastro transients train``
  (:mod:`server.transients.train`); NaN -> 0, then each channel divided by its own L2 norm, then the central
  crop the model was trained on.

Inference runs on the CPU (numpy, single BLAS thread recommended on shared machines).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from server.transients.cnn import Network, forward, has_weights, layers_from_keras, make_network

MODELS_DIR = Path(__file__).resolve().parent / "models"
BRAAI_DIR = MODELS_DIR / "braai"
BRAAI_NAME = "d6_m7"
OPENASTRO_MODEL = MODELS_DIR / "openastro" / "realbogus.json"
CUTOUT = 63

# braai d6_m7 was trained with tf.keras.utils.normalize: per-row L2 norm (see module docstring)
BRAAI_NORMALISATION = "rows"


def _check_triplets(triplets) -> np.ndarray:
    array = np.asarray(triplets)
    if array.ndim == 3:
        raise ValueError(f"triplets must be (N, 63, 63, 3); got one triplet of shape {array.shape}: "
                         "add a leading axis (triplets[None])")
    if array.ndim != 4 or array.shape[1:] != (CUTOUT, CUTOUT, 3):
        raise ValueError(f"triplets must have shape (N, 63, 63, 3), got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"triplets must be numeric, got dtype {array.dtype}")
    return array.astype(np.float32, copy=True)


def normalise(triplets: np.ndarray, mode: str) -> np.ndarray:
    """NaN/inf -> 0, then divide by the L2 norm of each ``"channel"`` or each ``"rows"`` (a row of one channel).

    A zero norm leaves the values (zeros) unchanged, as ``tf.keras.utils.normalize`` does.
    """
    x = np.nan_to_num(np.asarray(triplets, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if mode == "channel":
        norm = np.sqrt(np.einsum("nhwc,nhwc->nc", x, x, dtype=np.float64))[:, None, None, :]
    elif mode == "rows":
        norm = np.sqrt(np.einsum("nhwc,nhwc->nhc", x, x, dtype=np.float64))[:, :, None, :]
    else:
        raise ValueError(f"normalisation must be 'channel' or 'rows', got {mode!r}")
    norm[norm == 0] = 1.0
    return (x / norm).astype(np.float32)


@lru_cache(maxsize=4)
def load_braai(directory: str | None = None, name: str = BRAAI_NAME) -> Network:
    """The braai network from ``NAME.architecture.json`` + ``NAME.h5`` (Keras 2 HDF5, read with h5py)."""
    import h5py

    directory = Path(directory) if directory else BRAAI_DIR
    config = json.loads((directory / f"{name}.architecture.json").read_text())
    input_shape, layers, names = layers_from_keras(config)
    weights = []
    with h5py.File(directory / f"{name}.h5", "r") as h5:
        group = h5["model_weights"] if "model_weights" in h5 else h5
        for layer, layer_name in zip(layers, names):
            if not has_weights(layer):
                weights.append(None)
                continue
            stored = group[layer_name]
            arrays = {n.decode() if isinstance(n, bytes) else n: None for n in stored.attrs["weight_names"]}
            kernel = next(stored[n][()] for n in arrays if n.endswith("kernel:0"))
            bias = next(stored[n][()] for n in arrays if n.endswith("bias:0"))
            weights.append((kernel, bias))
    return make_network(input_shape, layers, weights)


def score_triplets(triplets: np.ndarray, model: str = "braai", batch_size: int = 256) -> np.ndarray:
    """Real/bogus scores ``(N,)`` in [0, 1] for raw triplets ``(N, 63, 63, 3)`` (science, reference, difference).

    ``model``: ``"braai"`` (ZTF's pretrained d6_m7), ``"openastro"`` (our model shipped in
    ``models/openastro/``) or the path of a model saved by ``openastro transients train``.
    """
    x = _check_triplets(triplets)
    if len(x) == 0:
        return np.zeros(0, dtype=np.float32)
    if model == "braai":
        return forward(load_braai(), normalise(x, BRAAI_NORMALISATION), batch_size)
    from server.transients.train import load_model, preprocess

    path = OPENASTRO_MODEL if model == "openastro" else Path(model)
    if not path.exists():
        raise ValueError(f"unknown real/bogus model {model!r}: not 'braai', 'openastro' or an existing model file")
    saved = load_model(path)
    return forward(saved.network, preprocess(x, saved.crop), batch_size)
