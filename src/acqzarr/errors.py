"""The exceptions acqzarr raises.

One small hierarchy so callers can catch everything from this package with
``AcqzarrError`` or pick out the kind of failure they can act on.  Each
message says what was expected and what arrived.
"""

from __future__ import annotations

__all__ = [
    "AcqzarrError",
    "BackpressureTimeout",
    "ConfigError",
    "FrameError",
    "ProtocolError",
    "ResumeRefused",
    "StateError",
    "StoreError",
    "WriterError",
]


class AcqzarrError(Exception):
    """Base class of every error raised by acqzarr."""


class ConfigError(AcqzarrError, ValueError):
    """Settings or a config file are invalid; nothing has been written."""


class ResumeRefused(ConfigError):
    """A store asked to be resumed cannot be: acqzarr did not write it, or wrote it with other
    settings (every mismatch named); the store is unchanged."""


class FrameError(AcqzarrError, ValueError):
    """A frame was rejected (shape, dtype, key or capacity); earlier frames are intact."""


class ProtocolError(AcqzarrError, ValueError):
    """A wire message (acqzarr ingest protocol) was malformed or out of place.

    ``reason`` is the short, stable name the server counts it under
    (``json``, ``header``, ``payload_size``, ...; see docs/protocol.md).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class StateError(AcqzarrError, RuntimeError):
    """A device or stream call was made in a state that does not allow it."""


class StoreError(AcqzarrError, OSError):
    """The store could not be created, read or written."""


class WriterError(AcqzarrError, RuntimeError):
    """A writer thread failed; the store is valid up to the last good flush."""


class BackpressureTimeout(AcqzarrError, TimeoutError):
    """``append`` waited longer than the configured timeout for buffer space.

    The frame that timed out was not accepted; every earlier frame was.
    """


# Exit codes of the acqzarr commands (``acqzarr record``, ``serve``, ``send``, ...), in one place.
EXIT_OK = 0
EXIT_RUNTIME = 1  # a failure while running (a writer error, an incomplete series, a store problem)
EXIT_CONFIG = 2  # invalid settings or arguments: nothing was written
EXIT_INTERRUPTED = 130  # stopped by SIGINT/SIGTERM after finalizing the store
