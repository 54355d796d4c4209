"""Cutout preprocessing shared by the real/bogus models: NaN handling, L2 normalisation, central crop."""

from __future__ import annotations

import numpy as np

NORMALISATION = "channel"   # our own model's normalisation (braai's is classify.BRAAI_NORMALISATION)


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


def preprocess(triplets: np.ndarray, crop: int) -> np.ndarray:
    """Raw triplets -> our model's input: NaN -> 0, each channel / its L2 norm (over the crop), central crop."""
    start = (triplets.shape[1] - crop) // 2
    cropped = triplets[:, start:start + crop, start:start + crop, :]
    return normalise(cropped, NORMALISATION)
