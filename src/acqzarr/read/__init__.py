"""The read side: ``acqzarr info`` (``info.py``), ``acqzarr validate`` (``validate.py``) and frames
read back without zarr-python (``arrays.py``)."""
