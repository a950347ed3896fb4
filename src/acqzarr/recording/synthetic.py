"""Camera-like test frames: a smooth background plus Poisson shot noise, ~12 bits used.

Compressibility matters for any speed figure, so demos, tests and the
benchmark all draw from the same generator instead of random bytes (which do
not compress) or constants (which compress absurdly well).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["camera_frames"]


def camera_frames(
    n: int, shape: tuple[int, int], dtype: Any = "uint16", seed: int = 0
) -> np.ndarray[Any, Any]:
    """``n`` frames of ``shape``; deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = np.empty((n, h, w), dtype=dtype)
    info = np.iinfo(out.dtype) if out.dtype.kind in "iu" else None
    peak = min(3000.0, float(info.max) * 0.7) if info else 3000.0
    for i in range(n):
        phase = 0.3 * i
        background = peak * (0.35 + 0.25 * np.sin(yy / 211.0 + phase) * np.cos(xx / 173.0 - phase))
        frame = rng.poisson(np.maximum(background, 1.0)).astype(np.float64) + 100.0
        if info is not None:
            frame = np.clip(frame, info.min, info.max)
        out[i] = frame
    return out
