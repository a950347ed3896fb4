"""Our Blosc fast path writes exactly the bytes numcodecs (the Zarr reference codec) writes."""

from __future__ import annotations

import numpy as np
import pytest
from numcodecs import Blosc as NumcodecsBlosc

import acqzarr as az
import acqzarr.codecs.blosc as blosc_mod
from acqzarr.codecs.blosc import BLOSC_MAX_OVERHEAD, BloscCodec
from acqzarr.recording.synthetic import camera_frames

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
