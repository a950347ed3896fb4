"""Where ``LocalStore`` stages the files its atomic writes rename into place.

Every staging file (a chunk or document being written, a temporary symlink of
``local_groups``) lives in one hidden directory at the store's root, not beside
its key.  A staging file beside a key sat inside a group's directory for the
length of the write, and a kill left it there for good: zarr-python lists a
group's directory to find its members, and warns about a stray name it cannot
open (as an error under ``-W error``).  In ``.acqzarr-staging`` it sits where
only the root's listing looks, beside ``.acqzarr-meta``, and ``acqzarr
validate`` still reports it as a staging file an interrupted write left.

A rename from here to any key is atomic like one within a directory: both are
on the store's filesystem.  The names keep the key's own name
(``.name.pid.n.tmp``) so a leftover says what was being written.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["STAGING", "StagingDir"]

STAGING = ".acqzarr-staging"
_NAME_MAX = 120  # of the key's name kept in a staging name: the whole name stays under 255 bytes
_counter = itertools.count()  # process-wide: two stores on one root never pick one name
T = TypeVar("T")


class StagingDir:
    """The staging directory of one store root."""

    def __init__(self, root: Path) -> None:
        self.path = root / STAGING

    def name_for(self, key_path: str) -> str:
        """A fresh staging path for a write to ``key_path`` (no file is made)."""
        name = os.path.basename(key_path)[:_NAME_MAX]
        return os.path.join(self.path, f".{name}.{os.getpid()}.{next(_counter)}.tmp")

    def create(self, make: Callable[[], T]) -> T:
        """``make()`` creates something in the directory: made (again) first if it is missing.

        Trying first keeps the common case at one system call; the directory may
        also vanish between writes when ``tidy`` of another store on this root
        removes it while empty.
        """
        try:
            return make()
        except FileNotFoundError:
            os.makedirs(self.path, exist_ok=True)
            return make()

    def tidy(self) -> None:
        """Drop temporary links (useless once their rename did not happen) and the directory when empty.

        Files are left: another writer on this root may be staging one now, and a
        killed writer's file is evidence ``validate`` reports.
        """
        try:
            entries = list(os.scandir(self.path))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.is_symlink():
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(entry.path)
        with contextlib.suppress(OSError):  # not empty, or already gone
            os.rmdir(self.path)

    def discard(self) -> None:
        """Remove every staging file and link, then the directory: only for the one writer of the
        root, taking over from a killed one (``tidy`` keeps files: they may be another's)."""
        try:
            entries = list(os.scandir(self.path))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                os.unlink(entry.path)
        with contextlib.suppress(OSError):
            os.rmdir(self.path)
