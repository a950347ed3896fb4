"""DECTRIS SIMPLON detector streams into ``acqzarr serve``: Stream V2 (CBOR, one message per series
event) and the legacy Stream V1 (multipart JSON + binary), decoded into one model of a series
(``messages.py``) that the server writes like any other series.

``decoder_for(protocol)`` gives the decoder of a detector input's ``protocol`` setting."""

from __future__ import annotations

import importlib

from ...errors import ConfigError
from .stream1 import Stream1Decoder
from .stream2 import Stream2Decoder

__all__ = ["PROTOCOLS", "DectrisDecoder", "decoder_for"]

PROTOCOLS = ("dectris-stream2", "dectris-stream1")

# Both are WireDecoders; ``expect(start)`` (not in the protocol) narrows the size cap of that
# series' images to one frame.
DectrisDecoder = Stream2Decoder | Stream1Decoder


def decoder_for(protocol: str) -> DectrisDecoder:
    """A new decoder for one detector input (each input its own: ``expect`` narrows its caps to
    that input's series).  An unknown protocol, or a missing ``dectris`` extra, is a ConfigError
    here, when the server starts, not at the detector's first message."""
    if protocol not in PROTOCOLS:
        raise ConfigError(f"detector protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
    _require("dectris.compression", "DECTRIS's decompressor")
    if protocol == "dectris-stream2":
        _require("cbor2", "CBOR")
        return Stream2Decoder()
    return Stream1Decoder()


def _require(module: str, what: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"detector inputs need {what} ({module}): pip install 'acqzarr[dectris]'") from exc
