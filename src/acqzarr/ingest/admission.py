"""Whether, when and as what a series may start: the server's limits, checked on the receive thread.

A series_start is refused (``series_open``, ``busy``) while the series is
already open or the server holds ``max_open_series`` series open or starting;
it *waits* while finalizing series hold the slots it needs (their streams'
memory is not freed yet) or its own store is still being finalized; and the
data socket is left unread while the messages held for waiting series reach
``max_waiting_bytes`` (``Opener.full``).  What a series may ask for is
decided here too: its store's path under the root, a preset or its own
settings (``allow_sender_settings``), ``max_series_memory``, and whether an
existing store refuses it (``overwrite``), or is continued (the series asks to
``resume``: never a store a detector input may be writing).  Nothing here
changes a series' state; ``lifecycle.py`` acts on the answers.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Collection
from pathlib import Path

from ..errors import AcqzarrError, ConfigError, ProtocolError
from ..settings import StreamSettings
from ..settings.locations import is_s3
from ..stores import open_store
from .config import ServeConfig, series_memory, series_settings
from .finalizer import Finalizer
from .opener import Opener
from .protocol import SeriesStart

__all__ = ["Admission"]


class Admission:
    """The limits of ``config`` over the series the server holds: ``open`` (taking frames, passed
    by the caller), waiting or opening (``opener``) and finalizing (``finalizer``)."""

    def __init__(self, config: ServeConfig, opener: Opener, finalizer: Finalizer) -> None:
        self.config = config
        self.remote_root = is_s3(config.root)
        self.root = Path(config.root)
        self._detector_dirs = _detector_dirs(config)
        self._opener = opener
        self._finalizer = finalizer

    @property
    def reading(self) -> bool:
        """Whether to read the data socket: not while held messages reach ``max_waiting_bytes``."""
        return not self._opener.full

    def admit(self, series_id: str, open_series: Collection[str]) -> None:
        """Refuse a series_start for an open series, or one past ``max_open_series``."""
        if series_id in open_series:
            raise ProtocolError("series_open", f"series {series_id!r} is already open")
        taken = len(open_series) + len(self._opener.waiting)
        if taken >= self.config.max_open_series:
            names = sorted([*open_series, *self._opener.waiting])
            raise ProtocolError("busy", f"{taken} series open or starting ({names}), the limit")

    def must_wait(self, series_id: str, open_count: int) -> bool:
        """A series waits while finalizing series hold the slots it needs (their streams' memory is
        not freed yet), or while its own store is still being finalized."""
        finalizing = self._finalizer.pending
        held = open_count + self._opener.opening + len(finalizing)
        return series_id in finalizing or held >= self.config.max_open_series

    def settings(self, header: SeriesStart) -> tuple[StreamSettings, str]:
        """The stream settings a series_start asks for, and its store's path, as the server
        allows them."""
        sid = header.series_id
        cfg = self.config
        path = f"{cfg.root}/{sid}" if self.remote_root else str(self.root / sid)
        # valid_series_id already ensures it (a plain name); belt and braces for directories:
        if not self.remote_root and Path(path).resolve().parent != self.root.resolve():
            raise ProtocolError("bad_path", f"series {sid!r} resolves outside the root")
        if header.resume:
            self._may_resume(sid, path)
        if header.preset is not None:
            if header.preset not in cfg.presets:
                raise ProtocolError(
                    "settings", f"unknown preset {header.preset!r}; known: {sorted(cfg.presets)}"
                )
            data = cfg.presets[header.preset]
        else:
            if not cfg.allow_sender_settings:
                raise ProtocolError(
                    "settings", "this server accepts presets only (allow_sender_settings: false)"
                )
            assert header.settings is not None
            data = header.settings
        try:
            settings = series_settings(
                data, path, cfg.overwrite, f"series {sid!r}", cfg.s3, resume=header.resume
            )
        except ConfigError as exc:
            raise ProtocolError("settings", str(exc).replace("\n ", "")) from None
        need = series_memory(settings)
        if need > cfg.max_series_memory:
            raise ProtocolError(
                "settings",
                f"series {sid!r} would reserve {need} bytes; max_series_memory is {cfg.max_series_memory}",
            )
        return settings, path

    def _may_resume(self, sid: str, path: str) -> None:
        """A sender's series never continues a store a detector input may be writing: two writers
        on one store would corrupt it.  Its stores go under ``root/<first part of its store
        template>``; a template whose first part names the series could be any name there."""
        for name, template, top in self._detector_dirs:
            if top is None or top == sid:
                raise ProtocolError(
                    "resume",
                    f"series {sid!r}: {path} may be where detector {name!r} writes its series (store "
                    f"template {template!r}); a sender's series never resumes it",
                )

    def existing_store(self, header: SeriesStart) -> Callable[[str], bool] | None:
        """What refuses a series whose store exists (run on an open thread); None with
        ``overwrite``, where an existing store is replaced, and for a series that asks to resume,
        whose existing store the stream continues (or refuses, untouched)."""
        return None if self.config.overwrite or header.resume else self._exists

    def _exists(self, path: str) -> bool:
        if not self.remote_root:
            return Path(path).exists()
        try:
            return not open_store(path, s3=self.config.s3).is_empty()
        except AcqzarrError as exc:  # the object store cannot be reached: the series cannot start
            raise ProtocolError("store", f"cannot check {path}: {exc}") from None


def _detector_dirs(config: ServeConfig) -> list[tuple[str, str, str | None]]:
    """Each detector input's name, store template, and the name directly under the root its stores
    go in or under (None when the template's first part names the series: any name there)."""
    dirs: list[tuple[str, str, str | None]] = []
    for d in config.detectors:
        first = d.store.split("/")[0]
        fields = {f for _, f, _, _ in string.Formatter().parse(first) if f is not None}
        top = first.format(detector=d.name) if fields <= {"detector"} else None
        dirs.append((d.name, d.store, top))
    return dirs
