"""OME-NGFF metadata of the groups above the images: a plate and its wells, or a series list.

A store whose root is not itself an image says where its images are, so that the
path a user types first (the store) opens in a reader: napari-ome-zarr, bioio and
ome-zarr-models follow the root, and a root without metadata ("root attributes
are empty") is a dead end even for a single camera at ``cam0``.  NGFF has two ways:

- a plate (HCS): ``plate`` at the root (rows, columns, wells with their indices),
  ``well`` in each ``<row>/<column>`` group listing its fields;
- otherwise the transitional bioformats2raw layout: ``bioformats2raw.layout: 3``
  at the root and an ``OME`` group whose ``series`` lists the image paths (so the
  images need not be at "0", "1", ...), also for one image under a key.

napari-ome-zarr lists a bioformats2raw store's images from ``OME/METADATA.ome.xml``
(not from ``series``), opening group ``<path>`` for ``<Image ID="Image:<path>">``;
``collection_files`` writes that file with one ``Image`` per series entry, in the
same order.  It names the images and nothing more: no ``Pixels`` (the shape grows
while recording; each image's NGFF metadata describes it), so it is not a complete
OME-XML document for tools that need one.

The fields here carry no version: where it goes differs between NGFF 0.4 and 0.5
(``ngff.ngff_04_group`` / ``ngff_05_group``).
"""

from __future__ import annotations

from typing import Any
from xml.sax.saxutils import quoteattr

from ..settings import COLLECTION_GROUP, Plate, StreamSettings

__all__ = ["collection_files", "collection_groups"]

OME_XML_NAMESPACE = "http://www.openmicroscopy.org/Schemas/OME/2016-06"

Fields = dict[str, Any]


def collection_groups(settings: StreamSettings) -> dict[str, Fields]:
    """Group path -> its NGFF fields, for every group above the images that has any."""
    if settings.plate is not None:
        return _plate_groups(settings.plate)
    series = _series(settings)
    if not series:
        return {}
    return {"": {"bioformats2raw.layout": 3}, COLLECTION_GROUP: {"series": series}}


def collection_files(settings: StreamSettings) -> dict[str, bytes]:
    """Store key -> bytes of the files beside the group documents: ``OME/METADATA.ome.xml`` for a
    bioformats2raw store (see the module docstring), else nothing."""
    series = _series(settings) if settings.plate is None else []
    if not series:
        return {}
    images = "".join(
        f"  <Image ID={quoteattr('Image:' + path)} Name={quoteattr(path)}/>\n" for path in series
    )
    xml = f'<?xml version="1.0" encoding="UTF-8"?>\n<OME xmlns="{OME_XML_NAMESPACE}">\n{images}</OME>\n'
    return {f"{COLLECTION_GROUP}/METADATA.ome.xml": xml.encode()}


def _series(settings: StreamSettings) -> list[str]:
    """The image paths a bioformats2raw root lists: every image, unless the root is the image."""
    keys = [image.key for image in settings.images]
    return [] if keys == [""] else keys


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
