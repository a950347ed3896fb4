"""``acqzarr record``: one recording's life cycle (``lifecycle.py``, shared with ``serve``), the
command that runs cameras from a config (``command.py``), the camera protocol drivers implement
(``camera.py``), Ctrl-C (``stop.py``) and the live progress line (``progress.py``)."""
