"""Chunk compression with Blosc1, the format of the Zarr ``blosc`` codec.

Blosc1 is what zarr-python and tensorstore decode (blosc2's own frames are
not).  The compressor is the c-blosc that numcodecs bundles.  We call its
``blosc_compress_ctx`` through ctypes: that releases the GIL, needs no global
lock, and, unlike ``numcodecs.blosc.compress``, writes into a buffer we own.
numcodecs allocates a worst-case output per chunk and slices it (a copy
under the GIL), and fresh memory is slow to touch on virtual machines
(docs/performance.md, "Measurements behind the design").  If the symbol is
ever missing we fall back to numcodecs.

Threading is chosen per codec (``BloscCodec.threads``, passed to every
``blosc_compress_ctx`` call), never process-wide: importing acqzarr or writing
a stream leaves numcodecs' ``blosc.use_threads`` and Blosc's global thread
count as the application set them.  The fallback follows those settings (it
cannot take a thread count per call); numcodecs guards its global path with a
lock, so it is thread-safe either way and writes the same bytes.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np
from numcodecs import blosc as _blosc

from ..settings import Blosc

__all__ = ["BLOSC_MAX_OVERHEAD", "SHUFFLE_CODES", "BloscCodec"]

BLOSC_MAX_OVERHEAD = 16
SHUFFLE_CODES = {"none": 0, "byte": 1, "bit": 2}
_V3_SHUFFLE_NAMES = {"none": "noshuffle", "byte": "shuffle", "bit": "bitshuffle"}


def _load_compress_ctx() -> Any:
    try:
        fn = ctypes.CDLL(_blosc.__file__).blosc_compress_ctx
    except (OSError, AttributeError):
        return None
    fn.restype = ctypes.c_int
    fn.argtypes = [
        ctypes.c_int,  # clevel
        ctypes.c_int,  # doshuffle
        ctypes.c_size_t,  # typesize
        ctypes.c_size_t,  # nbytes
        ctypes.c_void_p,  # src
        ctypes.c_void_p,  # dest
        ctypes.c_size_t,  # destsize
        ctypes.c_char_p,  # compressor
        ctypes.c_size_t,  # blocksize (0 = automatic)
        ctypes.c_int,  # internal threads
    ]
    return fn


_compress_ctx = _load_compress_ctx()


class BloscCodec:
    """Compresses contiguous chunks and describes itself for v2 and v3 metadata."""

    def __init__(self, settings: Blosc, dtype: np.dtype[Any], threads: int = 1) -> None:
        """``threads``: Blosc's own threads per chunk. One by default: the compression pool already
        runs one chunk per core, and Blosc's threads on top would oversubscribe the cores."""
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        self.settings = settings
        self.threads = threads
        self.typesize = dtype.itemsize
        self._cname = settings.cname.encode("ascii")
        self._shuffle = SHUFFLE_CODES[settings.shuffle]

    def encode(self, chunk: np.ndarray[Any, Any]) -> bytes:
        """Compress into new bytes (numcodecs' own path; the reference for ``encode_into``)."""
        out: bytes = _blosc.compress(chunk, self._cname, self.settings.clevel, self._shuffle, 0)
        return out

    def encode_into(self, chunk: np.ndarray[Any, Any], out: np.ndarray[Any, Any], offset: int) -> int:
        """Compress a C-contiguous ``chunk`` into ``out[offset:]``; return the compressed size.

        ``out`` (uint8) must have room for ``chunk.nbytes + BLOSC_MAX_OVERHEAD``.
        """
        room = out.nbytes - offset
        bound = chunk.nbytes + BLOSC_MAX_OVERHEAD
        if room < bound:
            raise ValueError(f"output has {room} bytes, a chunk of {chunk.nbytes} may need {bound}")
        if _compress_ctx is None:
            enc = self.encode(chunk)
            out[offset : offset + len(enc)] = np.frombuffer(enc, np.uint8)
            return len(enc)
        n: int = _compress_ctx(
            self.settings.clevel,
            self._shuffle,
            self.typesize,
            chunk.nbytes,
            chunk.ctypes.data,
            out.ctypes.data + offset,
            bound,  # as numcodecs does: incompressible data is stored memcpy'd, never larger
            self._cname,
            0,  # blocksize: automatic
            self.threads,
        )
        if n <= 0:
            raise RuntimeError(f"blosc compression failed with code {n}")
        return n

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
