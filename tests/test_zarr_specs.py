"""The per-version metadata classes (``metadata/zarr_v2.py``, ``metadata/zarr_v3.py``): what they
parse from arrays another writer (zarr-python) made, what they write, and the chunk-key rule."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numcodecs
import numpy as np
import pytest
import zarr
from zarr.codecs import BloscCodec as ZarrBlosc
from zarr.codecs import ShardingCodec

from acqzarr.codecs import BloscCodec
from acqzarr.metadata.zarr_spec import KeyEncoding
from acqzarr.metadata.zarr_versions import SPECS, spec_for, spec_in
from acqzarr.settings import Blosc

SRC = Path(__file__).resolve().parents[1] / "src" / "acqzarr"


@pytest.mark.parametrize(
    ("encoding", "coords", "key"),
    [
        (KeyEncoding("."), (0, 12, 3), "0.12.3"),
        (KeyEncoding("/"), (4, 0), "4/0"),
        (KeyEncoding("/", "c"), (1, 2, 30), "c/1/2/30"),
        (KeyEncoding(".", "c"), (7,), "c.7"),
    ],
)
def test_key_encoding_round_trips(encoding: KeyEncoding, coords: tuple[int, ...], key: str) -> None:
    assert encoding.key(coords) == key
    assert encoding.parse(key) == coords


@pytest.mark.parametrize("key", ["", "c", "x/1", "0.a", "1/-2", "c/1//2"])
def test_key_encoding_rejects_what_is_not_a_key(key: str) -> None:
    assert KeyEncoding("/", "c").parse(key) is None
    assert KeyEncoding(".").parse(key) is None or key == ""


def _zarr_python_v3(path: Path) -> zarr.Array:
    arr = zarr.create_array(
        str(path),
        shape=(5, 40, 30),
        shards=(2, 40, 16),
        chunks=(1, 20, 8),
        dtype="uint16",
        compressors=ZarrBlosc(cname="zstd", clevel=3, shuffle="bitshuffle"),
        zarr_format=3,
    )
    arr[:] = np.arange(5 * 40 * 30, dtype="uint16").reshape(5, 40, 30)
    return arr


def test_v3_spec_parses_what_zarr_python_writes(tmp_path: Path) -> None:
    arr = _zarr_python_v3(tmp_path / "a.zarr")
    assert isinstance(arr.metadata.codecs[0], ShardingCodec)
    meta = spec_for(3).parse_array(json.loads((tmp_path / "a.zarr" / "zarr.json").read_text()))
    assert meta.shape == (5, 40, 30)
    assert meta.data_type == "uint16"
    assert meta.grid == meta.shards == (2, 40, 16)
    assert meta.chunks == (1, 20, 8)
    assert meta.grid_extent == (3, 1, 2)
    assert meta.compressor is not None
    # The compressor config decodes zarr-python's own inner chunks with numcodecs.
    codec = numcodecs.get_codec(meta.compressor)
    assert meta.compressor["id"] == "blosc" and meta.compressor["shuffle"] == 2
    # Every stored object's key parses to a grid position inside the extent, and there is one per object.
    stored = sorted(p.relative_to(tmp_path / "a.zarr").as_posix() for p in (tmp_path / "a.zarr").rglob("*"))
    keys = [k for k in stored if (tmp_path / "a.zarr" / k).is_file() and k != "zarr.json"]
    coords = sorted(meta.keys.parse(k) for k in keys)  # type: ignore[type-var]
    assert coords == sorted(np.ndindex(*meta.grid_extent))
    assert all(meta.keys.key(c) in keys for c in coords)
    # The first inner chunk of shard c/0/0/0, located by the shard index at the end, decodes to the data.
    from acqzarr.codecs.sharding import ShardIndex

    shard = (tmp_path / "a.zarr" / meta.keys.key((0, 0, 0))).read_bytes()
    n = int(np.prod([g // c for g, c in zip(meta.grid, meta.chunks, strict=True)]))
    where = ShardIndex.decode(shard, n).chunk(0)
    assert where is not None
    offset, size = where
    chunk = np.frombuffer(codec.decode(shard[offset : offset + size]), "<u2").reshape(meta.chunks)
    np.testing.assert_array_equal(chunk, arr[0:1, 0:20, 0:8])


@pytest.mark.parametrize("separator", [".", "/"])
def test_v2_spec_parses_what_zarr_python_writes(tmp_path: Path, separator: str) -> None:
    arr = zarr.create_array(
        str(tmp_path / "a.zarr"),
        shape=(3, 10, 12),
        chunks=(2, 5, 5),
        dtype=">i4",
        compressors=numcodecs.Zstd(level=2),
        zarr_format=2,
        chunk_key_encoding={"name": "v2", "separator": separator},
    )
    arr[:] = 7
    meta = spec_for(2).parse_array(json.loads((tmp_path / "a.zarr" / ".zarray").read_text()))
    assert (meta.shape, meta.chunks, meta.grid, meta.shards) == ((3, 10, 12), (2, 5, 5), (2, 5, 5), None)
    assert meta.data_type == "int32"
    assert meta.compressor is not None and meta.compressor["id"] == "zstd" and meta.compressor["level"] == 2
    assert meta.grid_extent == (2, 2, 3)
    for coords in np.ndindex(*meta.grid_extent):
        assert (tmp_path / "a.zarr" / meta.keys.key(coords)).is_file()
    raw = numcodecs.get_codec(meta.compressor).decode(
        (tmp_path / "a.zarr" / meta.keys.key((0, 1, 1))).read_bytes()
    )
    np.testing.assert_array_equal(np.frombuffer(raw, ">i4"), 7)


def test_v2_string_arrays_are_strings(tmp_path: Path) -> None:
    arr = zarr.create_array(str(tmp_path / "s.zarr"), shape=(4,), chunks=(2,), dtype=str, zarr_format=2)
    arr[:] = ["a", "bb", "", "ccc"]
    meta = spec_for(2).parse_array(json.loads((tmp_path / "s.zarr" / ".zarray").read_text()))
    assert meta.data_type == "string"


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"v{s.version}")
def test_what_a_spec_writes_it_parses_back_and_zarr_python_reads(tmp_path: Path, spec: object) -> None:
    from acqzarr.metadata.zarr_spec import ZarrSpec

    assert isinstance(spec, ZarrSpec)
    codec = BloscCodec(Blosc(cname="lz4", clevel=1, shuffle="byte"), np.dtype("uint16"))
    shards = (2, 32, 32) if spec.sharded else (1, 16, 16)
    array = spec.writing("/").image_array(
        "img/0",
        chunks=(1, 16, 16),
        shards=shards,
        dtype=np.dtype("uint16"),
        codec=codec,
        dimension_names=("t", "y", "x"),
    )
    docs = array.with_shape((3, 32, 32))
    assert array.with_shape((0, 32, 32))[array.key]["shape"] == [0, 32, 32]  # the value is not changed
    docs.update(spec.group_documents("img", {"note": "x"}))
    for key, doc in docs.items():
        (tmp_path / key).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / key).write_text(json.dumps(doc))
    array_doc = docs[spec.document_key("img/0", "array")]
    meta = spec.parse_array(array_doc)
    assert (meta.shape, meta.chunks, meta.grid) == (
        (3, 32, 32),
        (1, 16, 16),
        shards if spec.sharded else (1, 16, 16),
    )
    assert meta.compressor is not None and meta.compressor["cname"] == "lz4"
    read = zarr.open_array(str(tmp_path / "img" / "0"), mode="r")
    assert read.shape == (3, 32, 32) and read.dtype == np.dtype("uint16")
    assert zarr.open_group(str(tmp_path / "img"), mode="r").attrs["note"] == "x"
    # Read back as a node through the spec, as acqzarr info does.
    name = spec.document_key("img", "group").rsplit("/", 1)[1]
    node = spec.read_node(
        "img",
        name,
        json.loads((tmp_path / "img" / name).read_text()),
        lambda k: json.loads((tmp_path / k).read_text()),
    )
    assert node is not None and node.kind == "group" and node.attrs == {"note": "x"}


def test_the_store_version_is_found_from_its_documents() -> None:
    assert spec_in(["zarr.json", "c"]) is spec_for(3)
    assert spec_in([".zgroup", ".zattrs"]) is spec_for(2)
    assert spec_in(["zarr.json", ".zarray"]) is spec_for(3)
    assert spec_in([".zattrs", "0.0"]) is None
    with pytest.raises(ValueError, match="Zarr version 4"):
        spec_for(4)


def test_no_module_outside_the_per_version_ones_branches_on_the_zarr_version() -> None:
    """The version seam: only ``metadata/zarr_v2.py`` and ``metadata/zarr_v3.py`` know a version's rules."""
    pattern = re.compile(r"\bversion\s*[!=]=\s*[23]\b|[23]\s*[!=]=\s*\w*version\b")
    offenders = [
        f"{path.relative_to(SRC)}:{n}: {line.strip()}"
        for path in SRC.rglob("*.py")
        if path.parent.name != "metadata" or not path.name.startswith("zarr_v")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
