"""The compressed payloads DECTRIS detectors send, decompressed with maintained libraries.

Stream V2 wraps compressed bytes in CBOR tag 56500 (``cbor/dectris-compression-tag.md``):
``[algorithm, modifier, bytes]`` with

- ``"bslz4"``: bitshuffle + LZ4 in the HDF5 bitshuffle filter's framing (an 8-byte big-endian
  decompressed size, a 4-byte big-endian block size in bytes, then blocks of a 4-byte big-endian
  compressed length and LZ4 data); the modifier is the bitshuffle element size;
- ``"lz4"``: LZ4 in the HDF5 LZ4 filter's framing (the same 12-byte header, then blocks); the
  modifier is unused.

Stream V1 names its encoding in each image's ``dimage_d-1.0`` part: ``"<"``/``">"`` (raw,
little/big endian), ``"bs<BITS>-lz4<"`` (bitshuffle with ``BITS``-bit elements + LZ4, in the same
HDF5 framing as ``"bslz4"``; every public V1 reader skips that 12-byte header) and ``"lz4<"``
(the SIMPLON manual: LZ4 data "without any additional data like block size"; a payload that
starts with the HDF5 LZ4 header instead is recognised by it and taken too).

Both framings are decoded by DECTRIS's own ``dectris-compression`` (measured 1.4-1.9x faster
than the ``bitshuffle`` package on EIGER-like frames, and it releases the GIL, so the server's
decode threads run in parallel: ``benchmarks/dectris_decompress.py``); a raw LZ4 block by
``numcodecs`` (a core dependency).  Nothing here trusts a size the sender declares: it is checked
against the caller's cap (from the series' geometry) and against what the payload could possibly
expand to before anything is allocated.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from ...errors import ConfigError
from .messages import DetectorMessageError

__all__ = [
    "HDF5_HEADER_BYTES",
    "MAX_EXPANSION",
    "MAX_PAYLOAD_BYTES",
    "V1Encoding",
    "decompress_tag",
    "decompress_v1",
    "parse_v1_encoding",
]

# The largest decompressed payload (one channel of one image, or one start array) ever accepted:
# 4 GiB, four times a 16M-pixel EIGER2 frame at 32 bits.  A start whose frame would be larger is
# refused as ``bad_start`` (``stream2.py``), so this also bounds every image of a series.
MAX_PAYLOAD_BYTES = 4 << 30

# LZ4 cannot expand its input by more than 255x (each extra byte of a match length adds 255 bytes
# of output); a declared size beyond this many times the compressed bytes is a lie, refused before
# the output buffer is allocated.
MAX_EXPANSION = 256

HDF5_HEADER_BYTES = 12  # 8-byte BE total size + 4-byte BE block size

_Decompress = Callable[..., bytes]
_decompress: _Decompress | None = None


def _dectris_decompress() -> _Decompress:
    """``dectris.compression.decompress``, imported on first use so that acqzarr without the
    ``dectris`` extra still imports (and says what to install when a detector input needs it)."""
    global _decompress
    if _decompress is None:
        try:
            from dectris.compression import decompress
        except ImportError as exc:  # pragma: no cover - the test env has it
            raise ConfigError(
                "detector inputs need DECTRIS's decompressor: pip install 'acqzarr[dectris]'"
            ) from exc
        _decompress = decompress
    return _decompress


def _bad(message: str) -> DetectorMessageError:
    return DetectorMessageError("bad_compression", message)


def _declared_size(payload: bytes | memoryview, max_bytes: int, what: str) -> tuple[int, int]:
    """The (decompressed size, block size in bytes) an HDF5-framed payload declares, refused when
    the payload could not hold them."""
    if len(payload) < HDF5_HEADER_BYTES:
        raise _bad(f"{what}: {len(payload)} bytes, shorter than its {HDF5_HEADER_BYTES}-byte header")
    size, block = struct.unpack_from(">QI", payload)
    if size > max_bytes:
        raise _bad(f"{what}: declares {size} bytes decompressed, more than the {max_bytes} allowed")
    if size > MAX_EXPANSION * len(payload) + 64:
        raise _bad(f"{what}: declares {size} bytes from {len(payload)} compressed: impossible for LZ4")
    if block == 0 and size > 0:
        raise _bad(f"{what}: block size 0")
    return int(size), int(block)


def _run(algorithm: str, payload: bytes | memoryview, elem_size: int, size: int, what: str) -> bytes:
    try:
        out = _dectris_decompress()(bytes(payload), algorithm, elem_size=elem_size)
    except (RuntimeError, ValueError, MemoryError, OverflowError) as exc:
        raise _bad(f"{what}: {algorithm} payload does not decompress ({exc or type(exc).__name__})") from None
    if len(out) != size:
        raise _bad(f"{what}: decompressed to {len(out)} bytes, the header says {size}")
    return out


def decompress_tag(value: Any, *, max_bytes: int = MAX_PAYLOAD_BYTES, what: str = "tag 56500") -> bytes:
    """The bytes a CBOR tag 56500 value (``[algorithm, modifier, bytes]``) stands for.

    ``max_bytes`` caps the declared decompressed size (the caller passes what its series' geometry
    allows); a payload that declares more, is truncated or corrupt raises ``bad_compression``."""
    if not isinstance(value, list | tuple) or len(value) != 3:  # cbor2 6: a tuple inside a tag
        raise _bad(f"{what}: expected [algorithm, modifier, bytes], got {type(value).__name__}")
    algorithm, modifier, payload = value
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise _bad(f"{what}: the compressed data is {type(payload).__name__}, not a byte string")
    payload = bytes(payload)  # no copy for bytes, which is what cbor2 gives
    if algorithm == "bslz4":
        if type(modifier) is not int or modifier not in (1, 2, 4, 8):
            raise _bad(f"{what}: bslz4 element size {modifier!r} (1, 2, 4 or 8)")
        size, block = _declared_size(payload, max_bytes, what)
        if size % modifier or block % modifier:
            raise _bad(f"{what}: {size} bytes / block {block} not whole {modifier}-byte elements")
        return _run("bslz4", payload, modifier, size, what)
    if algorithm == "lz4":
        size, _ = _declared_size(payload, max_bytes, what)
        return _run("lz4", payload, 1, size, what)
    raise _bad(f"{what}: unknown compression algorithm {algorithm!r} (bslz4, lz4)")


class V1Encoding:
    """A Stream V1 ``encoding`` string, parsed: ``"[bs<BITS>][[-]lz4][<|>]"``."""

    __slots__ = ("byteorder", "lz4", "shuffle_bytes")

    def __init__(self, shuffle_bytes: int | None, lz4: bool, byteorder: str) -> None:
        self.shuffle_bytes = shuffle_bytes  # bitshuffle element size in bytes; None: no bitshuffle
        self.lz4 = lz4
        self.byteorder = byteorder  # "<" or ">"


def parse_v1_encoding(encoding: object) -> V1Encoding:
    """Parse a V1 encoding string; anything else raises ``bad_compression``."""
    if not isinstance(encoding, str) or not encoding or encoding[-1] not in "<>":
        raise _bad(f"encoding {encoding!r}: expected '[bs<BITS>][[-]lz4]<' or '>'")
    rest, byteorder = encoding[:-1], encoding[-1]
    shuffle: int | None = None
    if rest.startswith("bs"):
        digits = rest[2:].split("-", 1)[0].removesuffix("lz4")
        if digits not in ("8", "16", "32", "64"):
            raise _bad(f"encoding {encoding!r}: bitshuffle element of {digits!r} bits")
        shuffle = int(digits) // 8
        rest = rest[2 + len(digits) :].removeprefix("-")
    if rest not in ("", "lz4"):
        raise _bad(f"encoding {encoding!r}: unknown compression {rest!r}")
    if shuffle is not None and rest != "lz4":
        raise _bad(f"encoding {encoding!r}: bitshuffle without lz4")
    return V1Encoding(shuffle, rest == "lz4", byteorder)


def decompress_v1(
    encoding: V1Encoding, data: bytes | memoryview, nbytes: int, what: str
) -> bytes | memoryview:
    """A V1 image (or start array) part's pixel bytes, ``nbytes`` of them (from its shape and type,
    already checked against the caps) or ``bad_compression``."""
    if not encoding.lz4:
        if len(data) != nbytes:
            raise _bad(f"{what}: {len(data)} bytes uncompressed, the shape and type say {nbytes}")
        return data
    if encoding.shuffle_bytes is not None:
        size, block = _declared_size(data, nbytes, what)
        if size != nbytes:
            raise _bad(f"{what}: the bslz4 header says {size} bytes, the shape and type say {nbytes}")
        if block % encoding.shuffle_bytes:
            raise _bad(f"{what}: block of {block} bytes, not whole {encoding.shuffle_bytes}-byte elements")
        return _run("bslz4", data, encoding.shuffle_bytes, size, what)
    if len(data) >= HDF5_HEADER_BYTES and data[0] == 0 and struct.unpack_from(">Q", data)[0] == nbytes:
        # A raw LZ4 block never starts with a 0 byte (its first sequence has literals), so this
        # is the HDF5 LZ4 framing some senders use for "lz4<" too.
        _declared_size(data, nbytes, what)
        return _run("lz4", data, 1, nbytes, what)
    if nbytes > MAX_EXPANSION * len(data) + 64:
        raise _bad(f"{what}: {nbytes} bytes from {len(data)} bytes of LZ4: impossible")
    return _raw_lz4(data, nbytes, what)


def _raw_lz4(data: bytes | memoryview, nbytes: int, what: str) -> bytes:
    """One raw LZ4 block of exactly ``nbytes`` decompressed, with numcodecs (which wants its own
    4-byte little-endian size header in front, and checks the output fills it)."""
    from numcodecs import lz4  # the core dependency's LZ4; imported here to keep import cheap

    if nbytes >= 1 << 31:
        raise _bad(f"{what}: {nbytes} bytes is more than one LZ4 block can hold")
    if nbytes == 0:
        return b""
    try:
        out = lz4.decompress(struct.pack("<I", nbytes) + bytes(data))
    except (RuntimeError, ValueError, MemoryError) as exc:
        raise _bad(f"{what}: lz4 block does not decompress ({exc})") from None
    if len(out) != nbytes:  # pragma: no cover - numcodecs checks this itself
        raise _bad(f"{what}: decompressed to {len(out)} bytes, expected {nbytes}")
    return bytes(out)
