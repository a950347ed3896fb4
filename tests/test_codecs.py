"""Our Blosc fast path writes exactly the bytes numcodecs (the Zarr reference codec) writes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from numcodecs import Blosc as NumcodecsBlosc

import acqzarr as az
import acqzarr.codecs.blosc as blosc_mod
from acqzarr.codecs.blosc import BLOSC_MAX_OVERHEAD, BloscCodec
from acqzarr.recording.synthetic import camera_frames
from builders import frames_for, stream_settings

DATA = {
    "camera": np.ascontiguousarray(camera_frames(3, (96, 80))),
    "random": np.random.default_rng(0).integers(0, 2**16, (3, 96, 80), dtype=np.uint16),
    "zeros": np.zeros((3, 96, 80), np.uint16),
}


@pytest.mark.parametrize("data", list(DATA))
@pytest.mark.parametrize("cname", ["lz4", "lz4hc", "zstd", "blosclz", "zlib"])
@pytest.mark.parametrize("shuffle", ["none", "byte", "bit"])
@pytest.mark.parametrize("clevel", [0, 1, 9])
def test_encode_into_matches_numcodecs(data: str, cname: str, shuffle: str, clevel: int) -> None:
    chunk = DATA[data]
    settings = az.Blosc(cname=cname, clevel=clevel, shuffle=shuffle)  # type: ignore[arg-type]
    codec = BloscCodec(settings, chunk.dtype)
    out = np.full(chunk.nbytes + BLOSC_MAX_OVERHEAD + 11, 0xAB, np.uint8)
    n = codec.encode_into(chunk, out, 11)
    reference = NumcodecsBlosc(cname=cname, clevel=clevel, shuffle={"none": 0, "byte": 1, "bit": 2}[shuffle])
    assert out[11 : 11 + n].tobytes() == reference.encode(chunk)
    assert n <= chunk.nbytes + BLOSC_MAX_OVERHEAD
    assert (out[:11] == 0xAB).all()  # nothing written before the offset
    np.testing.assert_array_equal(
        np.frombuffer(reference.decode(out[11 : 11 + n].tobytes()), np.uint16).reshape(chunk.shape), chunk
    )


def test_fallback_without_the_c_symbol_gives_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    chunk = DATA["camera"]
    codec = BloscCodec(az.Blosc(), chunk.dtype)
    out = np.zeros(chunk.nbytes + BLOSC_MAX_OVERHEAD, np.uint8)
    fast = out[: codec.encode_into(chunk, out, 0)].tobytes()
    monkeypatch.setattr(blosc_mod, "_compress_ctx", None)
    out2 = np.zeros_like(out)
    assert out2[: codec.encode_into(chunk, out2, 0)].tobytes() == fast


def test_encode_into_refuses_a_too_small_output() -> None:
    chunk = DATA["random"]
    codec = BloscCodec(az.Blosc(), chunk.dtype)
    with pytest.raises(ValueError, match="may need"):
        codec.encode_into(chunk, np.zeros(chunk.nbytes, np.uint8), 0)


# -- no process-wide state of numcodecs (issue 22 #7) ----------------------------------------------
@pytest.mark.parametrize("setting", [True, False, None])
def test_importing_acqzarr_leaves_numcodecs_blosc_threading_as_it_was(setting: bool | None) -> None:
    # Before: acqzarr.codecs.blosc set numcodecs.blosc.use_threads = False for the whole process.
    code = f"""
import numcodecs.blosc as blosc
blosc.use_threads = {setting!r}
blosc.set_nthreads(3)
import acqzarr, acqzarr.codecs.blosc, acqzarr.writers.encode
assert blosc.use_threads is {setting!r}, blosc.use_threads
assert blosc.get_nthreads() == 3, blosc.get_nthreads()
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("path", ["context", "fallback"])
def test_writing_a_stream_leaves_numcodecs_threading_and_its_chunks_decode_with_numcodecs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    from numcodecs import blosc as numcodecs_blosc

    monkeypatch.setattr(numcodecs_blosc, "use_threads", True)
    threads = numcodecs_blosc.get_nthreads()
    if path == "fallback":
        monkeypatch.setattr(blosc_mod, "_compress_ctx", None)
    frames = frames_for((37, 50), 6, "uint16", seed=7)
    store = tmp_path / "s.zarr"
    with az.open_stream(stream_settings(store, 2, chunks=(3, 37, 50), threads=2)) as stream:
        stream.append(frames)
    assert numcodecs_blosc.use_threads is True
    assert numcodecs_blosc.get_nthreads() == threads
    for t in range(2):  # v2: one file a chunk, each a Blosc1 buffer
        raw = (store / "cam0" / "0" / f"{t}.0.0").read_bytes()
        decoded = np.frombuffer(numcodecs_blosc.decompress(raw), np.uint16).reshape(3, 37, 50)
        np.testing.assert_array_equal(decoded, frames[3 * t : 3 * t + 3])


def test_blosc_threads_per_codec_write_the_same_bytes() -> None:
    chunk = DATA["camera"]
    out = np.zeros(chunk.nbytes + BLOSC_MAX_OVERHEAD, np.uint8)
    one = out[: BloscCodec(az.Blosc(), chunk.dtype).encode_into(chunk, out, 0)].tobytes()
    out2 = np.zeros_like(out)
    four = out2[: BloscCodec(az.Blosc(), chunk.dtype, threads=4).encode_into(chunk, out2, 0)].tobytes()
    assert one == four
    with pytest.raises(ValueError, match="threads must be at least 1"):
        BloscCodec(az.Blosc(), chunk.dtype, threads=0)
