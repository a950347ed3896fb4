"""The reliability suite records its figures for RELIABILITY.md (see report.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from .sizes import RESULTS, SIZES


@pytest.fixture
def record_figures(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """A dict the test fills with its figures; written to .results/<test id>.json when it passes."""
    figures: dict[str, Any] = {}
    yield figures
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.passed and figures:
        RESULTS.mkdir(parents=True, exist_ok=True)
        name = request.node.nodeid.split("::", 1)[1].replace("/", "_")
        (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    if rep.when == "call":
        item.rep_call = rep  # type: ignore[attr-defined]
    return rep


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Record the sizes this run used beside the figures, so the report states both."""
    if SIZES and RESULTS.exists():
        (RESULTS / "sizes.json").write_text(json.dumps(dict(sorted(SIZES.items())), indent=2))
