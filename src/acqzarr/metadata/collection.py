"""OME-NGFF metadata of the groups above the images: a plate and its wells, or a series list.

A store of several images (positions, cameras) says so at its root, so a reader
does not open the first image it finds and miss the others.  NGFF has two ways:

- a plate (HCS): ``plate`` at the root (rows, columns, wells with their indices),
  ``well`` in each ``<row>/<column>`` group listing its fields;
- otherwise the transitional bioformats2raw layout: ``bioformats2raw.layout: 3``
  at the root and an ``OME`` group whose ``series`` lists the image paths (so the
  images need not be at "0", "1", ...).

The fields here carry no version: where it goes differs between NGFF 0.4 and 0.5
(``ngff.ngff_04_group`` / ``ngff_05_group``).
"""

from __future__ import annotations

from typing import Any

from ..settings import COLLECTION_GROUP, Plate, StreamSettings

__all__ = ["collection_groups"]

Fields = dict[str, Any]


def collection_groups(settings: StreamSettings) -> dict[str, Fields]:
    """Group path -> its NGFF fields, for every group above the images that has any."""
    if settings.plate is not None:
        return _plate_groups(settings.plate)
    images = settings.images
    if len(images) < 2:
        return {}
    return {
        "": {"bioformats2raw.layout": 3},
        COLLECTION_GROUP: {"series": [image.key for image in images]},
    }


def _plate_groups(plate: Plate) -> dict[str, Fields]:
    acquisition = {"acquisition": plate.acquisitions[0].id} if plate.acquisitions else {}
    block: Fields = {
        "rows": [{"name": r} for r in plate.rows],
        "columns": [{"name": c} for c in plate.columns],
        "wells": [],
        "field_count": plate.fields,
    }
    if plate.name is not None:
        block["name"] = plate.name
    if plate.acquisitions:
        block["acquisitions"] = [
            {**a.model_dump(exclude_none=True), "maximumfieldcount": a.maximumfieldcount or plate.fields}
            for a in plate.acquisitions
        ]
    groups: dict[str, Fields] = {"": {"plate": block}}
    for well in plate.wells:
        row, _, column = well.partition("/")
        block["wells"].append(
            {"path": well, "rowIndex": plate.rows.index(row), "columnIndex": plate.columns.index(column)}
        )
        images = [{"path": str(field), **acquisition} for field in range(plate.fields)]
        groups[well] = {"well": {"images": images}}
    return groups
