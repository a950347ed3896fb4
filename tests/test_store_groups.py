"""put_group replaces a few small documents as one; settle turns them back into plain objects.

One contract for every backend; the atomic ones (MemoryStore, LocalStore) also promise that a
reader never sees a mix of old and new across a group, and LocalStore that a SIGKILL at any
instant leaves a consistent group that zarr-python and tensorstore read through the links.
"""

from __future__ import annotations

import errno
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr

import acqzarr as az
import acqzarr.stores.local_groups as local_groups
from acqzarr.stores.base import Store
from acqzarr.stores.local_groups import META
from readback import assert_reads_back

LEVELS = ("img/zarr.json", "img/0/zarr.json", "img/1/zarr.json", "img/2/zarr.json")


def doc(key: str, gen: int) -> bytes:
    return json.dumps({"key": key, "gen": gen}).encode()


def group(gen: int, keys: Sequence[str] = LEVELS) -> dict[str, bytes]:
    return {key: doc(key, gen) for key in keys}


def gen_of(blob: bytes | None) -> int | None:
    return None if blob is None else int(json.loads(blob)["gen"])


class DefaultGroups(az.MemoryStore):
    """The base class's put_group and settle (put in order; nothing to settle) over a MemoryStore."""

    put_group = Store.put_group
    settle = Store.settle


def poll_for_mixes(
    read: Callable[[str], bytes | None], keys: Sequence[str], stop: threading.Event
) -> tuple[int, set[int], list[list[int | None]]]:
    """Read the group over and over; returns (consistent passes, generations seen, mixes).

    Reading keys one after another can straddle a swap, which says nothing about atomicity, so
    a pass counts only when the first key reads the same before and after the others: no swap
    happened meanwhile, and then every key must be of that generation.  A writer that replaces
    the keys one by one, first key first, is caught (the default's test shows it is).
    """
    consistent, seen, mixes = 0, set(), []
    while not stop.is_set():
        time.sleep(0)  # hand the GIL back: a spinning reader would starve the writer
        first = gen_of(read(keys[0]))
        rest = [gen_of(read(k)) for k in keys[1:]]
        if gen_of(read(keys[0])) != first:
            continue
        if any(g != first for g in rest):
            mixes.append([first, *rest])
        else:
            consistent += 1
            if first is not None:
                seen.add(first)
    return consistent, seen, mixes


def run_reader_against_writer(
    store: az.Store, read: Callable[[str], bytes | None], groups: int
) -> tuple[int, set[int], list[list[int | None]]]:
    store.put_group(group(0))
    stop = threading.Event()
    result: list[tuple[int, set[int], list[list[int | None]]]] = []
    reader = threading.Thread(target=lambda: result.append(poll_for_mixes(read, LEVELS, stop)))
    reader.start()
    try:
        for gen in range(1, groups + 1):
            store.put_group(group(gen))
            time.sleep(0.0005)  # let the reader in between swaps too
    finally:
        stop.set()
        reader.join()
    return result[0]


class GroupContract:
    @pytest.fixture
    def store(self, tmp_path: Path) -> az.Store:
        raise NotImplementedError

    def test_put_group_stores_every_item(self, store: az.Store) -> None:
        store.put_group(group(1))
        assert {k: store.get(k) for k in LEVELS} == group(1)
        assert sorted(store.list()) == sorted(LEVELS)
        assert sorted(store.list("img/1")) == ["img/1/zarr.json"]
        assert all(store.exists(k) and store.size(k) == len(doc(k, 1)) for k in LEVELS)

    def test_a_group_replaces_its_keys_and_leaves_the_others(self, store: az.Store) -> None:
        store.put("img/0/c/0", [b"chunk"])
        store.put_group(group(1))
        store.put_group(group(2, LEVELS[1:3]))
        assert [gen_of(store.get(k)) for k in LEVELS] == [1, 2, 2, 1]
        assert store.get("img/0/c/0") == b"chunk"
        assert sorted(store.list()) == sorted([*LEVELS, "img/0/c/0"])

    def test_keys_that_did_not_exist_appear(self, store: az.Store) -> None:
        store.put_group(group(1, LEVELS[:2]))
        store.put_group(group(2))
        assert [gen_of(store.get(k)) for k in LEVELS] == [2, 2, 2, 2]

    def test_plain_put_and_delete_of_a_grouped_key(self, store: az.Store) -> None:
        store.put_group(group(1))
        store.put(LEVELS[0], [b"plain"])
        store.delete(LEVELS[1])
        store.put_group(group(2, LEVELS[2:]))
        assert store.get(LEVELS[0]) == b"plain"
        assert not store.exists(LEVELS[1])
        assert sorted(store.list()) == sorted([LEVELS[0], *LEVELS[2:]])
        store.put_group(group(3))
        assert [gen_of(store.get(k)) for k in LEVELS] == [3, 3, 3, 3]

    def test_settle_changes_nothing_a_reader_sees(self, store: az.Store) -> None:
        store.put("img/0/c/0", [b"chunk"])
        store.put_group(group(1))
        store.put_group(group(2, LEVELS[:2]))
        before = {k: store.get(k) for k in store.list()}
        store.settle()
        assert {k: store.get(k) for k in store.list()} == before
        store.settle()  # nothing left to settle
        store.put_group(group(3))  # grouping again after a settle
        assert [gen_of(store.get(k)) for k in LEVELS] == [3, 3, 3, 3]

    def test_an_empty_group_changes_nothing(self, store: az.Store) -> None:
        store.put_group({})
        assert store.is_empty()

    @pytest.mark.parametrize("key", ["../up", "/abs", "a//b", ""])
    def test_keys_cannot_escape(self, store: az.Store, key: str) -> None:
        with pytest.raises(az.StoreError, match="invalid store key"):
            store.put_group({"fine": b"x", key: b"x"})
        assert not store.exists("fine")

    def test_clear_removes_grouped_keys(self, store: az.Store) -> None:
        store.put_group(group(1))
        assert not store.is_empty()
        store.clear()
        assert store.is_empty()
        assert list(store.list()) == []


def read_via_get(store: az.Store) -> Callable[[str], bytes | None]:
    def read(key: str) -> bytes | None:
        try:
            return store.get(key)
        except KeyError:
            return None

    return read


class AtomicGroupContract(GroupContract):
    def read(self, store: az.Store) -> Callable[[str], bytes | None]:
        return read_via_get(store)

    def test_a_polling_reader_never_sees_a_mix(self, store: az.Store) -> None:
        consistent, seen, mixes = run_reader_against_writer(store, self.read(store), groups=150)
        print(f"{consistent} consistent passes over {len(seen)} generations")
        assert mixes == []
        assert consistent >= 20
        assert len(seen) >= 3  # the reader really ran while the writer swapped


class TestDefaultGroups(GroupContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> az.Store:
        return DefaultGroups()

    def test_the_default_is_not_atomic_and_the_reader_check_catches_it(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store = DefaultGroups()
        real_put = az.MemoryStore.put

        def slow_put(self: az.MemoryStore, key: str, parts: Sequence[Any]) -> None:
            real_put(self, key, parts)
            time.sleep(0.002)

        monkeypatch.setattr(DefaultGroups, "put", slow_put)
        _, _, mixes = run_reader_against_writer(store, read_via_get(store), groups=30)
        assert mixes


class TestMemoryGroups(AtomicGroupContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> az.Store:
        return az.MemoryStore()


def read_through_links(root: Path) -> Callable[[str], bytes | None]:
    """An independent reader: plain open() of the key's path, following whatever links are there."""

    def read(key: str) -> bytes | None:
        try:
            with open(root / key, "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    return read


def links_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_symlink())


class TestLocalGroups(AtomicGroupContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> az.Store:
        return az.LocalStore(tmp_path / "root")

    def read(self, store: az.Store) -> Callable[[str], bytes | None]:
        assert isinstance(store, az.LocalStore)
        return read_through_links(store.root)

    def test_grouped_keys_are_relative_links_through_current(self, store: az.LocalStore) -> None:
        store.put(LEVELS[0], [b"old"])
        store.put_group(group(1))
        meta = store.root / META
        assert links_under(store.root) == sorted([*LEVELS, f"{META}/current"])
        assert os.readlink(store.root / "img/0/zarr.json") == f"../../{META}/current/img%2F0%2Fzarr.json"
        assert os.readlink(meta / "current") == "g1"
        assert (meta / "g1" / "img%2Fzarr.json").read_bytes() == doc(LEVELS[0], 1)
        assert (meta / "g0" / "img%2Fzarr.json").read_bytes() == b"old"  # adopted without a change

    def test_fsync_mode_gives_the_same_results(self, tmp_path: Path) -> None:
        store = az.LocalStore(tmp_path / "root", fsync=True)
        store.put(LEVELS[0], [b"old"])
        store.put_group(group(1, LEVELS[:2]))
        store.put_group(group(2, LEVELS[1:]))
        assert [gen_of(store.get(k)) for k in LEVELS] == [1, 2, 2, 2]
        store.settle()
        assert links_under(store.root) == []
        assert [gen_of(store.get(k)) for k in LEVELS] == [1, 2, 2, 2]

    def test_generations_stay_bounded(self, store: az.LocalStore) -> None:
        for gen in range(100):
            store.put_group(group(gen, LEVELS[gen % 2 :: 2]))  # half the keys each time
        meta = store.root / META
        assert sorted(os.listdir(meta)) == ["current", "g100", "g99", "keys"]
        assert sorted(os.listdir(meta / "g100")) == sorted(k.replace("/", "%2F") for k in LEVELS)
        assert [gen_of(store.get(k)) for k in LEVELS] == [98, 99, 98, 99]
        staging = store.root / ".acqzarr-staging"  # temporary links are made there: none is left
        assert not [p for p in store.root.rglob(".*") if p.name != META and p != staging]
        assert list(staging.iterdir()) == []

    def test_settle_leaves_no_link_and_no_meta(self, store: az.LocalStore) -> None:
        store.put_group(group(1))
        store.put_group(group(2))
        stray = store.root / ".acqzarr-staging/.zarr.json.99.0.tmp"  # a killed writer's temporary link
        os.symlink(store._groups.target("img/0/zarr.json"), stray)
        store.settle()
        assert links_under(store.root) == []
        assert not (store.root / META).exists()
        assert not (store.root / ".acqzarr-staging").exists()
        assert all((store.root / k).is_file() for k in LEVELS)
        assert [gen_of(store.get(k)) for k in LEVELS] == [2, 2, 2, 2]

    def test_a_plain_put_replaces_the_link_not_the_generation_file(self, store: az.LocalStore) -> None:
        store.put_group(group(1))
        store.put(LEVELS[0], [b"plain"])
        assert not (store.root / LEVELS[0]).is_symlink()
        assert (store.root / META / "g1" / "img%2Fzarr.json").read_bytes() == doc(LEVELS[0], 1)
        store.put_group(group(2, LEVELS[1:]))
        assert not (store.root / META / "g2" / "img%2Fzarr.json").exists()  # it left the group

    def test_readers_see_an_interrupted_group_as_before(
        self, store: az.LocalStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Adopted keys (a link each), no new generation: same contents, a new key still absent."""
        store.put(LEVELS[0], [b"old"])
        real_mkdir = os.mkdir

        def no_new_generation(path: Any, *args: Any) -> None:
            if Path(path).name == "g1":
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            real_mkdir(path, *args)

        monkeypatch.setattr(local_groups.os, "mkdir", no_new_generation)
        with pytest.raises(az.StoreError, match=r"of img/zarr\.json, img/0/zarr\.json failed: No space"):
            store.put_group(group(1, LEVELS[:2]))
        monkeypatch.undo()
        assert links_under(store.root) == sorted([*LEVELS[:2], f"{META}/current"])
        assert store.get(LEVELS[0]) == b"old"
        assert store.size(LEVELS[0]) == 3
        assert not store.exists(LEVELS[1])
        with pytest.raises(KeyError):
            store.get(LEVELS[1])
        with pytest.raises(KeyError):
            store.size(LEVELS[1])
        assert list(store.list()) == [LEVELS[0]]

        fresh = az.LocalStore(store.root)  # another process finds the state on disk
        fresh.settle()
        assert links_under(store.root) == []
        assert not (store.root / META).exists()
        assert list(store.list()) == [LEVELS[0]]
        assert store.get(LEVELS[0]) == b"old"

    def test_a_new_process_carries_on_and_cleans_up(self, store: az.LocalStore) -> None:
        store.put_group(group(1))
        meta = store.root / META
        (meta / "g2").mkdir()  # as a kill before the swap leaves it
        (meta / "g2" / "junk").write_bytes(b"x")
        os.symlink("g2", meta / ".current.1.0.tmp")
        fresh = az.LocalStore(store.root)
        fresh.put_group(group(2, LEVELS[:1]))
        assert [gen_of(store.get(k)) for k in LEVELS] == [2, 1, 1, 1]
        assert sorted(os.listdir(meta)) == ["current", "g1", "g2", "keys"]
        assert sorted(os.listdir(meta / "g2")) == sorted(k.replace("/", "%2F") for k in LEVELS)

    def test_an_unchanged_document_is_a_hard_link_not_a_new_file(self, store: az.LocalStore) -> None:
        """A publish of one image among many creates files for its own changed documents only."""
        store.put_group(group(1))
        changed = {LEVELS[1]: doc(LEVELS[1], 2), LEVELS[2]: doc(LEVELS[2], 1)}  # the second as it was
        store.put_group(changed)
        meta = store.root / META

        def inode(gen: int, key: str) -> int:
            return (meta / f"g{gen}" / key.replace("/", "%2F")).stat().st_ino

        assert inode(2, LEVELS[0]) == inode(1, LEVELS[0])  # not in the call: carried
        assert inode(2, LEVELS[2]) == inode(1, LEVELS[2])  # in the call, same bytes: carried
        assert inode(2, LEVELS[1]) != inode(1, LEVELS[1])  # new bytes: a new file
        assert [gen_of(store.get(k)) for k in LEVELS] == [1, 2, 1, 1]
        store.put_group(group(3, LEVELS[:1]))  # g1 removed: its linked files live on in g2 and g3
        assert [gen_of(store.get(k)) for k in LEVELS] == [3, 2, 1, 1]
        store.settle()
        assert [gen_of(store.get(k)) for k in LEVELS] == [3, 2, 1, 1]

    def test_a_key_that_left_the_group_comes_back_with_the_new_bytes(self, store: az.LocalStore) -> None:
        """A plain put takes a key out of the group; grouping it again with the bytes it had before
        shows those bytes, not the plain file's (which adopting it put in the current generation)."""
        store.put_group(group(1))
        store.put(LEVELS[0], [b"plain"])
        store.put_group({LEVELS[0]: doc(LEVELS[0], 1)})
        assert store.get(LEVELS[0]) == doc(LEVELS[0], 1)
        store.settle()
        assert store.get(LEVELS[0]) == doc(LEVELS[0], 1)

    def test_without_hard_links_documents_are_copied(
        self, store: az.LocalStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        calls = []

        def no_links(*args: Any) -> None:
            calls.append(args)
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))

        monkeypatch.setattr(local_groups.os, "link", no_links)
        store.put_group(group(1))
        store.put_group(group(2, LEVELS[:2]))
        store.put_group(group(3, LEVELS[:1]))
        assert len(calls) == 1  # refused once: not asked again
        assert [gen_of(store.get(k)) for k in LEVELS] == [3, 2, 1, 1]
        meta = store.root / META
        assert sorted(os.listdir(meta / "g3")) == sorted(k.replace("/", "%2F") for k in LEVELS)

    def test_without_symlinks_it_falls_back_to_puts_in_order(
        self, store: az.LocalStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        def no_symlinks(*args: Any) -> None:
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))

        monkeypatch.setattr(local_groups.os, "symlink", no_symlinks)
        store.put_group(group(1))
        store.put_group(group(2))
        assert [gen_of(store.get(k)) for k in LEVELS] == [2, 2, 2, 2]
        assert not (store.root / META).exists()
        assert links_under(store.root) == []
        store.settle()
        assert sorted(store.list()) == sorted(LEVELS)


# -- independent readers ---------------------------------------------------------------------


def _pyramid(root: Path, version: int) -> list[np.ndarray[Any, Any]]:
    """A two-level pyramid written by zarr-python itself; returns the level data."""
    g = zarr.open_group(root, mode="w", zarr_format=version)  # type: ignore[arg-type]
    data = []
    for level, n in enumerate((8, 4)):
        arr = g.create_array(str(level), shape=(n, n), chunks=(4, 4), dtype="uint16", fill_value=0)
        values = np.arange(n * n, dtype=np.uint16).reshape(n, n) + level
        arr[:] = values
        data.append(values)
    return data


@pytest.mark.parametrize("version", [2, 3], ids=["v2", "v3"])
def test_zarr_and_tensorstore_read_the_new_shapes_through_the_links(tmp_path: Path, version: int) -> None:
    root = tmp_path / "root"
    data = _pyramid(root, version)
    store = az.LocalStore(root)
    name = "zarr.json" if version == 3 else ".zarray"
    docs = {}
    for level in (0, 1):
        meta = json.loads(store.get(f"{level}/{name}"))
        meta["shape"] = [2 * n for n in meta["shape"]]
        docs[f"{level}/{name}"] = json.dumps(meta).encode()
    store.put_group(docs)
    assert (root / "0" / name).is_symlink()

    expected = []
    for values in data:
        grown = np.zeros([2 * n for n in values.shape], dtype=values.dtype)
        grown[: values.shape[0], : values.shape[1]] = values
        expected.append(grown)
    for settled in (False, True):
        if settled:
            store.settle()
            assert links_under(root) == []
        for level in (0, 1):
            assert_reads_back(root / str(level), version, expected[level])
        assert zarr.open_group(root, mode="r")["1"].shape == expected[1].shape


# -- SIGKILL at random moments ---------------------------------------------------------------

CHILD = """
import json, sys
import acqzarr as az
root, gen, fsync, keys = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1", sys.argv[4:]
store = az.LocalStore(root, fsync=fsync)
print("ready", flush=True)
while True:
    store.put_group({k: json.dumps({"key": k, "gen": gen}).encode() for k in keys})
    gen += 1
    if gen % 7 == 0:
        store.settle()  # and the next put_group adopts the plain files again
"""


KILLS = int(os.environ.get("ACQZARR_GROUP_KILLS", 30))


@pytest.mark.slow
def test_a_sigkill_at_any_moment_leaves_a_consistent_group(tmp_path: Path) -> None:
    """Writers killed at random moments (30; ACQZARR_GROUP_KILLS): every key shows one generation."""
    root = tmp_path / "root"
    store = az.LocalStore(root)
    for key in LEVELS[:3]:
        store.put(key, [doc(key, 0)])  # plain files to adopt; the last level does not exist yet
    read = read_through_links(root)
    rng = random.Random(1234)
    states: list[list[int | None]] = []
    figures = {"kills": 0, "mid_settle_or_adopt": 0, "unpublished_generation": 0, "settled": 0}
    for kill in range(KILLS):
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), str((kill + 1) * 10**6), str(kill % 2), *LEVELS],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0, 0.1))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        figures["kills"] += 1

        blobs = [read(k) for k in LEVELS]
        assert all(b is None or json.loads(b)["key"] == k for k, b in zip(LEVELS, blobs, strict=True))
        gens = [gen_of(b) for b in blobs]
        untouched = gens == [0, 0, 0, None] and all(g == [0, 0, 0, None] for g in states)
        states.append(gens)
        assert len(set(gens)) == 1 or untouched, f"kill {kill}: a mixed group {gens}"
        listed = sorted(k for k in store.list() if not k.endswith(".tmp"))  # staging names a kill leaves
        assert listed == sorted(k for k, g in zip(LEVELS, gens, strict=True) if g is not None)
        linked = [(root / k).is_symlink() for k in LEVELS]
        figures["mid_settle_or_adopt"] += len(set(linked)) > 1
        figures["settled"] += not any(linked)
        meta = root / META
        if (meta / "current").is_dir():
            current = int(os.readlink(meta / "current")[1:])
            figures["unpublished_generation"] += (meta / f"g{current + 1}").exists()

    published = [g[0] for g in states if g[0] is not None]
    assert published == sorted(published)  # generations only ever move forward
    figures["generations_seen"] = len(set(published))
    assert len(set(published)) >= KILLS * 2 // 3  # most writers published before their kill

    store.put_group(group(7))
    store.settle()
    assert links_under(root) == []
    assert [gen_of(read(k)) for k in LEVELS] == [7, 7, 7, 7]
    print(f"\nput_group crash test: {figures}")
