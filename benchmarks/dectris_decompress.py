"""Which bslz4 decompressor the detector decoders use: ``dectris-compression`` or ``bitshuffle``.

Run by hand (``PYTHONPATH=src python benchmarks/dectris_decompress.py``); it prints ms per frame
for EIGER-like frames (Poisson counts with a small mean, as a diffraction frame between spots)
and the speed-up of two threads over one, which says whether the decompressor (and the whole
Stream V2 decode of an image message) releases the GIL.  Not part of the test suite: the figures
go in the decoders' notes, not in assertions.
"""

from __future__ import annotations

import struct
import threading
import time

import bitshuffle
import cbor2
import numpy as np
from dectris.compression import decompress

from acqzarr.ingest.dectris.stream2 import Stream2Decoder

FRAMES = [((1062, 1028), np.dtype("<u4"), 0.05), ((2162, 2068), np.dtype("<u2"), 0.3)]


def bslz4(frame: np.ndarray) -> bytes:
    """The HDF5 bitshuffle framing: 8-byte BE total size, 4-byte BE block size in bytes, blocks."""
    block = 8192 // frame.itemsize
    blocks = bitshuffle.compress_lz4(frame.reshape(-1), block).tobytes()
    return struct.pack(">QI", frame.nbytes, block * frame.itemsize) + blocks


def with_dectris(payload: bytes, frame: np.ndarray) -> np.ndarray:
    return np.frombuffer(decompress(payload, "bslz4", elem_size=frame.itemsize), frame.dtype)


def with_bitshuffle(payload: bytes, frame: np.ndarray) -> np.ndarray:
    block = struct.unpack(">I", payload[8:12])[0] // frame.itemsize
    blob = np.frombuffer(payload, np.uint8, offset=12)
    return bitshuffle.decompress_lz4(blob, (frame.size,), frame.dtype, block)


def per_frame(fn, *args, n: int = 30) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for _ in range(n):
        fn(*args)
    return (time.perf_counter() - t0) / n


def threaded(fn, args, threads: int, n: int = 30) -> float:  # type: ignore[no-untyped-def]
    """Frames per second with ``threads`` threads each decoding ``n`` frames (best of 3 runs: the
    machine is shared).  Each result is dropped at once, as the server's writer would."""

    def work() -> None:
        for _ in range(n):
            fn(*args)

    best = 0.0
    for _ in range(3):
        workers = [threading.Thread(target=work) for _ in range(threads)]
        t0 = time.perf_counter()
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        best = max(best, threads * n / (time.perf_counter() - t0))
    return best


def main() -> None:
    rng = np.random.default_rng(0)
    for shape, dtype, mean in FRAMES:
        frame = rng.poisson(mean, shape).astype(dtype)
        payload = bslz4(frame)
        assert np.array_equal(with_dectris(payload, frame), frame.reshape(-1))
        assert np.array_equal(with_bitshuffle(payload, frame), frame.reshape(-1))
        msg = cbor2.dumps(
            {
                "type": "image",
                "image_id": 0,
                "data": {
                    "threshold_1": cbor2.CBORTag(
                        40,
                        [
                            list(shape),
                            cbor2.CBORTag(
                                70 if dtype.itemsize == 4 else 69,
                                cbor2.CBORTag(56500, ["bslz4", dtype.itemsize, payload]),
                            ),
                        ],
                    )
                },
            }
        )
        print(
            f"{shape[1]}x{shape[0]} {dtype} mean {mean}: {frame.nbytes / 1e6:.1f} MB -> "
            f"{len(payload) / 1e6:.2f} MB ({frame.nbytes / len(payload):.1f}x)"
        )
        decoder = Stream2Decoder()
        cases = [
            ("dectris-compression", with_dectris, (payload, frame)),
            ("bitshuffle", with_bitshuffle, (payload, frame)),
            ("cbor2.loads (no hook)", cbor2.loads, (msg,)),
            ("Stream2Decoder.decode", decoder.decode, ([msg],)),
        ]
        for name, fn, args in cases:
            ms = min(per_frame(fn, *args) for _ in range(3)) * 1e3  # also warms the allocator up
            one = threaded(fn, args, 1)
            two = threaded(fn, args, 2)
            print(
                f"  {name:22s} {ms:6.2f} ms/frame; "
                f"1 thread {one:6.0f}/s, 2 threads {two:6.0f}/s ({two / one:.2f}x)"
            )


if __name__ == "__main__":
    main()
