"""The engine: a stream routes frames to images; an image owns its levels, pyramid, publisher,
per-frame columns and session record.  The public faces (``Stream``, ``ZarrStorage``) are
exported from ``acqzarr``."""
