"""`acqzarr serve` with detector inputs: the server connects a PULL socket to a detector's PUSH socket
(bound here, on loopback, by the test acting as the detector) and writes one OME-Zarr store per series.

The wire is ``detector_helpers``' (a test framing until the Stream V2 decoders are in; switching is
``encode`` and ``DECODERS`` there).  Stores are read back with zarr-python and checked with
``acqzarr validate``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from acqzarr.errors import ConfigError
from acqzarr.ingest import ServeConfig, load_serve_config

HERE = Path(__file__).resolve().parent


# -- config ------------------------------------------------------------------------------------
def _config(tmp_path: Path, **fields: Any) -> ServeConfig:
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"root": str(tmp_path / "data"), **fields}))
    return load_serve_config(path)


def test_config_takes_detectors_by_the_documented_names(tmp_path: Path) -> None:
    cfg = _config(
        tmp_path,
        detectors=[
            {"name": "eiger", "protocol": "dectris-stream2", "connect": "tcp://10.0.0.5:31001"},
            {"name": "old", "protocol": "dectris-stream1", "connect": "tcp://eiger-dcu:9999", "version": 2},
        ],
        status_endpoint="tcp://127.0.0.1:5556",
    )
    eiger, old = cfg.detectors
    assert (eiger.name, eiger.protocol, eiger.connect) == ("eiger", "dectris-stream2", "tcp://10.0.0.5:31001")
    assert eiger.store == "{detector}/{series}.zarr" and eiger.version == 3 and old.version == 2
    assert eiger.compression is not None and eiger.compression.shuffle == "bit"
    assert cfg.endpoints == []  # detectors only: no acqzarr data socket unless asked for
    both = _config(
        tmp_path,
        endpoints=["tcp://127.0.0.1:5555"],
        detectors=[{"name": "e", "protocol": "dectris-stream2", "connect": "ipc:///tmp/e.sock"}],
    )
    assert both.endpoints == ["tcp://127.0.0.1:5555"] and len(both.detectors) == 1
    assert _config(tmp_path).endpoints == ["tcp://127.0.0.1:5555"]  # as before without detectors


@pytest.mark.parametrize(
    ("detector", "words"),
    [
        ({"protocol": "dectris-stream3"}, "detectors.0.protocol"),
        ({"connect": "tcp://10.0.0.5:*"}, "detectors.0.connect"),
        ({"connect": "http://x:1"}, "detectors.0.connect"),
        ({"store": "../{series}.zarr"}, "detectors.0.store"),
        ({"store": "{detector}/{nope}.zarr"}, "detectors.0.store"),
        ({"store": "{detector}.zarr"}, "detectors.0.store"),
        ({"name": "a/b"}, "detectors.0.name"),
        ({"idle_timeout": 0}, "detectors.0.idle_timeout"),
        ({"colour": "red"}, "detectors.0.colour"),
    ],
)
def test_config_errors_name_the_key(tmp_path: Path, detector: dict[str, Any], words: str) -> None:
    base = {"name": "eiger", "protocol": "dectris-stream2", "connect": "tcp://10.0.0.5:31001"}
    with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
        _config(tmp_path, detectors=[{**base, **detector}])


def test_config_refuses_two_detectors_of_one_name_and_nothing_to_serve(tmp_path: Path) -> None:
    d = {"name": "eiger", "protocol": "dectris-stream2", "connect": "tcp://10.0.0.5:31001"}
    with pytest.raises(ConfigError, match=r"detectors\.1\.name"):
        _config(tmp_path, detectors=[d, {**d, "connect": "tcp://10.0.0.6:31001"}])
    with pytest.raises(ConfigError, match="nothing to serve"):
        _config(tmp_path, endpoints=[])
