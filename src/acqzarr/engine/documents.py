"""An image's metadata documents, rendered and written together.

Everything a reader learns about an image besides its chunks: every level's
array document (its shape is what makes frames visible), the per-frame
metadata columns, and the image group (OME-NGFF block with the contrast seen
so far, the user's attributes, the session record).  A publish writes them in
one atomic ``Store.put_group``, so no reader, and no reader after a kill,
sees a shape, a column and a session record that disagree.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from ..codecs import BloscCodec
from ..metadata.zarr_spec import ZarrSpec
from ..settings import ArraySettings
from ..settings.locations import join_key
from ..stores import Store
from ..writers.bands import FrameCounts
from ..writers.layout import ArrayLayout
from .contrast import ContrastWindows
from .frame_columns import FrameColumns
from .session_record import SESSION_KEY, RecordTotals, SessionRecord

__all__ = ["ImageDocuments"]


class ImageDocuments:
    """The documents of one image group and its levels (``publish`` runs on the I/O thread, or on
    the caller's in flush; ``write_group`` on the caller's)."""

    def __init__(
        self,
        *,
        settings: ArraySettings,
        spec: ZarrSpec,
        store: Store,
        lock: threading.Lock,
        layouts: Sequence[ArrayLayout],
        codec: BloscCodec | None,
        columns: FrameColumns,
        contrast: ContrastWindows,
        session: SessionRecord,
        counts: FrameCounts,
    ) -> None:
        self.settings = settings
        self._spec = spec
        self._store = store
        self._lock = lock  # the stream's: one metadata change at a time in the store
        self._layouts = list(layouts)
        self._arrays = [  # each level's array document, but for its shape
            spec.image_array(
                join_key(settings.key, str(level)),
                chunks=layout.chunks,
                shards=layout.shard_shape,
                dtype=layout.dtype,
                codec=codec,
                dimension_names=layout.names,
            )
            for level, layout in enumerate(layouts)
        ]
        self._columns = columns
        self._contrast = contrast
        self.session = session
        self._counts = counts
        self.totals = RecordTotals()  # as last published
        self.final = False  # the session record says how it ended
        self.user_attrs: dict[str, Any] = {}

    def publish(self, extents: list[int], frames: int) -> None:
        """Show ``extents[k]`` steps of the append axis on level k, holding ``frames`` frames: the
        shapes of all levels, the per-frame metadata columns (their chunks stored first) and the
        image group as one atomic change."""
        docs: dict[str, Any] = {}
        for array, layout, extent in zip(self._arrays, self._layouts, extents, strict=True):
            docs.update(array.with_shape(layout.shape_for(extent)))
        docs.update(self._columns.publish(extents[0]))
        self.totals = RecordTotals(frames, self._counts.filled, self._counts.skipped)
        with self._lock:
            self._store.put_group({**_encoded(docs), **self._group()})

    def write_group(self) -> None:
        """Rewrite the image group alone (user attributes, a session update, the final record)."""
        with self._lock:
            self._store.put_group(self._group())

    def session_record(self) -> dict[str, Any]:
        """The session record as last written (after the final write: the final one)."""
        return self.session.render(self.totals, final=self.final)

    def _group(self) -> dict[str, bytes]:
        attrs = self._spec.image_attributes(self.settings, len(self._layouts), self._contrast.windows)
        docs = self._spec.group_documents(
            self.settings.key, {**self.user_attrs, **attrs, SESSION_KEY: self.session_record()}
        )
        return _encoded(docs)


def _encoded(docs: dict[str, Any]) -> dict[str, bytes]:
    return {key: json.dumps(doc, indent=2).encode() for key, doc in docs.items()}
