"""ZeroMQ frame ingestion: ``acqzarr serve`` writes series that ``Sender`` (or ``acqzarr send``) streams.

The wire protocol is in ``protocol`` (and docs/protocol.md).  The receiving
side is the server's loop (``server``) with its sockets (``sockets``), limits
(``admission``), series life cycle (``lifecycle``: one ``series`` per store,
opened on ``opener`` threads, closed on ``finalizer`` threads), config
(``config``) and status (``status``).  The sending side is ``sender``, which
hears of a refused series through the status socket (``watch``).
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
