"""A straightforward forward pass, written independently of :mod:`server.transients.cnn`: the check and the anchor.

Convolution as the textbook direct sum, one output pixel at a time (the receptive window dotted with the
flattened kernel), in float64; pooling by explicit loops over blocks. It is the plain reading of the layer
definitions, used by the tests to check the fast path and by ``benchmarks/bench_classify.py`` as the anchor
it is timed against.
"""

from __future__ import annotations

import numpy as np

from server.transients.cnn import Network


def reference_forward(net: Network, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    for layer, weight in zip(net.layers, net.weights):
        kind = layer["type"]
        if kind == "conv2d":
            kernel = np.asarray(weight[0], np.float64)
            kh, kw, cin, cout = kernel.shape
            if layer.get("padding", "valid") == "same":
                x = np.pad(x, ((0, 0), ((kh - 1) // 2, kh // 2), ((kw - 1) // 2, kw // 2), (0, 0)))
            n, h, w, _ = x.shape
            flat = kernel.reshape(kh * kw * cin, cout)
            out = np.empty((n, h - kh + 1, w - kw + 1, cout))
            for r in range(h - kh + 1):
                for c in range(w - kw + 1):
                    out[:, r, c, :] = x[:, r:r + kh, c:c + kw, :].reshape(n, -1) @ flat + weight[1]
            x = out
        elif kind == "maxpool2d":
            p = int(layer["pool_size"])
            n, h, w, ch = x.shape
            out = np.empty((n, h // p, w // p, ch))
            for r in range(h // p):
                for c in range(w // p):
                    out[:, r, c, :] = x[:, r * p:(r + 1) * p, c * p:(c + 1) * p, :].max(axis=(1, 2))
            x = out
        elif kind == "flatten":
            x = x.reshape(len(x), -1)
        elif kind == "dense":
            x = x @ np.asarray(weight[0], np.float64) + weight[1]
        activation = layer.get("activation", "linear")
        if activation == "relu":
            x = np.where(x > 0, x, 0.0)
        elif activation == "sigmoid":
            x = 1.0 / (1.0 + np.exp(-x))
    return x[:, 0]
