"""A store on the local filesystem, one file per key.

Atomicity comes from the classic write-to-temp-then-rename: the temporary
file lives in ``.acqzarr-staging`` at the root (same filesystem, so
``os.replace`` is an atomic rename; outside every group's directory, so a kill
leaves nothing a Zarr reader lists as a member: see ``staging``).

Large objects are written with O_DIRECT where the filesystem allows it:
writing through a cold page cache pays a fresh page fault for every page of
cache, which on virtual machines is several times slower than O_DIRECT from
a reused, page-aligned staging buffer (docs/performance.md, "Measurements
behind the design").  The data is copied into the staging buffer (warm
memory), written padded to the block size, and the file is truncated back to
its real length before the rename.  Filesystems that refuse O_DIRECT (tmpfs) fall back to plain writes.

``put_group`` replaces a few small documents as one through symlinks into
generation directories under ``.acqzarr-meta``; ``local_groups`` explains the
scheme and why a reader (or a reader after a kill) never sees a mix.
"""

from __future__ import annotations

import contextlib
import errno
import mmap
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import StoreError
from .aligned import anonymous_memory
from .base import Buffer, Staged, Store
from .local_groups import META, LinkedGroups, SymlinksUnavailable, fsync_dir
from .staging import StagingDir

__all__ = ["LocalStore"]

_IOV_MAX = 1024
_ALIGN = 4096  # covers 512-byte and 4 KiB logical blocks
DIRECT_MIN_BYTES = 256 << 10  # below this the page cache is cheaper than a staging copy
_O_DIRECT = getattr(os, "O_DIRECT", 0)  # Linux; elsewhere every write is a plain buffered write
# Binary on Windows (no newline translation), closed in child processes where the flag exists.
_WRITE_FLAGS = (
    os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
)


class LocalStore(Store):
    """Files under ``root``.  ``fsync`` makes each put (and put_group) durable against power loss."""

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = False, direct_io: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync
        self.direct_io = direct_io and bool(_O_DIRECT)
        self._staging = threading.local()
        self._made_dirs: set[str] = set()
        self._dirs_lock = threading.Lock()
        self._staging_dir = StagingDir(self.root)
        self._groups = LinkedGroups(self.root, self._staging_dir, fsync=fsync)
        self._groups_lock = threading.Lock()
        self._symlinks = True

    def describe(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def _ensure_dir(self, directory: str) -> None:
        if directory in self._made_dirs:
            return
        os.makedirs(directory, exist_ok=True)
        with self._dirs_lock:
            self._made_dirs.add(directory)

    def put(self, key: str, parts: Sequence[Buffer]) -> None:
        total = sum(memoryview(p).nbytes for p in parts)
        if self.direct_io and total >= DIRECT_MIN_BYTES:
            self._atomic_write(key, lambda fd: self._write_staged(fd, parts, total), direct=True)
        else:
            self._atomic_write(key, lambda fd: _write_all(fd, parts), direct=False)

    def _atomic_write(self, key: str, write: Callable[[int], None], *, direct: bool) -> None:
        """Write a hidden temporary file with ``write(fd)``, then rename it over ``key``."""
        path = os.path.join(self.root, self.check_key(key))
        directory = os.path.dirname(path)
        tmp = self._staging_dir.name_for(path)
        fd = -1
        try:
            self._ensure_dir(directory)
            fd, _ = self._open_staging(tmp, direct=direct)
            write(fd)
            if self.fsync:
                os.fsync(fd)
            os.close(fd)
            fd = -1
            os.replace(tmp, path)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            _unlink_quietly(tmp)
            raise StoreError(exc.errno or errno.EIO, f"{path}: write failed: {exc.strerror or exc}") from exc
        if self.fsync:
            fsync_dir(directory)

    def put_padded(self, key: str, buffer: np.ndarray[Any, Any], nbytes: int) -> None:
        padded = -(-nbytes // _ALIGN) * _ALIGN
        aligned = buffer.ctypes.data % _ALIGN == 0 and buffer.nbytes >= padded
        if not (self.direct_io and aligned and nbytes >= DIRECT_MIN_BYTES):
            self.put(key, [buffer.data[:nbytes]])
            return
        view = buffer.data.cast("B")
        self._atomic_write(key, lambda fd: _pwrite_all(fd, view[:padded], nbytes), direct=True)

    def _open_staging(self, tmp: str, *, direct: bool) -> tuple[int, bool]:
        """Create the staging file ``tmp``: (fd, whether it is O_DIRECT)."""
        fd = self._staging_dir.create(lambda: self._open_direct(tmp, _WRITE_FLAGS)) if direct else -1
        if fd >= 0:
            return fd, True
        # not asked for, or the filesystem refused O_DIRECT: same bytes, plain fd
        return self._staging_dir.create(lambda: os.open(tmp, _WRITE_FLAGS, 0o644)), False

    def _open_direct(self, path: str, flags: int) -> int:
        """Open with O_DIRECT, or return -1 (and stop trying) where the filesystem refuses it."""
        try:
            return os.open(path, flags | _O_DIRECT, 0o644)
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
            self.direct_io = False
            return -1

    def _write_staged(self, fd: int, parts: Sequence[Buffer], total: int) -> None:
        """Gather ``parts`` into the aligned staging buffer, then write it whole."""
        padded = -(-total // _ALIGN) * _ALIGN
        stage = self._staging_buffer(padded)
        offset = 0
        for p in parts:
            view = memoryview(p).cast("B")
            stage[offset : offset + view.nbytes] = view
            offset += view.nbytes
        _pwrite_all(fd, stage[:padded], total)

    def _staging_buffer(self, nbytes: int) -> memoryview:
        """A page-aligned, pre-faulted buffer per writing thread, grown as needed and reused."""
        current: mmap.mmap | None = getattr(self._staging, "buf", None)
        if current is None or len(current) < nbytes:
            size = -(-nbytes // (1 << 20)) * (1 << 20)
            current = anonymous_memory(size)
            self._staging.buf = current
        return memoryview(current)

    def open_staged(self, key: str) -> Staged:
        return _StagedFile(self, key)

    def put_group(self, items: Mapping[str, bytes]) -> None:
        """Replace ``items`` as one atomic change (see ``local_groups``), or in order without symlinks.

        Each key becomes a link into the current generation and stays one
        until ``settle``.  A plain ``put`` of a grouped key renames a regular
        file over its link (never writing through it), and ``delete`` removes
        the link: either way the key leaves the group, which is what a caller
        mixing the two asks for.  Where the filesystem refuses symlinks, this
        falls back to the base class's put-in-order, which is not atomic
        across keys.
        """
        for key in items:
            self.check_key(key)
        if not items:
            return
        with self._groups_lock:
            if self._symlinks:
                try:
                    self._groups.replace(items)
                    return
                except SymlinksUnavailable:
                    self._symlinks = False
                except OSError as exc:
                    raise StoreError(
                        exc.errno or errno.EIO,
                        f"{self.root}: grouped write of {', '.join(items)} failed: {exc.strerror or exc}",
                    ) from exc
        super().put_group(items)

    def settle(self) -> None:
        """Replace each grouped link by a regular file of the same content, then drop ``.acqzarr-meta``
        (and ``.acqzarr-staging`` when empty).

        Each replacement is a rename of identical bytes, and no ``put_group``
        runs meanwhile (the lock), so a reader sees no change; a kill halfway
        leaves plain files and links of the same generation.
        """
        with self._groups_lock:
            try:
                for key in self._groups.linked_keys():
                    path = self.root / key
                    try:
                        blob = path.read_bytes()
                    except FileNotFoundError:
                        os.unlink(path)  # linked but never published: the key stays absent
                        continue
                    self.put(key, [blob])
                self._groups.remove()
                self._staging_dir.tidy()
            except StoreError:
                raise
            except OSError as exc:
                reason = f"{self.root}: settling grouped keys failed: {exc.strerror or exc}"
                raise StoreError(exc.errno or errno.EIO, reason) from exc

    def get(self, key: str) -> bytes:
        path = self.root / self.check_key(key)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise KeyError(key) from None
        except IsADirectoryError:
            raise KeyError(key) from None
        except OSError as exc:
            raise StoreError(exc.errno or errno.EIO, f"{path}: read failed: {exc.strerror}") from exc

    def size(self, key: str) -> int:
        try:
            st = os.stat(self.root / self.check_key(key))
        except (FileNotFoundError, NotADirectoryError):
            raise KeyError(key) from None
        if not stat.S_ISREG(st.st_mode):
            raise KeyError(key)
        return st.st_size

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.root / self.check_key(key))

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every file, grouped links included; not ``.acqzarr-meta`` nor a link that dangles.

        A dangling link is a grouped key not yet published (``local_groups``):
        absent, as ``get`` says too.  Only links cost a stat, not every chunk.
        """
        if not self.root.is_dir():
            return
        pending = [("", str(self.root))]
        while pending:
            rel, directory = pending.pop()
            try:
                entries = list(os.scandir(directory))
            except OSError:
                continue  # removed meanwhile (os.walk skips these the same way)
            for entry in entries:
                key = rel + entry.name
                if entry.is_dir():
                    if not entry.is_symlink() and key != META:
                        pending.append((key + "/", entry.path))
                elif (not entry.is_symlink() or entry.is_file()) and key.startswith(prefix):
                    yield key

    def children(self, directory: str) -> set[str]:
        """One directory's entries (no walk below it): what resuming a store looks at."""
        path = self.root / self.check_key(directory) if directory else self.root
        try:
            return {entry.name for entry in os.scandir(path) if entry.name != META or directory}
        except (FileNotFoundError, NotADirectoryError):
            return set()

    def delete_tree(self, key: str) -> None:
        path = self.root / self.check_key(key)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
            with self._dirs_lock:  # directories made before are gone: make them again when needed
                self._made_dirs.clear()
        else:
            self.delete(key)

    def discard_staged(self) -> None:
        """Remove the files in ``.acqzarr-staging``: what a killed writer was staging (a shard built
        band by band, a write it never renamed).  Only for a writer that owns the store (resuming it)."""
        self._staging_dir.discard()

    def is_empty(self) -> bool:
        return not self.root.exists() or (self.root.is_dir() and not any(self.root.iterdir()))

    def clear(self) -> None:
        if self.root.is_dir():
            shutil.rmtree(self.root)
        elif self.root.exists():
            self.root.unlink()
        self._made_dirs.clear()


class _StagedFile(Staged):
    """A temporary file in the staging directory, appended to at block-aligned offsets (O_DIRECT where
    the filesystem allows, straight from the caller's aligned buffer) and renamed into place by
    ``commit``: the same atomic rename as ``put``, reached in pieces."""

    def __init__(self, store: LocalStore, key: str) -> None:
        self._store = store
        self._key = key
        self._path = os.path.join(store.root, store.check_key(key))
        self._tmp = store._staging_dir.name_for(self._path)
        self._end = 0
        try:
            store._ensure_dir(os.path.dirname(self._path))
            self._fd, self._direct = store._open_staging(self._tmp, direct=store.direct_io)
        except OSError as exc:
            raise self._error(exc) from exc

    def append(self, buffer: np.ndarray[Any, Any], nbytes: int) -> int:
        at = self._end
        padded = -(-nbytes // _ALIGN) * _ALIGN
        try:
            if self._direct and buffer.ctypes.data % _ALIGN == 0 and buffer.nbytes >= padded:
                buffer[nbytes:padded] = 0  # the gap before the next piece: unused, but not stale bytes
                _pwrite_all(self._fd, buffer.data.cast("B")[:padded], padded, at)
                self._end += padded
            else:
                _pwrite_all(self._fd, buffer.data.cast("B")[:nbytes], nbytes, at)
                self._end += nbytes
        except OSError as exc:
            self.abort()
            raise self._error(exc) from exc
        return at

    @property
    def size(self) -> int:
        return self._end

    def snapshot(self, pieces: Sequence[tuple[np.ndarray[Any, Any], int]], tail: bytes) -> None:
        """A new staging file of the bytes so far (copied in the kernel), the pieces and ``tail``,
        renamed over the key; this file goes on being appended to."""
        end = self._end

        def write(fd: int) -> None:
            _copy_prefix(self._tmp, fd, end)
            os.lseek(fd, end, os.SEEK_SET)
            _write_all(fd, [*(b.data.cast("B")[:n] for b, n in pieces), tail])

        self._store._atomic_write(self._key, write, direct=False)

    def commit(self, tail: bytes) -> None:
        try:
            _drop_direct(self._fd)
            _pwrite_all(self._fd, memoryview(tail), len(tail), self._end)
            if self._store.fsync:
                os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.replace(self._tmp, self._path)
        except OSError as exc:
            self.abort()
            raise self._error(exc) from exc
        if self._store.fsync:
            fsync_dir(os.path.dirname(self._path))

    def abort(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        _unlink_quietly(self._tmp)

    def _error(self, exc: OSError) -> StoreError:
        return StoreError(exc.errno or errno.EIO, f"{self._path}: write failed: {exc.strerror or exc}")


def _write_all(fd: int, parts: Sequence[Buffer]) -> None:
    """writev every part, resuming after short writes (the kernel may cut any of them)."""
    views = [memoryview(p).cast("B") for p in parts if len(memoryview(p).cast("B"))]
    while views:
        batch = views[:_IOV_MAX]
        written = os.writev(fd, batch)
        while written:
            head = views[0]
            if written >= len(head):
                written -= len(head)
                views.pop(0)
            else:
                views[0] = head[written:]
                written = 0


def _copy_prefix(path: str, fd: int, nbytes: int) -> None:
    """Copy the first ``nbytes`` of the file at ``path`` to the start of ``fd``: in the kernel where
    it can (``copy_file_range``), else through a buffer."""
    source = os.open(path, os.O_RDONLY)
    try:
        done = 0
        while done < nbytes:
            try:
                n = os.copy_file_range(source, fd, nbytes - done, done, done)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                n = os.pwrite(fd, os.pread(source, min(nbytes - done, 8 << 20), done), done)
            if n == 0:
                raise OSError(errno.EIO, f"staging file {path} is shorter than {nbytes} bytes")
            done += n
    finally:
        os.close(source)


def _pwrite_all(fd: int, view: memoryview, nbytes: int, offset: int = 0) -> None:
    """Write all of ``view`` (block-padded) at ``offset``, then cut the file to end ``nbytes`` after it.

    When the kernel clips a write (a file-size limit, a nearly full disk), O_DIRECT
    refuses the clipped, unaligned remainder with a misleading EINVAL, or leaves
    an unaligned offset after a short write.  Either way, continue without
    O_DIRECT: the kernel then reports the real cause (EFBIG, ENOSPC) or completes.
    """
    done = 0
    while done < len(view):
        if (offset + done) % _ALIGN:
            _drop_direct(fd)
        try:
            done += _pwrite(fd, view[done:], offset + done)
        except OSError as exc:
            if exc.errno != errno.EINVAL or not _drop_direct(fd):
                raise
    if len(view) != nbytes:
        os.ftruncate(fd, offset + nbytes)


def _pwrite(fd: int, view: memoryview, offset: int) -> int:
    """``os.pwrite``, or a seek and a write where it does not exist (Windows): each file is written
    by one thread at a time, so the two steps cannot interleave with another write to it."""
    if hasattr(os, "pwrite"):
        return os.pwrite(fd, view, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.write(fd, view)


def _drop_direct(fd: int) -> bool:
    """Turn O_DIRECT off on ``fd``; False if it was not on (nothing to retry)."""
    if not _O_DIRECT:
        return False  # no O_DIRECT on this platform: nothing can have turned it on
    import fcntl  # POSIX only, like O_DIRECT: imported here so ``import acqzarr`` works on Windows

    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    if not flags & _O_DIRECT:
        return False
    fcntl.fcntl(fd, fcntl.F_SETFL, flags & ~_O_DIRECT)
    return True


def _unlink_quietly(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
