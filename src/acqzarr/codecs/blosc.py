"""Chunk compression with Blosc1, the format of the Zarr ``blosc`` codec.

numcodecs' Blosc is used because its output is what zarr-python and
tensorstore decode.  Called from a worker thread with ``use_threads`` off it
takes the ``blosc_compress_ctx`` path, which releases the GIL and needs no
global lock, so N worker threads compress on N cores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numcodecs import blosc as _blosc

from ..settings import Blosc

__all__ = ["SHUFFLE_CODES", "BloscCodec"]

# Never let numcodecs use blosc's global context from the main thread: the
# context path is thread-safe and GIL-free, which is what the writer pool needs.
_blosc.use_threads = False

SHUFFLE_CODES = {"none": 0, "byte": 1, "bit": 2}
_V3_SHUFFLE_NAMES = {"none": "noshuffle", "byte": "shuffle", "bit": "bitshuffle"}


class BloscCodec:
    """Compresses one contiguous chunk buffer and describes itself for v2 and v3 metadata."""

    def __init__(self, settings: Blosc, dtype: np.dtype[Any]) -> None:
        self.settings = settings
        self.typesize = dtype.itemsize
        self._cname = settings.cname.encode("ascii")
        self._shuffle = SHUFFLE_CODES[settings.shuffle]

    def encode(self, chunk: np.ndarray[Any, Any]) -> bytes:
        out: bytes = _blosc.compress(chunk, self._cname, self.settings.clevel, self._shuffle, 0)
        return out

    def v2_config(self) -> dict[str, Any]:
        return {
            "id": "blosc",
            "cname": self.settings.cname,
            "clevel": self.settings.clevel,
            "shuffle": self._shuffle,
            "blocksize": 0,
        }

    def v3_config(self) -> dict[str, Any]:
        return {
            "name": "blosc",
            "configuration": {
                "cname": self.settings.cname,
                "clevel": self.settings.clevel,
                "shuffle": _V3_SHUFFLE_NAMES[self.settings.shuffle],
                "typesize": self.typesize,
                "blocksize": 0,
            },
        }
