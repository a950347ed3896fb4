"""`acqzarr serve` with an s3:// root: each series becomes a store under the prefix on a real server."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from acqzarr.ingest import Sender
from acqzarr.recording.synthetic import camera_frames
from builders import array_document
from ingest_helpers import running_server

from .readback import all_objects, assert_reads_back_s3
from .seaweed import Seaweed

# A SeaweedFS server for the session and real uploads: left out of the quick loop.
pytestmark = pytest.mark.slow


def test_serve_writes_each_series_under_an_s3_prefix(aws_env: Seaweed, s3_url: str, tmp_path: Path) -> None:
    frames = camera_frames(10, (40, 48), "uint16", seed=3)
    settings = {
        "version": 3,
        "arrays": [array_document(3, (0, 40, 48), (4, 16, 16), multiscale={"levels": 2})],
    }
    s3 = {"endpoint": aws_env.endpoint, "allow_http": True}
    with running_server(tmp_path, root=s3_url, s3=s3, status_interval=0.5) as server:
        with (
            Sender(server.tcp, timeout=30, status_endpoint=server.status_endpoint) as sender,
            sender.series("run-1", settings),
        ):
            for i, frame in enumerate(frames):
                sender.send(frame, key="cam0", frame_id=i)
        summary = server.wait_series("run-1")
        with Sender(server.tcp, timeout=30) as again, again.series("run-1", settings):
            pass  # the same id again: refused, the store is kept
        status = server.wait_for(lambda s: s["rejected"].get("series_exists") == 1)
    assert status["series_started"] == 1 and status["series_finished"] == 1
    assert summary["completed"] is True and summary["store"] == f"{s3_url}/run-1"
    assert not server.root.exists()  # nothing on the local disk
    assert_reads_back_s3(aws_env, f"{s3_url}/run-1", "cam0/0", 3, frames)
    objects = all_objects(aws_env, s3_url)
    assert all(k.startswith("run-1/") for k in objects)
    record = json.loads(objects["run-1/cam0/zarr.json"])["attributes"]["acqzarr_session"]
    assert record["source"]["kind"] == "serve" and record["frames_on_disk"] == 10
    ids = np.frombuffer(objects["run-1/cam0/acqzarr_frames/frame_id/c/0"], "<i8")[:10]
    np.testing.assert_array_equal(ids, np.arange(10))
    assert aws_env.env["AWS_SECRET_ACCESS_KEY"] not in (tmp_path / "serve.log").read_text()
