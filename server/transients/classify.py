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

Inference runs on the CPU by default (numpy; pin BLAS to one thread on shared machines) and on a CUDA GPU with
``device="gpu"``/``"auto"`` where cupy and a device exist (the same code with cupy as the array module).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

from server.transients.cnn import Network, forward, has_weights, layers_from_keras, make_network
from server.transients.preprocess import normalise, preprocess
from server.transients.train import load_model

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


def array_module(device: str):
    """numpy for ``"cpu"``; cupy for ``"gpu"`` (refused clearly without cupy or a CUDA device); ``"auto"``: the GPU
    where one is usable, else the CPU."""
    if device not in ("cpu", "gpu", "auto"):
        raise ValueError(f"device must be 'cpu', 'gpu' or 'auto', got {device!r}")
    if device == "cpu":
        return np
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return cupy
        reason = "no CUDA device is visible"
    except ImportError:
        reason = "cupy is not installed (pip install cupy-cuda12x)"
    except Exception as exc:  # noqa: BLE001 - any CUDA runtime failure means: no usable GPU
        reason = f"the CUDA runtime failed ({exc})"
    if device == "gpu":
        raise ValueError(f"device 'gpu' requested but {reason}")
    return np


def score_triplets(triplets: np.ndarray, model: str = "braai", batch_size: int = 256,
                   device: str = "cpu") -> np.ndarray:
    """Real/bogus scores ``(N,)`` in [0, 1] for raw triplets ``(N, 63, 63, 3)`` (science, reference, difference).

    ``model``: ``"braai"`` (ZTF's pretrained d6_m7), ``"openastro"`` (our model shipped in
    ``models/openastro/``) or the path of a model saved by ``openastro transients train``.
    ``device``: ``"cpu"`` (numpy, default), ``"gpu"`` (cupy) or ``"auto"`` (see :func:`array_module`).
    """
    x = _check_triplets(triplets)
    xp = array_module(device)
    if len(x) == 0:
        return np.zeros(0, dtype=np.float32)
    if model == "braai":
        return forward(load_braai(), normalise(x, BRAAI_NORMALISATION), batch_size, xp)
    path = OPENASTRO_MODEL if model == "openastro" else Path(model)
    if not path.exists():
        raise ValueError(f"unknown real/bogus model {model!r}: not 'braai', 'openastro' or an existing model file")
    saved = load_model(path)
    return forward(saved.network, preprocess(x, saved.crop), batch_size, xp)
