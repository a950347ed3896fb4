"""DECTRIS SIMPLON detector streams into ``acqzarr serve``: Stream V2 (CBOR, one message per series
event) and the legacy Stream V1 (multipart JSON + binary), decoded into one model of a series
(``messages.py``) that the server writes like any other series."""
