"""``Sender`` against a server loop on a thread, over real loopback sockets: what the README shows
works as shown, and a series the server refuses is refused to its sender too, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

import acqzarr as az
from acqzarr.errors import ConfigError
from acqzarr.ingest import Sender
from acqzarr.ingest.protocol import SERVER_FIELDS
from ingest_helpers import SMALL_SERIES, Served, assert_store, free_port, small_frame


def readme_settings() -> az.StreamSettings:
    """The README's first StreamSettings (its store, overwrite and s3 are the caller's), small."""
    return az.StreamSettings(
        store="run.zarr",
        version=3,
        overwrite=True,
        arrays=[
            az.ArraySettings(
                key="cam0",
                dtype="uint16",
                dimensions=[
                    az.Dimension(name="t", kind="time", size=0, chunk=2, shard=1),
                    az.Dimension(name="y", kind="space", size=4, chunk=4, shard=1),
                    az.Dimension(name="x", kind="space", size=6, chunk=6, shard=1),
                ],
                compression=az.Blosc(cname="lz4", clevel=1, shuffle="byte"),
            )
        ],
    )


def test_the_readme_sender_example_writes_its_series(tmp_path: Path) -> None:
    """The README's Python example, verbatim in shape: a full StreamSettings (store, overwrite and
    the default s3 section included) is sent as the series' settings and the server takes it."""
    root = tmp_path / "root"
    served = Served(root)
    try:
        settings = readme_settings()
        with (
            Sender(served.endpoint, status_endpoint=served.status_endpoint, timeout=30) as sender,
            sender.series("run-002", settings),
        ):
            for i in range(5):
                buf = sender.acquire((4, 6), "uint16")
                buf[...] = small_frame(i)
                sender.send(buf, key="cam0", frame_id=i, timestamp_ns=1000 * i)
        assert sender.summary is not None and sender.summary["completed"] is True
        assert_store(root, "run-002", range(5))
        assert not (tmp_path / "run.zarr").exists()
    finally:
        served.shutdown()


@pytest.mark.parametrize("field", SERVER_FIELDS)
def test_settings_carrying_a_server_field_are_refused_before_sending(field: str) -> None:
    """A mapping with a field the server would refuse the series for is a ConfigError at
    start_series, before any message leaves (the sender needs no server for it)."""
    settings = {**SMALL_SERIES, field: readme_settings().model_dump(mode="json")[field]}
    with Sender(f"tcp://127.0.0.1:{free_port()}", timeout=1) as sender:
        with pytest.raises(ConfigError, match=f"'{field}' is set by the server"):
            sender.start_series("run", settings)
        with pytest.raises(ConfigError, match="names a directory on the server"):
            sender.start_series("../run", SMALL_SERIES)
        assert sender.sent == 0
