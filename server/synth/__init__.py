"""Synthetic test data with a known answer (frames rendered from real catalog stars)."""
from server.synth.frames import FrameSpec, SyntheticFrame, make_wcs, render_frame, write_frame

__all__ = ["FrameSpec", "SyntheticFrame", "make_wcs", "render_frame", "write_frame"]
