"""The Zarr versions acqzarr writes and reads, by number or by the documents found in a store."""

from __future__ import annotations

from collections.abc import Iterable

from .zarr_spec import ZarrSpec
from .zarr_v2 import ZarrV2Spec
from .zarr_v3 import ZarrV3Spec

__all__ = ["SPECS", "spec_for", "spec_in"]

SPECS: tuple[ZarrSpec, ...] = (ZarrV3Spec(), ZarrV2Spec())  # v3 first: a store holding both reads as v3


def spec_for(version: int, separator: str | None = None) -> ZarrSpec:
    """The spec of Zarr ``version`` (writing with chunk key ``separator``, when given); ValueError
    for a version acqzarr does not know."""
    for spec in SPECS:
        if spec.version == version:
            return spec if separator is None else spec.writing(separator)
    raise ValueError(f"Zarr version {version} is not supported (2 or 3)")


def spec_in(names: Iterable[str]) -> ZarrSpec | None:
    """The spec whose node documents appear among the file ``names`` of a store, if any."""
    found = set(names)
    return next((s for s in SPECS if found.intersection(s.node_names)), None)
