"""One generic contract, run against every Store backend (as zarr-python's StoreTests do)."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

import acqzarr as az
from acqzarr.stores import open_store


class StoreContract:
    @pytest.fixture
    def store(self, tmp_path: Path) -> az.Store:
        raise NotImplementedError

    def test_put_get_round_trip_from_several_parts(self, store: az.Store) -> None:
        arr = np.arange(10, dtype=np.uint16)
        store.put("a/b/c", [b"head", memoryview(arr), bytearray(b"tail")])
        assert store.get("a/b/c") == b"head" + arr.tobytes() + b"tail"

    def test_missing_key_raises_key_error(self, store: az.Store) -> None:
        with pytest.raises(KeyError):
            store.get("nope")
        assert not store.exists("nope")

    def test_replace_delete_and_list(self, store: az.Store) -> None:
        store.put("x/1", [b"one"])
        store.put("x/1", [b"uno"])
        store.put("x/2", [b""])
        store.put("y", [b"why"])
        assert store.get("x/1") == b"uno"
        assert store.get("x/2") == b""
        assert sorted(store.list()) == ["x/1", "x/2", "y"]
        assert sorted(store.list("x/")) == ["x/1", "x/2"]
        store.delete("x/1")
        store.delete("x/1")  # idempotent
        assert sorted(store.list()) == ["x/2", "y"]
        assert not store.is_empty()
        store.clear()
        assert store.is_empty()

    @pytest.mark.parametrize("key", ["../up", "/abs", "a//b", "a/./b", ""])
    def test_keys_cannot_escape(self, store: az.Store, key: str) -> None:
        with pytest.raises(az.StoreError, match="invalid store key"):
            store.put(key, [b"x"])

    def test_concurrent_readers_never_see_a_partial_object(self, store: az.Store) -> None:
        big_a, big_b = b"a" * (1 << 20), b"b" * (1 << 20)
        store.put("k", [big_a])
        stop = threading.Event()
        seen: set[bytes] = set()

        def read() -> None:
            while not stop.is_set():
                blob = store.get("k")
                seen.add(blob[:1] + blob[-1:] + bytes([len(blob) == len(big_a)]))

        t = threading.Thread(target=read)
        t.start()
        for i in range(50):
            store.put("k", [big_a if i % 2 else big_b])
        stop.set()
        t.join()
        assert seen <= {b"aa\x01", b"bb\x01"}


class TestLocalStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> az.Store:
        return az.LocalStore(tmp_path / "root")

    def test_fsync_mode_writes_the_same_bytes(self, tmp_path: Path) -> None:
        store = az.LocalStore(tmp_path / "r", fsync=True)
        store.put("a/b", [b"x", b"y"])
        assert (tmp_path / "r" / "a" / "b").read_bytes() == b"xy"

    def test_failed_put_leaves_no_file(self, tmp_path: Path) -> None:
        store = az.LocalStore(tmp_path / "r")
        (tmp_path / "r").mkdir()
        (tmp_path / "r" / "blocker").write_text("a file where a directory is needed")
        with pytest.raises(az.StoreError, match=r"blocker/k: write failed"):
            store.put("blocker/k", [b"data"])
        assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["blocker"]

    @pytest.mark.parametrize("sizes", [[256 << 10], [(1 << 20) + 3], [5, (300 << 10) + 1, 7], [4096] * 70])
    @pytest.mark.parametrize("direct", [True, False], ids=["direct", "buffered"])
    def test_large_objects_keep_their_exact_length(
        self, tmp_path: Path, sizes: list[int], direct: bool
    ) -> None:
        rng = np.random.default_rng(len(sizes))
        parts = [rng.integers(0, 255, n, dtype=np.uint8) for n in sizes]
        store = az.LocalStore(tmp_path / "r", direct_io=direct)
        store.put("a/big", parts)
        store.put("a/big2", parts[::-1])  # the staging buffer is reused (and grown) across puts
        assert store.get("a/big") == b"".join(p.tobytes() for p in parts)
        assert store.get("a/big2") == b"".join(p.tobytes() for p in parts[::-1])
        assert sorted(store.list()) == ["a/big", "a/big2"]

    def test_direct_io_falls_back_where_the_filesystem_refuses_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import errno
        import os

        import acqzarr.stores.local as local

        real_open = os.open

        def no_direct(path: str, flags: int, *args: int) -> int:
            if flags & local._O_DIRECT:
                raise OSError(errno.EINVAL, "Invalid argument")
            return real_open(path, flags, *args)

        monkeypatch.setattr(local.os, "open", no_direct)
        store = az.LocalStore(tmp_path / "r", direct_io=True)
        blob = bytes(range(256)) * 4096
        store.put("k", [blob])
        assert store.get("k") == blob
        assert store.direct_io is False

    def test_writes_stage_outside_the_hierarchy_and_settle_removes_the_staging_dir(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        import os

        import acqzarr.stores.local as local

        renamed: list[tuple[str, str]] = []
        real_replace = os.replace

        def recording(src: str, dst: str) -> None:
            renamed.append((str(src), str(dst)))
            real_replace(src, dst)

        monkeypatch.setattr(local.os, "replace", recording)
        store = az.LocalStore(tmp_path / "r")
        store.put("g/a/0", [b"small"])
        store.put("g/a/1", [bytes(1 << 20)])  # O_DIRECT where the filesystem allows it
        staged = store.open_staged("g/a/2")
        staged.append(np.zeros(4096, np.uint8), 4096)
        staged.commit(b"tail")
        store.put_group({"g/zarr.json": b"{}", "g/a/zarr.json": b"{}"})
        staging = tmp_path / "r" / ".acqzarr-staging"
        assert [dst for _, dst in renamed[:3]] == [str(tmp_path / "r" / "g" / "a" / k) for k in "012"]
        assert all(Path(src).parent == staging for src, _ in renamed[:3])
        assert not any(p.name.endswith(".tmp") for p in (tmp_path / "r" / "g").rglob("*"))
        store.settle()
        assert not staging.exists()
        assert sorted(store.list()) == ["g/a/0", "g/a/1", "g/a/2", "g/a/zarr.json", "g/zarr.json"]
        assert store.get("g/a/2") == bytes(4096) + b"tail"

    def test_a_write_killed_before_its_rename_leaves_group_listings_clean(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A kill between creating the staging file and renaming it (simulated: the rename never
        returns and nothing cleans up) leaves no stray name in a group's directory, where zarr-python
        looks for members and warns about one it cannot open."""
        import zarr

        import acqzarr.stores.local as local
        from acqzarr.read.validate import validate

        path = tmp_path / "r"
        group = zarr.open_group(str(path / "g"), mode="w", zarr_format=2)
        group.create_array("a", shape=(4,), chunks=(2,), dtype="uint8")

        def killed(src: str, dst: str) -> None:
            raise KeyboardInterrupt  # not an OSError: no cleanup runs, as after SIGKILL

        monkeypatch.setattr(local.os, "replace", killed)
        with pytest.raises(KeyboardInterrupt):
            az.LocalStore(path).put("g/.zattrs", [b'{"x": 1}'])
        monkeypatch.undo()
        leftover = list((path / ".acqzarr-staging").iterdir())
        assert [p.name.startswith("..zattrs.") for p in leftover] == [True]
        members = zarr.open_group(str(path / "g"), mode="r").members()  # warnings are errors here
        assert [name for name, _ in members] == ["a"]
        problems = validate(az.LocalStore(path))
        staging = [(p.severity, p.key.split("/")[0]) for p in problems if "staging file" in p.message]
        assert staging == [("warning", ".acqzarr-staging")]  # validate still says what was cut short


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> az.Store:
        return az.MemoryStore()


def test_open_store_rejects_unknown_schemes() -> None:
    with pytest.raises(az.ConfigError, match="unsupported scheme 'ftp'"):
        open_store("ftp://host/x")
