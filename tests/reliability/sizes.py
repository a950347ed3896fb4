"""Where the reliability suite writes its figures for RELIABILITY.md (see report.py), and the sizes
it runs at: CI's by default, longer when report.py sets the ACQZARR_* variables."""

from __future__ import annotations

import os
from pathlib import Path

RESULTS = Path(os.environ.get("ACQZARR_RELIABILITY_RESULTS", Path(__file__).parent / ".results"))

SIZES: dict[str, dict[str, int]] = {}  # knob -> the CI size (the default) and this run's


def scale(name: str, default: int) -> int:
    """Sizes come from the environment so report.py can run the suite longer than CI does."""
    value = int(os.environ.get(f"ACQZARR_{name}", default))
    SIZES[f"ACQZARR_{name}"] = {"ci": default, "run": value}
    return value
