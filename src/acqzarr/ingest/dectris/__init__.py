"""DECTRIS SIMPLON detector streams into ``acqzarr serve``: Stream V2 (CBOR, one message per series
event) and the legacy Stream V1 (multipart JSON + binary), decoded into one model of a series
(``messages.py``) that the server writes like any other series.

``decoder_for(protocol)`` gives the decoder of a detector input's ``protocol`` setting."""

from __future__ import annotations

from ...errors import ConfigError
from .stream1 import Stream1Decoder
from .stream2 import Stream2Decoder

__all__ = ["PROTOCOLS", "DectrisDecoder", "decoder_for"]

PROTOCOLS = ("dectris-stream2", "dectris-stream1")


# Both are WireDecoders; ``expect(start)`` (not in the protocol) narrows the size cap of the
# compressed payloads that follow to one frame of that series.
DectrisDecoder = Stream2Decoder | Stream1Decoder


def decoder_for(protocol: str) -> DectrisDecoder:
    """A new decoder for one detector input (each input its own: ``expect`` narrows its caps to
    that input's series)."""
    if protocol == "dectris-stream2":
        return Stream2Decoder()
    if protocol == "dectris-stream1":
        return Stream1Decoder()
    raise ConfigError(f"detector protocol {protocol!r}: expected one of {', '.join(PROTOCOLS)}")
