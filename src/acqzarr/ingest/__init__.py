"""ZeroMQ frame ingestion: ``acqzarr serve`` writes series that ``Sender`` (or ``acqzarr send``) streams.

The wire protocol is in ``protocol`` (and docs/protocol.md); the server
(``server``, one ``series`` per store, closed on ``finalizer`` threads), its
config (``config``) and live counters (``status``) are the receiving side.
"""

from .config import CurveServer, ServeConfig, load_serve_config
from .protocol import PROTOCOL_VERSION, REASONS, Frame, SeriesEnd, SeriesStart
from .sender import CurveClient, Sender
from .server import IngestServer, serve
from .status import SeriesRejected, StatusUnavailable, query

__all__ = [
    "PROTOCOL_VERSION",
    "REASONS",
    "CurveClient",
    "CurveServer",
    "Frame",
    "IngestServer",
    "Sender",
    "SeriesEnd",
    "SeriesRejected",
    "SeriesStart",
    "ServeConfig",
    "StatusUnavailable",
    "load_serve_config",
    "query",
    "serve",
]
