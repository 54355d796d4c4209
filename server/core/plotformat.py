"""Which image format a plot path asks for: the suffix decides, and an unknown suffix is refused (a ``.pdf``
path never gets PNG bytes)."""

from __future__ import annotations

import os

PLOT_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg", ".jpg": "jpeg", ".jpeg": "jpeg", ".eps": "eps"}


def plot_format(path) -> str:
    """Matplotlib format name for ``path`` from its suffix; ValueError naming the path for any other suffix."""
    suffix = os.path.splitext(os.fspath(path))[1].lower()
    if suffix not in PLOT_FORMATS:
        raise ValueError(f"plot file {os.fspath(path)!r}: unknown image suffix {suffix or '(none)'!r}; use one of "
                         f"{', '.join(PLOT_FORMATS)}")
    return PLOT_FORMATS[suffix]
