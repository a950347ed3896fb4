"""A writer in a child process, for the tests that kill one: its script runs with this checkout's
``src`` and ``tests`` on the path and reports on stdout, one line at a time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import acqzarr as az

REPO = Path(__file__).resolve().parent.parent


def start_writer(code: str, settings: az.StreamSettings, start: int) -> subprocess.Popen[str]:
    """Run ``code`` (``python -c``) with the settings as JSON and the first frame number as its
    arguments; its stdout is a text pipe."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}
    return subprocess.Popen(
        [sys.executable, "-c", code, settings.model_dump_json(), str(start)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
