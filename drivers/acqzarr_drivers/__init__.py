"""Camera drivers and simulators for acqzarr, registered by name.

Built-in names live here; third-party packages add theirs through the
``acqzarr.drivers`` entry-point group (value: a module path to a class with
an ``Options`` pydantic model and a constructor taking those options).
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

__all__ = ["available", "create", "driver_class"]

_BUILTIN = {
    "simulated.empty": "acqzarr_drivers.simulated:EmptySimulator",
    "simulated.random": "acqzarr_drivers.simulated:RandomSimulator",
    "simulated.radial_sine": "acqzarr_drivers.simulated:RadialSineSimulator",
    "simulated.noise": "acqzarr_drivers.simulated:NoiseSimulator",
    "replay": "acqzarr_drivers.replay:Replay",
}
GROUP = "acqzarr.drivers"


def _registry() -> dict[str, str]:
    found = dict(_BUILTIN)
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep.value)
    return found


def available() -> list[str]:
    return sorted(_registry())


def driver_class(name: str) -> Any:
    """The class registered under ``name``; KeyError listing the known names otherwise."""
    import importlib

    target = _registry().get(name)
    if target is None:
        raise KeyError(f"unknown driver {name!r}; available: {', '.join(available())}")
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def create(name: str, options: dict[str, Any] | None = None) -> Any:
    """Instantiate driver ``name`` with its options validated by the driver's own model."""
    cls = driver_class(name)
    return cls(cls.Options.model_validate(options or {}))
