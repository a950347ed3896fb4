"""Several small files replaced as one: the generation scheme behind ``LocalStore.put_group``.

A rename replaces one file atomically, never two.  So the documents of a group
(an image's metadata, one per pyramid level) are reached through one more
level of indirection that a single rename can switch::

    root/cam/0/zarr.json -> ../../.acqzarr-meta/current/cam%2F0%2Fzarr.json
    root/cam/1/zarr.json -> ../../.acqzarr-meta/current/cam%2F1%2Fzarr.json
    root/.acqzarr-meta/current -> g8
    root/.acqzarr-meta/g8/cam%2F0%2Fzarr.json, cam%2F1%2Fzarr.json    what readers see
    root/.acqzarr-meta/g7/...    the previous generation, for readers in mid-lookup
    root/.acqzarr-meta/keys      every key that may be a link, for ``settle`` after a crash

Each grouped key is a relative symlink (the store can be moved or copied with
its links) to its flat name (``urllib.parse.quote(key, safe="")``: injective,
no "/") under ``current``, itself a symlink to the directory of the current
generation.  ``put_group`` writes generation N+1 -- the new documents plus every
other grouped document of generation N, so nothing else changes -- then points
``current`` at it by creating a temporary symlink and renaming it over
``current``.  A document whose bytes are those of generation N (every other
image's documents, an unchanged group) is a hard link to N's file, not a new
file: creating a file costs this process ~0.02-0.6 ms of kernel time on ext4
(the inode), a link ~0.02 ms, and a publish of one image among many would
otherwise recreate all of them.  Where the filesystem refuses hard links the
bytes are copied.

Why no reader ever sees a mix of old and new across a group:

1. Opening a grouped key resolves its link and then ``current`` at that moment,
   so one open reads from exactly one generation directory.
2. A generation directory is complete (and, with ``fsync``, durable) before
   ``current`` points at it, and no file a link reaches is ever written again
   (a file a reader has open is never truncated, only unlinked).
3. So what every grouped key shows is a function of the single value of
   ``current``, and that value changes by one rename(2): at any instant, the
   whole group is generation N or the whole group is N+1.
4. Making a plain key grouped changes nothing visible: its present content is
   first copied into the current generation under a name no link reaches yet,
   then a link replaces the file by rename -- the same bytes before and after.
   A key that does not exist yet gets a link that dangles (open gives ENOENT
   exactly as before; ``LocalStore.list`` skips it) and appears with the swap
   that brings its file.  The link must exist before the swap, not be created
   after it, or the key would appear one step after the others.
5. A kill at any instant therefore leaves one value of ``current`` and a
   consistent group.  What an interrupted call leaves behind is invisible to
   Zarr readers: an unreferenced generation directory and temporary names in
   ``.acqzarr-meta`` (removed by the next ``put_group``), a temporary link
   in ``.acqzarr-staging`` (with ``put``'s staging files; removed by
   ``settle``).  A later process picks the state up from the disk alone.

Only the current and the previous generation are kept: a reader that resolved
``current`` just before a swap still finds its files.  A lookup stalled across
two complete ``put_group`` calls can still get ENOENT; that is the price of
bounded disk use.  A reader that opens the keys one after another may straddle
a swap (as with any store; it sees a consistent group when it reads again);
what this removes is a ragged state that a kill would make permanent.

Until ``settle``, ``.acqzarr-meta`` is a directory inside the Zarr hierarchy:
zarr-python's ``Group.members()`` on the root warns that it is "not recognized
as a component of a Zarr hierarchy" (and skips it), as it would for any stray
directory; opening arrays and groups by path is unaffected.

One writer: ``put``, ``delete`` and ``put_group`` of the same key must not race.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import shutil
import sys
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, unquote

from .staging import StagingDir

__all__ = ["META", "LinkedGroups", "SymlinksUnavailable"]

META = ".acqzarr-meta"
_CURRENT = "current"
_KEYS = "keys"
_GENERATION = re.compile(r"g(\d+)")


class SymlinksUnavailable(Exception):
    """The filesystem refused the first symlink; nothing visible was changed."""


class LinkedGroups:
    """The on-disk generations of the grouped keys under ``root``; all state lives on disk."""

    def __init__(self, root: Path, staging: StagingDir, *, fsync: bool) -> None:
        self.root = root
        self.meta = root / META
        self.staging = staging  # where temporary links are made before their rename
        self.fsync = fsync
        self._counter = itertools.count()
        # The bytes of the documents this object wrote into generation ``_known_gen``, to find the
        # items a replace does not change (carried as hard links instead of written again).
        self._known: dict[str, bytes] = {}
        self._known_gen = -1
        self._hardlinks = True

    def target(self, key: str) -> str:
        """The relative link target of a grouped ``key`` (from the key's own directory)."""
        return "../" * key.count("/") + f"{META}/{_CURRENT}/{_flat(key)}"

    def is_linked(self, key: str) -> bool:
        try:
            return os.readlink(self.root / key) == self.target(key)
        except OSError:
            return False

    def replace(self, items: Mapping[str, bytes]) -> None:
        """Publish ``items`` as generation N+1 in one rename (keys already checked by the store)."""
        current = self._current()
        if current is None:
            current = self._start()
        known = self._read_keys()
        grouped = {key for key in known if self.is_linked(key)}
        if grouped | items.keys() != known:
            self._write_keys(grouped | items.keys())
        for key in items.keys() - grouped:
            self._adopt(key, self.meta / f"g{current}")

        old, new = self.meta / f"g{current}", self.meta / f"g{current + 1}"
        _remove(new)  # an interrupted call's leftover: no link reaches it
        os.mkdir(new)
        cached = self._known if self._known_gen == current else {}
        for key in grouped - items.keys():
            self._carry(old, new, key)
        for key, blob in items.items():
            # Only a key that stayed grouped: one adopted above has the plain file's bytes in ``old``.
            if key in grouped and cached.get(key) == blob:
                self._carry(old, new, key)
            else:
                self._write_new(new / _flat(key), blob)
        self._known = {key: cached[key] for key in grouped - items.keys() if key in cached}
        self._known.update(items)
        self._known_gen = current + 1
        if self.fsync:
            fsync_dir(new)
            fsync_dir(self.meta)
        self._link(self.meta / _CURRENT, new.name)

        keep = {_CURRENT, _KEYS, f"g{current}", new.name}
        for name in os.listdir(self.meta):
            if name not in keep:
                _remove(self.meta / name)

    def linked_keys(self) -> list[str]:
        """Every key that is one of our links now (published or not)."""
        return sorted(key for key in self._read_keys() if self.is_linked(key))

    def remove(self) -> None:
        """Drop the generations once no key links to them any more (``current`` first, see ``_current``).

        Temporary links a killed writer left in the staging directory would dangle
        then: ``StagingDir.tidy`` drops them.
        """
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.meta / _CURRENT)
        _remove(self.meta)

    def _current(self) -> int | None:
        """The current generation, or None when there is none (also a half-removed meta directory)."""
        try:
            match = _GENERATION.fullmatch(os.readlink(self.meta / _CURRENT))
        except OSError:
            return None
        if match is None or not (self.meta / _CURRENT).is_dir():
            return None
        return int(match.group(1))

    def _start(self) -> int:
        """An empty generation 0.  No link reaches a meta directory without ``current``: clear it."""
        _remove(self.meta)
        os.makedirs(self.meta / "g0")
        try:
            self._link(self.meta / _CURRENT, "g0")
        except (OSError, NotImplementedError) as exc:
            _remove(self.meta)
            raise SymlinksUnavailable(str(exc)) from exc
        return 0

    def _adopt(self, key: str, generation: Path) -> None:
        """Turn ``key`` into a link without a visible change (point 4 of the module docstring)."""
        path = self.root / key
        try:
            blob: bytes | None = path.read_bytes()
        except FileNotFoundError:
            blob = None
        if blob is not None:
            name = generation / _flat(key)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name)  # left from an earlier time in the group; no link reaches it
            self._write_new(name, blob)
            if self.fsync:
                fsync_dir(generation)
        os.makedirs(path.parent, exist_ok=True)
        self._link(path, self.target(key))

    def _link(self, path: Path, target: str) -> None:
        """Atomically make ``path`` a symlink to ``target``: a temporary link renamed over it."""
        tmp = self.staging.name_for(str(path))  # the target is relative: it resolves where renamed to
        self.staging.create(lambda: os.symlink(target, tmp))
        try:
            os.replace(tmp, path)
        except OSError:
            os.unlink(tmp)
            raise
        if self.fsync:
            fsync_dir(path.parent)

    def _carry(self, old: Path, new: Path, key: str) -> None:
        """Generation ``new`` holds ``key`` as ``old`` does: a hard link to its file (never written
        again, like every file a link reaches), or a copy where the filesystem has no hard links."""
        source, target = old / _flat(key), new / _flat(key)
        if self._hardlinks:
            try:
                os.link(source, target)
                return
            except FileNotFoundError:
                return  # linked but never published: it stays absent
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EMLINK, errno.EXDEV, errno.ENOTSUP, errno.ENOSYS):
                    raise
                self._hardlinks = False
        try:
            blob = source.read_bytes()
        except FileNotFoundError:
            return
        self._write_new(target, blob)

    def _write_new(self, path: Path, blob: bytes) -> None:
        with open(path, "xb") as f:
            f.write(blob)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())

    def _read_keys(self) -> set[str]:
        try:
            text = (self.meta / _KEYS).read_text("ascii")
        except FileNotFoundError:
            return set()
        return {unquote(line) for line in text.splitlines()}

    def _write_keys(self, keys: set[str]) -> None:
        """Record ``keys`` before any of them becomes a link, so ``settle`` finds every link."""
        tmp = self.meta / f".{_KEYS}.{os.getpid()}.{next(self._counter)}.tmp"
        self._write_new(tmp, "".join(f"{_flat(k)}\n" for k in sorted(keys)).encode("ascii"))
        os.replace(tmp, self.meta / _KEYS)
        if self.fsync:
            fsync_dir(self.meta)


def _flat(key: str) -> str:
    return quote(key, safe="")


def _remove(path: Path) -> None:
    """Remove a file, link or directory tree (never following links) if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Make a directory's entries (created, renamed, removed names) durable.

    Windows cannot open a directory; NTFS journals its entries, so there is nothing to do."""
    if sys.platform == "win32":
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
