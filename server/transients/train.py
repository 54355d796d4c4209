"""Our own real/bogus CNN: trained on injection sets (:mod:`server.transients.injections`) with plain numpy.

Framework: numpy only (forward pass :mod:`server.transients.cnn`, backward pass and Adam here). It adds no
install cost (numpy is already a dependency) and needs no CUDA; a net this small (about 20k weights on a
31x31 crop) trains on one CPU core in tens of seconds. See ``docs/transients.md`` for the alternatives measured.

The saved model is plain data: ``NAME.json`` (format, layers, preprocessing, training record) beside
``NAME.npz`` (float32 kernels and biases, loaded with ``allow_pickle=False``), each written atomically.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from app.atomic import atomic_path, atomic_write_text
from server.transients.cnn import Network, forward, has_weights, make_network, maxpool2d, sigmoid
from server.transients.injections import make_set
from server.transients.preprocess import NORMALISATION, preprocess

MODEL_FORMAT = "openastro-realbogus"
FORMAT_VERSION = 1


def default_layers() -> list[dict[str, Any]]:
    return [
        {"type": "conv2d", "filters": 8, "kernel_size": [3, 3], "padding": "valid", "activation": "relu"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "conv2d", "filters": 16, "kernel_size": [3, 3], "padding": "valid", "activation": "relu"},
        {"type": "maxpool2d", "pool_size": 2},
        {"type": "flatten"},
        {"type": "dense", "units": 32, "activation": "relu"},
        {"type": "dense", "units": 1, "activation": "sigmoid"},
    ]


@dataclass(frozen=True)
class TrainConfig:
    n_train: int = 4000
    n_test: int = 1000
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 2e-3
    crop: int = 31
    seed: int = 20261208

    def __post_init__(self) -> None:
        for name in ("n_train", "n_test", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.learning_rate < 1:
            raise ValueError(f"learning_rate must be in (0, 1), got {self.learning_rate}")
        if not (5 <= self.crop <= 63 and self.crop % 2 == 1):
            raise ValueError(f"crop must be an odd number of pixels from 5 to 63, got {self.crop}")


@dataclass(frozen=True)
class SavedModel:
    network: Network
    crop: int
    record: Mapping[str, Any]


@dataclass(frozen=True)
class TrainResult:
    network: Network
    crop: int
    test_auc: float
    train_loss: tuple[float, ...]   # mean binary cross-entropy per epoch
    config: TrainConfig


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U with mid-ranks for ties)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"ROC AUC needs both classes, got {n_pos} real and {n_neg} bogus")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mid = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(mid, counts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def init_network(rng: np.random.Generator, input_shape, layers) -> Network:
    """Glorot-uniform kernels, zero biases."""
    weights = []
    shape = tuple(input_shape)
    for layer in layers:
        if layer["type"] == "conv2d":
            kh, kw = layer["kernel_size"]
            fan_in, fan_out = kh * kw * shape[2], kh * kw * layer["filters"]
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            weights.append((rng.uniform(-limit, limit, (kh, kw, shape[2], layer["filters"])),
                            np.zeros(layer["filters"])))
            shape = (shape[0] - kh + 1, shape[1] - kw + 1, layer["filters"])
        elif layer["type"] == "dense":
            limit = np.sqrt(6.0 / (shape[0] + layer["units"]))
            weights.append((rng.uniform(-limit, limit, (shape[0], layer["units"])), np.zeros(layer["units"])))
            shape = (layer["units"],)
        else:
            weights.append(None)
            if layer["type"] == "maxpool2d":
                p = layer["pool_size"]
                shape = (shape[0] // p, shape[1] // p, shape[2])
            elif layer["type"] == "flatten":
                shape = (int(np.prod(shape)),)
    return make_network(input_shape, layers, weights)


def _forward_train(net: Network, params: list, x: np.ndarray):
    """Forward pass keeping what the backward pass needs; the last layer's output is the logit."""
    cache = []
    for index, layer in enumerate(net.layers):
        kind = layer["type"]
        inp = x
        if kind == "conv2d":
            kernel, bias = params[index]
            kh, kw = kernel.shape[:2]
            ho, wo = x.shape[1] - kh + 1, x.shape[2] - kw + 1
            out = np.broadcast_to(bias, (len(x), ho, wo, kernel.shape[3])).copy()
            for i in range(kh):
                for j in range(kw):
                    out += x[:, i:i + ho, j:j + wo, :] @ kernel[i, j]
            x = out
        elif kind == "maxpool2d":
            x = maxpool2d(x, layer["pool_size"])
        elif kind == "flatten":
            x = x.reshape(len(x), -1)
        elif kind == "dense":
            x = x @ params[index][0] + params[index][1]
        activation = layer.get("activation", "linear")
        if activation == "relu":
            x = np.maximum(x, 0)
        cache.append((inp, x))
    return x[:, 0], cache


def _backward(net: Network, params: list, cache, grad_logit: np.ndarray) -> list:
    grads: list = [None] * len(params)
    g = grad_logit[:, None]
    for index in range(len(net.layers) - 1, -1, -1):
        layer = net.layers[index]
        inp, out = cache[index]
        if layer.get("activation", "linear") == "relu":
            g = g * (out > 0)
        kind = layer["type"]
        if kind == "dense":
            kernel = params[index][0]
            grads[index] = (inp.T @ g, g.sum(axis=0))
            g = g @ kernel.T
        elif kind == "flatten":
            g = g.reshape(inp.shape)
        elif kind == "maxpool2d":
            p = layer["pool_size"]
            n, h, w, c = inp.shape
            ho, wo = h // p, w // p
            block = inp[:, :ho * p, :wo * p, :].reshape(n, ho, p, wo, p, c)
            pooled = block.max(axis=(2, 4), keepdims=True)
            mask = block == pooled
            mask = mask / mask.sum(axis=(2, 4), keepdims=True)  # ties share the gradient
            full = np.zeros_like(inp)
            full[:, :ho * p, :wo * p, :] = (mask * g.reshape(n, ho, 1, wo, 1, c)).reshape(n, ho * p, wo * p, c)
            g = full
        elif kind == "conv2d":
            kernel = params[index][0]
            kh, kw, cin, cout = kernel.shape
            ho, wo = g.shape[1], g.shape[2]
            g2 = g.reshape(-1, cout)
            dk = np.empty_like(kernel)
            dx = np.zeros_like(inp) if index > 0 else None
            for i in range(kh):
                for j in range(kw):
                    window = inp[:, i:i + ho, j:j + wo, :]
                    dk[i, j] = window.reshape(-1, cin).T @ g2 if window.flags.c_contiguous else \
                        np.einsum("nhwc,nhwk->ck", window, g, optimize=True)
                    if dx is not None:
                        dx[:, i:i + ho, j:j + wo, :] += g @ kernel[i, j].T
            grads[index] = (dk, g.sum(axis=(0, 1, 2)))
            g = dx
        if g is None:
            break
    return grads


def train(config: TrainConfig = TrainConfig(), log=None) -> TrainResult:
    """Train on ``n_train`` injected triplets, report the ROC AUC on ``n_test`` held-out ones (other seeds)."""
    seeds = np.random.SeedSequence(config.seed).spawn(3)  # train set, test set, weights + shuffling
    train_set = make_set(np.random.default_rng(seeds[0]), config.n_train)
    test_set = make_set(np.random.default_rng(seeds[1]), config.n_test)
    rng = np.random.default_rng(seeds[2])
    x = preprocess(train_set.triplets, config.crop)
    y = train_set.labels.astype(np.float32)
    net = init_network(rng, (config.crop, config.crop, 3), default_layers())
    params = [None if w is None else [w[0].copy(), w[1].copy()] for w in net.weights]
    moments = [None if p is None else [[np.zeros_like(a) for a in p], [np.zeros_like(a) for a in p]] for p in params]
    beta1, beta2, eps, step = 0.9, 0.999, 1e-8, 0
    losses = []
    for epoch in range(config.epochs):
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            batch = order[start:start + config.batch_size]
            logit, cache = _forward_train(net, params, x[batch])
            prob = sigmoid(logit.astype(np.float64))
            target = y[batch]
            total += float(np.sum(np.logaddexp(0.0, logit) - target * logit))
            grads = _backward(net, params, cache, ((prob - target) / len(batch)).astype(np.float32))
            step += 1
            lr = config.learning_rate * np.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
            for p, grad, moment in zip(params, grads, moments):
                if p is None:
                    continue
                m, v = moment
                for k in range(2):
                    m[k] *= beta1
                    m[k] += (1 - beta1) * grad[k]
                    v[k] *= beta2
                    v[k] += (1 - beta2) * grad[k] ** 2
                    p[k] -= (lr * m[k] / (np.sqrt(v[k]) + eps)).astype(p[k].dtype)
        losses.append(total / len(x))
        if log is not None:
            log(f"epoch {epoch + 1}/{config.epochs}: mean cross-entropy {losses[-1]:.4f}")
    trained = make_network(net.input_shape, net.layers, [None if p is None else tuple(p) for p in params])
    auc = roc_auc(forward(trained, preprocess(test_set.triplets, config.crop)), test_set.labels)
    return TrainResult(trained, config.crop, auc, tuple(losses), config)


def save_model(result: TrainResult, path: str | Path) -> Path:
    """Write ``path`` (JSON, ``.json`` added if missing) and its ``.npz`` weights, each atomically."""
    path = Path(path)
    if path.suffix != ".json":
        path = path.with_name(path.name + ".json")
    arrays = {}
    for index, weight in enumerate(result.network.weights):
        if weight is not None:
            arrays[f"layer{index}_kernel"] = np.asarray(weight[0], np.float32)
            arrays[f"layer{index}_bias"] = np.asarray(weight[1], np.float32)
    npz = path.with_suffix(".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    record = {
        "format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "weights": npz.name,
        "input_shape": list(result.network.input_shape), "crop": result.crop, "normalisation": NORMALISATION,
        "layers": [dict(layer) for layer in result.network.layers],
        "training": {**{k: getattr(result.config, k) for k in result.config.__dataclass_fields__},
                     "heldout_roc_auc": round(result.test_auc, 5),
                     "train_loss": [round(v, 5) for v in result.train_loss]},
    }
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return path


def load_model(path: str | Path) -> SavedModel:
    """Read a model written by :func:`save_model`; a different format or version is refused."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"cannot read real/bogus model {path}: {exc}") from None
    if record.get("format") != MODEL_FORMAT or record.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a {MODEL_FORMAT} model of format version {FORMAT_VERSION} "
                         f"(format {record.get('format')!r}, version {record.get('format_version')!r})")
    if record.get("normalisation") != NORMALISATION:
        raise ValueError(f"{path}: unknown normalisation {record.get('normalisation')!r}")
    with np.load(path.parent / record["weights"], allow_pickle=False) as npz:
        weights = [(npz[f"layer{i}_kernel"], npz[f"layer{i}_bias"]) if has_weights(layer) else None
                   for i, layer in enumerate(record["layers"])]
    network = make_network(record["input_shape"], record["layers"], weights)
    return SavedModel(network, int(record["crop"]), record)
