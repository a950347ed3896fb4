"""Settings for a stream, as pydantic models.

Every field carries a description: these models are the config-file reference
(``StreamSettings.from_file``) as well as the Python API, so a typo in a YAML
key fails with the key path instead of being ignored (``extra="forbid"``).

One module per part of what a user declares, each importing only the ones below it:
``names`` (sample types, store keys) and ``loading`` (config files, error lines) ->
``model`` (the base model) -> ``dimensions``, ``positions``, ``s3`` -> ``arrays`` ->
``stream``. ``locations`` (store paths and ``s3://`` URLs), ``overrides`` (``--set`` and
environment overrides) and ``doc`` (docs/settings.md) sit beside them. The package imports
nothing from acqzarr but ``acqzarr.errors``, so every stage above can use it.
"""

from __future__ import annotations

from .arrays import MAX_CHUNK_BYTES, ArraySettings, Blosc, Channel, Multiscale
from .dimensions import SPACE_UNITS, TIME_UNITS, Dimension
from .loading import format_validation_error, load_mapping
from .names import COLLECTION_GROUP, DTYPES, POSITION_AXIS, dtype_name, is_key_path, is_key_segment
from .positions import Acquisition, Plate, Position
from .s3 import S3Settings
from .stream import SHARDED_VERSIONS, StreamSettings

__all__ = [
    "COLLECTION_GROUP",
    "DTYPES",
    "MAX_CHUNK_BYTES",
    "POSITION_AXIS",
    "SHARDED_VERSIONS",
    "SPACE_UNITS",
    "TIME_UNITS",
    "Acquisition",
    "ArraySettings",
    "Blosc",
    "Channel",
    "Dimension",
    "Multiscale",
    "Plate",
    "Position",
    "S3Settings",
    "StreamSettings",
    "dtype_name",
    "format_validation_error",
    "is_key_path",
    "is_key_segment",
    "load_mapping",
]
