"""A small sequential convolutional network in plain numpy: the forward pass shared by every real/bogus model.

Tensors are channels-last, ``(N, H, W, C)``, float32, the layout of the ZTF cutout triplets and of Keras, so a
Keras ``Sequential`` model's weights load without transposes. Layers are plain data (a dict per layer; see
:data:`LAYER_TYPES`) and the weights a list of float arrays, so a model is saved as JSON + npz, never pickled.

A convolution is computed as a sum over the kernel taps of one matrix product each (``x[:, i:i+Ho, j:j+Wo, :]
@ K[i, j]``); for the 3x3 kernels used here that is nine BLAS calls per layer, with no im2col copy of the
whole input. Dropout is the identity at inference.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

LAYER_TYPES = ("conv2d", "maxpool2d", "dropout", "flatten", "dense")
ACTIVATIONS = ("linear", "relu", "sigmoid")


@dataclass(frozen=True)
class Network:
    """A sequential network: ``layers`` (plain dicts) and, per layer with weights, ``(kernel, bias)``.

    ``input_shape`` is ``(H, W, C)``. ``weights[i]`` is ``None`` for a layer without weights.
    """

    input_shape: tuple[int, int, int]
    layers: tuple[Mapping[str, Any], ...]
    weights: tuple[tuple[np.ndarray, np.ndarray] | None, ...]

    def __post_init__(self) -> None:
        if len(self.layers) != len(self.weights):
            raise ValueError(f"{len(self.layers)} layers but {len(self.weights)} weight entries")
        shape = tuple(int(s) for s in self.input_shape)
        for index, (layer, weight) in enumerate(zip(self.layers, self.weights)):
            shape = _check_layer(index, layer, weight, shape)
        if shape != (1,):
            raise ValueError(f"the network must end in one output unit, it ends in shape {shape}")


def _check_layer(index: int, layer: Mapping[str, Any], weight, shape: tuple[int, ...]) -> tuple[int, ...]:
    kind = layer.get("type")
    if kind not in LAYER_TYPES:
        raise ValueError(f"layer {index}: unknown type {kind!r} (known: {', '.join(LAYER_TYPES)})")
    if layer.get("activation", "linear") not in ACTIVATIONS:
        raise ValueError(f"layer {index}: unknown activation {layer.get('activation')!r}")
    if kind == "conv2d":
        if len(shape) != 3:
            raise ValueError(f"layer {index}: conv2d needs an (H, W, C) input, got {shape}")
        kh, kw = layer["kernel_size"]
        if layer.get("padding", "valid") not in ("valid", "same"):
            raise ValueError(f"layer {index}: padding {layer.get('padding')!r} is not 'valid' or 'same'")
        if weight is None or weight[0].shape != (kh, kw, shape[2], layer["filters"]):
            got = None if weight is None else weight[0].shape
            raise ValueError(f"layer {index}: conv2d kernel must be {(kh, kw, shape[2], layer['filters'])}, got {got}")
        if layer.get("padding", "valid") == "same":
            return shape[0], shape[1], layer["filters"]
        return shape[0] - kh + 1, shape[1] - kw + 1, layer["filters"]
    if kind == "maxpool2d":
        p = int(layer["pool_size"])
        return shape[0] // p, shape[1] // p, shape[2]
    if kind == "flatten":
        return (int(np.prod(shape)),)
    if kind == "dense":
        if weight is None or weight[0].shape != (shape[0], layer["units"]):
            got = None if weight is None else weight[0].shape
            raise ValueError(f"layer {index}: dense kernel must be {(shape[0], layer['units'])}, got {got}")
        return (layer["units"],)
    return shape  # dropout


def conv2d(x, kernel, bias, padding: str = "valid", xp=np):
    """Cross-correlation (the deep-learning 'convolution'), stride 1, channels-last. ``xp``: numpy or cupy."""
    kh, kw = kernel.shape[:2]
    if padding == "same":
        ph, pw = (kh - 1) // 2, (kw - 1) // 2
        x = xp.pad(x, ((0, 0), (ph, kh - 1 - ph), (pw, kw - 1 - pw), (0, 0)))
    n, h, w, _ = x.shape
    ho, wo = h - kh + 1, w - kw + 1
    out = xp.empty((n, ho, wo, kernel.shape[3]), dtype=xp.result_type(x, kernel))
    out[...] = bias
    for i in range(kh):
        for j in range(kw):
            out += x[:, i:i + ho, j:j + wo, :] @ kernel[i, j]
    return out


def maxpool2d(x: np.ndarray, pool: int) -> np.ndarray:
    """Max over non-overlapping ``pool`` x ``pool`` blocks ('valid': a ragged last row/column is dropped)."""
    n, h, w, c = x.shape
    ho, wo = h // pool, w // pool
    return x[:, :ho * pool, :wo * pool, :].reshape(n, ho, pool, wo, pool, c).max(axis=(2, 4))


def activate(x, name: str, xp=np):
    if name == "relu":
        return xp.maximum(x, 0, out=x)
    if name == "sigmoid":
        return sigmoid(x, xp)
    return x


def sigmoid(x, xp=np):
    """Logistic function without overflow warnings for large negative inputs."""
    ex = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + ex), ex / (1.0 + ex))


def forward(net: Network, x: np.ndarray, batch_size: int = 256, xp=np) -> np.ndarray:
    """Scores ``(N,)`` for inputs ``(N, H, W, C)`` (already preprocessed), computed in batches.

    ``xp`` is the array module: numpy (CPU, the default) or cupy (a CUDA GPU: inputs and weights are copied to
    the device, the scores back to a numpy array).
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1:] != tuple(net.input_shape):
        raise ValueError(f"input must have shape (N, {', '.join(map(str, net.input_shape))}), got {x.shape}")
    weights = [None if w is None else (xp.asarray(w[0]), xp.asarray(w[1])) for w in net.weights]
    scores = np.empty(len(x), dtype=np.float32)
    for start in range(0, len(x), batch_size):
        out = _forward_batch(net.layers, weights, xp.asarray(x[start:start + batch_size]), xp)[:, 0]
        scores[start:start + batch_size] = out.get() if hasattr(out, "get") else out
    return scores


def _forward_batch(layers, weights, x, xp):
    for layer, weight in zip(layers, weights):
        kind = layer["type"]
        if kind == "conv2d":
            x = conv2d(x, weight[0], weight[1], layer.get("padding", "valid"), xp)
        elif kind == "maxpool2d":
            x = maxpool2d(x, int(layer["pool_size"]))
        elif kind == "flatten":
            x = x.reshape(len(x), -1)
        elif kind == "dense":
            x = x @ weight[0] + weight[1]
        x = activate(x, layer.get("activation", "linear"), xp)
    return x


def layers_from_keras(config: Mapping[str, Any]) -> tuple[tuple[int, int, int], list[dict[str, Any]], list[str]]:
    """Our layer dicts from a Keras ``Sequential`` JSON config; also the names of the layers' weight groups.

    Only what the real/bogus networks use is accepted (stride-1 convolutions, square non-overlapping pooling,
    channels-last); anything else is refused with the layer's name rather than run wrongly.
    """
    if config.get("class_name") != "Sequential":
        raise ValueError(f"expected a Keras Sequential model, got {config.get('class_name')!r}")
    layers: list[dict[str, Any]] = []
    names: list[str] = []
    input_shape = None
    for entry in config["config"]["layers"]:
        kind, cfg = entry["class_name"], entry["config"]
        name = cfg["name"]
        if "batch_input_shape" in cfg:
            input_shape = tuple(int(s) for s in cfg["batch_input_shape"][1:])
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise ValueError(f"layer {name}: only channels_last is supported, got {cfg['data_format']!r}")
        if kind == "Conv2D":
            if tuple(cfg["strides"]) != (1, 1) or tuple(cfg["dilation_rate"]) != (1, 1):
                raise ValueError(f"layer {name}: only stride 1, dilation 1 convolutions are supported")
            if not cfg.get("use_bias", True):
                raise ValueError(f"layer {name}: convolutions without bias are not supported")
            layers.append({"type": "conv2d", "filters": int(cfg["filters"]), "kernel_size": list(cfg["kernel_size"]),
                           "padding": cfg["padding"], "activation": cfg["activation"]})
        elif kind == "MaxPooling2D":
            pool = tuple(cfg["pool_size"])
            if pool[0] != pool[1] or tuple(cfg["strides"]) != pool or cfg["padding"] != "valid":
                raise ValueError(f"layer {name}: only square, non-overlapping 'valid' pooling is supported")
            layers.append({"type": "maxpool2d", "pool_size": int(pool[0])})
        elif kind == "Dropout":
            layers.append({"type": "dropout", "rate": float(cfg["rate"])})
        elif kind == "Flatten":
            layers.append({"type": "flatten"})
        elif kind == "Dense":
            layers.append({"type": "dense", "units": int(cfg["units"]), "activation": cfg["activation"]})
        else:
            raise ValueError(f"layer {name}: Keras layer type {kind!r} is not supported")
        names.append(name)
    if input_shape is None:
        raise ValueError("the Keras config does not give the input shape (batch_input_shape)")
    return input_shape, layers, names


def has_weights(layer: Mapping[str, Any]) -> bool:
    return layer["type"] in ("conv2d", "dense")


def make_network(input_shape: Sequence[int], layers: Sequence[Mapping[str, Any]],
                 weights: Sequence[tuple[np.ndarray, np.ndarray] | None]) -> Network:
    return Network(tuple(int(s) for s in input_shape), tuple(dict(layer) for layer in layers),
                   tuple(None if w is None else (np.asarray(w[0], np.float32), np.asarray(w[1], np.float32))
                         for w in weights))
