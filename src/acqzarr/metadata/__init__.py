"""Metadata documents: Zarr v2, Zarr v3 and OME-NGFF."""
