"""`acqzarr serve` with detector inputs: the server connects a PULL socket to a detector's PUSH socket
(bound here, on loopback, by the test acting as the detector) and writes one OME-Zarr store per series.

The wire is ``detector_helpers``' (a test framing until the Stream V2 decoders are in; switching is
``encode`` and ``DECODERS`` there).  Stores are read back with zarr-python and checked with
``acqzarr validate``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
import zarr

from acqzarr.engine.memory import MIN_DEFAULT_CAP, plan_memory
from acqzarr.errors import ConfigError
from acqzarr.ingest import REASONS, IngestServer, ServeConfig, StatusUnavailable, load_serve_config, query
from acqzarr.ingest.config import DetectorInput
from acqzarr.ingest.dectris.series import DetectorSeries, decode_budget, series_stream_settings
from acqzarr.ingest.status import format_line
from acqzarr.read.validate import validate
from acqzarr.settings import S3Settings
from acqzarr.stores import open_store
from detector_helpers import (
    CHANNELS,
    DECODERS,
    REFUSE,
    Detector,
    encode,
    encode_stream2,
    end,
    have_stream2_decoder,
    image,
    pixels,
    start,
)
from ingest_helpers import (
    SMALL_FRAME_HEADER,
    SMALL_SERIES,
    WAIT,
    assert_store,
    free_port,
    header,
    raw_socket,
    small_frame,
    wait_until,
)

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
    assert old.store == "{detector}/{date}_{series_id}.zarr"  # V1 ids start again at every initialize
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


# -- a server on a thread, fed by a detector --------------------------------------------------
class DetectorServed:
    """``IngestServer.run`` on a thread with one detector input, and the detector bound here."""

    def __init__(
        self,
        root: Path,
        *,
        detector: dict[str, Any] | None = None,
        wire: Any = encode,
        decoders: Any = DECODERS,
        **config: Any,
    ) -> None:
        self.root = root
        self.endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.status_endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.detector = Detector(self.endpoint, wire)
        spec = {"name": "eiger", "protocol": "dectris-stream2", "connect": self.endpoint, **(detector or {})}
        cfg = ServeConfig(
            root=str(root),
            detectors=[spec],
            status_endpoint=self.status_endpoint,
            status_interval=0.2,
            **config,
        )
        self.server = IngestServer(cfg, decoders)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.server.run, args=(self.stop,))
        self.thread.start()

    def status(self) -> dict[str, Any]:
        return query(self.status_endpoint, timeout=WAIT)

    def input(self) -> dict[str, Any]:
        snap: dict[str, Any] = self.status()["detectors"]["eiger"]
        return snap

    def wait_input(self, condition: Any, what: str) -> dict[str, Any]:
        wait_until(lambda: condition(self.input()), what)
        return self.input()

    def wait_series(self, sid: str) -> dict[str, Any]:
        def found() -> bool:
            return any(r["series_id"] == sid for r in self.status()["recent_series"])

        wait_until(found, f"series {sid} finalized")
        return next(r for r in self.status()["recent_series"] if r["series_id"] == sid)

    def shutdown(self) -> None:
        self.stop.set()
        self.thread.join(WAIT)
        assert not self.thread.is_alive()
        self.detector.term()
        self.server.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[DetectorServed]:
    s = DetectorServed(tmp_path / "data", detector={"idle_timeout": 30})
    try:
        yield s
    finally:
        s.shutdown()


def _record(store: Path, version: int = 3) -> dict[str, Any]:
    """The session record of the image at the root of ``store``."""
    if version == 2:
        attrs = json.loads((store / ".zattrs").read_text())
    else:
        attrs = json.loads((store / "zarr.json").read_text())["attributes"]
    record: dict[str, Any] = attrs["acqzarr_session"]
    return record


def assert_series(store: Path, s: Any, ids: range | list[int]) -> zarr.Group:
    """The store of series ``s`` holds exactly the pixels of images ``ids`` (every channel), with
    their times in the typed columns and their user data in the JSON column."""
    group = zarr.open_group(str(store), mode="r")
    data = np.asarray(group["0"][...])  # type: ignore[index]
    several = len(s.channels) > 1
    for i in ids:
        for c in range(len(s.channels)):
            got = data[i, c] if several else data[i]
            assert got.dtype == s.dtype.newbyteorder("=")
            np.testing.assert_array_equal(got, pixels(s, i, c))
    columns = group["acqzarr_frames"]
    start_time = np.asarray(columns["start_time"][...])  # type: ignore[index]
    real_time = np.asarray(columns["real_time"][...])  # type: ignore[index]
    texts = np.asarray(columns["json"][...])  # type: ignore[index]
    for i in ids:
        for c in range(len(s.channels)):
            at = (i, c) if several else (i,)
            assert start_time[at] == i / 100 and real_time[at] == 0.0099
            assert json.loads(str(texts[at])) == {
                "series_date": "2026-12-07T06:00:00.000Z",
                "user_data": {"shot": i},
            }
    return group


def test_a_series_lands_pixel_exact_with_its_metadata_arrays_and_record(served: DetectorServed) -> None:
    s = start("series-1", n=5)
    served.detector.series(s, order=[3, 0, 4, 1, 2])  # images in any order: image_id is the t index
    summary = served.wait_series("series-1")
    store = served.root / "eiger" / "series-1.zarr"
    assert summary["completed"] is True and summary["store"] == str(store) and summary["frames_total"] == 5
    group = assert_series(store, s, range(5))
    assert group["0"].shape == (5, 2, 6, 8)  # type: ignore[union-attr]

    # OME-NGFF: channels labelled, scales in micrometer and seconds.
    attrs = group.attrs.asdict()
    ome = attrs["ome"]["multiscales"][0]
    assert [a["name"] for a in ome["axes"]] == ["t", "c", "y", "x"]
    units = {a["name"]: a.get("unit") for a in ome["axes"]}
    assert units == {"t": "second", "c": None, "y": "micrometer", "x": "micrometer"}
    scale = ome["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == pytest.approx([0.01, 1.0, 75.0, 75.0])
    assert [ch["label"] for ch in attrs["ome"]["omero"]["channels"]] == list(CHANNELS)

    # The start's scalar fields under "dectris", field by field.
    block = attrs["dectris"]
    for name, value in s.fields.items():
        assert block[name] == value, name
    assert block["threshold_energy_ev"] == {"threshold_1": 4000.0, "threshold_2": 5000.0}
    assert block["channels"] == list(CHANNELS) and block["number_of_images"] == 5
    assert block["pixel_size_m"] == [75e-6, 75e-6] and block["frame_time_s"] == 0.01
    assert block["user_data"] == {"sample": "lysozyme", "run": 3} and block["image_dtype"] == "uint32"
    assert block["series_unique_id"] == "series-1" and block["series_id"] == 7
    assert block["protocol"] == "dectris-stream2" and block["detector"] == "eiger"

    # Its arrays as Zarr arrays, exact, at the documented paths.
    for name, want in s.arrays.items():
        assert block["arrays"][name] == f"dectris/{name}"
        got = group[f"dectris/{name}"]
        assert isinstance(got, zarr.Array)
        np.testing.assert_array_equal(np.asarray(got[...]), want)
        assert got.dtype == want.dtype

    # The session record: complete, with what arrived and the end's fields.
    record = _record(store)
    assert record["completed"] is True and record["stop"] is not None
    assert record["frames_on_disk"] == 10  # 5 images x 2 channels
    source = record["source"]
    assert (
        source["kind"] == "serve"
        and source["protocol"] == "dectris-stream2"
        and source["detector"] == "eiger"
    )
    assert source["end"] == "series_end" and source["end_fields"] == {"images_sent": 5}
    assert (source["images_expected"], source["images_received"], source["images_written"]) == (5, 5, 5)
    assert source["images_missing"] == 0 and source["rejected"] == {}
    assert validate(open_store(str(store))) == []

    snap = served.input()
    assert snap["connected"] is True and snap["images_written"] == 5 and snap["images_rejected"] == 0
    # The decoder heard which series to expect (its size caps), and when it ended.
    assert served.server.detectors.inputs[0].decoder.expected == ["series-1", None]  # type: ignore[attr-defined]
    assert snap["series_finished"] == 1 and snap["series"] is None
    assert "eiger: connected" in format_line(served.status())


def test_one_channel_unknown_length_big_endian_with_a_hole(tmp_path: Path) -> None:
    template = "{series_id}/{detector}"
    served = DetectorServed(tmp_path / "data", detector={"version": 2, "store": template})
    try:
        s = start("u", n=None, channels=("threshold_1",), dtype=">u2", size=(5, 7), series_id=42)
        served.detector.send(s)
        for i in (0, 1, 3):  # image 2 never arrives
            served.detector.send(image(s, i))
        served.detector.send(end(s))
        summary = served.wait_series("u")
    finally:
        served.shutdown()
    store = tmp_path / "data" / "42" / "eiger"
    assert summary["completed"] is False  # the end came, but not every image
    group = assert_series(store, s, [0, 1, 3])
    assert group["0"].shape == (4, 5, 7) and group["0"].dtype == np.uint16  # type: ignore[union-attr]
    np.testing.assert_array_equal(np.asarray(group["0"][2]), 0)  # type: ignore[index]
    record = _record(store, 2)
    assert record["completed"] is False and record["frames_skipped"] == 1
    assert record["source"]["images_expected"] is None and record["source"]["images_written"] == 3
    assert validate(open_store(str(store))) == []


@pytest.mark.parametrize("version", [2, 3])
def test_stream_write_array_stores_a_whole_array_zarr_reads(tmp_path: Path, version: int) -> None:
    import acqzarr as az

    settings = az.StreamSettings.from_mapping(
        {
            "store": str(tmp_path / "s.zarr"),
            "version": version,
            "arrays": [
                {
                    "key": "cam",
                    "dtype": "uint16",
                    "dimensions": [
                        {"name": "t", "kind": "time", "size": 0, "chunk": 1},
                        {"name": "y", "kind": "space", "size": 4, "chunk": 4},
                        {"name": "x", "kind": "space", "size": 5, "chunk": 5},
                    ],
                }
            ],
        }
    )
    mask = np.arange(20, dtype=">u4").reshape(4, 5)  # big-endian in: stored little-endian, same values
    table = np.linspace(0, 1, 7, dtype=np.float64)
    with az.open_stream(settings) as stream:
        stream.write_array("dectris/pixel_mask/threshold_1", mask, key="cam", dimension_names=("y", "x"))
        stream.write_array("calibration", table, key="cam")
        for bad in ("", "../x", "0/x", "acqzarr_frames/x", "a//b"):
            with pytest.raises(ConfigError):
                stream.write_array(bad, table, key="cam")
        with pytest.raises(ConfigError, match="numeric"):
            stream.write_array("text", np.array(["a"]), key="cam")
        stream.append(np.zeros((4, 5), np.uint16), key="cam")
    group = zarr.open_group(str(tmp_path / "s.zarr"), mode="r")
    got = group["cam/dectris/pixel_mask/threshold_1"]
    np.testing.assert_array_equal(np.asarray(got[...]), mask)  # type: ignore[index]
    np.testing.assert_array_equal(np.asarray(group["cam/calibration"][...]), table)  # type: ignore[index]
    assert validate(open_store(str(tmp_path / "s.zarr"))) == []


def test_bad_inputs_interleaved_are_counted_and_the_good_series_is_exact(served: DetectorServed) -> None:
    d = served.detector
    first = start("interrupted", n=3)
    good = start("good", n=6)
    d.send(image(good, 0))  # an image before any start
    d.send(end(good))  # an end without a start
    d.send_raw(b"\x00 not a message")  # the decoder cannot read it
    d.send_raw(REFUSE + b"bad_cbor")  # the decoder refuses it with its own reason
    d.send_raw(b"a", b"b")  # two parts where one is expected
    d.send(first)
    d.send(image(first, 0))
    d.send(good)  # a start while 'interrupted' is open: that one ends incomplete
    bad_counts = {
        "image_without_start": 1,
        "end_without_start": 1,
        "malformed": 2,
        "bad_cbor": 1,
        "start_while_open": 1,
        "bad_image": 4,
        "duplicate_image": 1,
        "wrong_series": 1,
    }
    for i in range(6):
        d.send(image(good, i))
        if i == 1:
            wrong = pixels(good, 1, 0)[:, :-1]
            d.send(image(good, 9, data={"threshold_1": wrong, "threshold_2": wrong}))  # wrong size
            as_u2 = {ch: pixels(good, 2, c).astype(np.uint16) for c, ch in enumerate(CHANNELS)}
            d.send(image(good, 2, data=as_u2))  # wrong dtype
            d.send(image(good, 2, data={"threshold_1": pixels(good, 2, 0)}))  # a channel missing
            d.send(image(good, 99))  # past number_of_images
            d.send(image(good, 1))  # a duplicate image_id
            d.send(image(first, 2))  # an image of another series
    d.send(end(good))
    d.send(image(good, 3))  # after the end
    d.send(end(good))  # an end after the end: no series open
    bad_counts["image_after_end"] = 1
    bad_counts["end_without_start"] += 1
    summary = served.wait_series("good")
    served.wait_series("interrupted")
    assert summary["completed"] is True
    assert_series(served.root / "eiger" / "good.zarr", good, range(6))
    snap = served.wait_input(lambda s: sum(s["rejected"].values()) >= sum(bad_counts.values()), "all counted")
    assert snap["rejected"] == bad_counts
    assert snap["images_written"] == 7 and snap["images_rejected"] == 1 + 4 + 1 + 1 + 1
    status = served.status()
    for reason, n in bad_counts.items():
        assert status["rejected"][reason] == n
    interrupted = _record(served.root / "eiger" / "interrupted.zarr")
    assert interrupted["completed"] is False and interrupted["source"]["end"] == "new_series"
    assert interrupted["source"]["images_written"] == 1 and interrupted["source"]["images_missing"] == 2
    good_record = _record(served.root / "eiger" / "good.zarr")
    assert good_record["source"]["rejected"] == {"bad_image": 4, "duplicate_image": 1, "wrong_series": 1}


def test_many_malformed_messages_never_stop_a_good_series(served: DetectorServed) -> None:
    good = start("good", n=20)
    d = served.detector
    d.send(good)
    rng = np.random.default_rng(1)
    for i in range(20):
        d.send(image(good, i))
        for _ in range(60):  # 1,200 bad messages: noise, refusals, images of nothing
            kind = rng.integers(3)
            if kind == 0:
                d.send_raw(rng.bytes(int(rng.integers(0, 64))))
            elif kind == 1:
                d.send_raw(REFUSE + b"bad_image")
            else:
                d.send(image(good, i))  # a duplicate
    d.send(end(good))
    assert served.wait_series("good")["completed"] is True
    assert_series(served.root / "eiger" / "good.zarr", good, range(20))
    snap = served.wait_input(lambda s: sum(s["rejected"].values()) == 1200, "1,200 rejections counted")
    assert snap["images_written"] == 20 and snap["messages_received"] == 1222


@pytest.mark.slow  # waits on reconnects, timeouts or a slow store
def test_a_lost_end_is_finalized_by_the_idle_timeout(tmp_path: Path) -> None:
    served = DetectorServed(tmp_path / "data", detector={"idle_timeout": 0.5})
    try:
        s = start("lost-end", n=4)
        served.detector.send(s)
        for i in range(3):
            served.detector.send(image(s, i))
        summary = served.wait_series("lost-end")
        assert summary["completed"] is False and summary["end"] == "idle_timeout"
        # The next series is taken as usual.
        served.detector.series(start("next", n=2))
        assert served.wait_series("next")["completed"] is True
    finally:
        served.shutdown()
    record = _record(tmp_path / "data" / "eiger" / "lost-end.zarr")
    assert record["completed"] is False and record["source"]["end"] == "idle_timeout"
    assert_series(tmp_path / "data" / "eiger" / "lost-end.zarr", s, range(3))


def test_series_ids_never_leave_root_and_stores_are_never_overwritten(served: DetectorServed) -> None:
    d = served.detector
    sneaky = start("../../outside/x", n=1)
    d.series(sneaky)
    served.wait_series("../../outside/x")
    stores = sorted(p.name for p in (served.root / "eiger").iterdir())
    assert stores == ["_._.._outside_x.zarr"]
    assert not (served.root.parent / "outside").exists()
    assert_series(served.root / "eiger" / "_._.._outside_x.zarr", sneaky, range(1))

    again = start("../../outside/x", n=1)
    d.series(again)  # the same store: refused, and its image and end with it
    snap = served.wait_input(lambda s: s["rejected"].get("series_exists") == 1, "the repeat refused")
    served.wait_input(lambda s: s["rejected"].get("end_without_start") == 1, "its end rejected")
    assert served.input()["rejected"] == {"series_exists": 1, "series_refused": 1, "end_without_start": 1}
    assert snap["series_started"] == 1
    assert_series(served.root / "eiger" / "_._.._outside_x.zarr", sneaky, range(1))  # untouched


def test_absurd_geometry_is_refused_before_any_allocation(served: DetectorServed) -> None:
    huge = start("huge", n=10, size=(2**20, 2**20), channels=("threshold_1",), with_arrays=False)
    served.detector.send(huge)  # a frame of 4 TiB
    served.detector.send(image(start("huge", n=10), 0))
    snap = served.wait_input(lambda s: s["rejected"].get("bad_start") == 1, "the start refused")
    served.wait_input(lambda s: s["rejected"].get("series_refused") == 1, "its image rejected")
    assert snap["series_started"] == 0 and not (served.root / "eiger" / "huge.zarr").exists()
    served.detector.series(start("fine", n=2))
    assert served.wait_series("fine")["completed"] is True


@pytest.mark.slow  # waits on reconnects, timeouts or a slow store
def test_a_detector_that_goes_away_and_comes_back_is_reconnected(served: DetectorServed) -> None:
    served.wait_input(lambda s: s["connected"], "connected")
    served.detector.series(start("before", n=2))
    assert served.wait_series("before")["completed"] is True
    served.detector.close()  # the detector goes away ...
    served.wait_input(lambda s: not s["connected"], "disconnected")
    assert "eiger: not connected" in format_line(served.status())
    time.sleep(0.5)  # ... for a while: the server keeps trying
    served.detector.bind()  # ... and comes back on the same port
    served.wait_input(lambda s: s["connected"], "reconnected")
    served.detector.series(start("after", n=3))
    assert served.wait_series("after")["completed"] is True
    assert_series(served.root / "eiger" / "after.zarr", start("after", n=3), range(3))
    assert served.input()["connections"] >= 2


@pytest.mark.slow  # waits on reconnects, timeouts or a slow store
def test_a_detector_that_is_off_at_start_is_connected_when_it_comes_up(tmp_path: Path) -> None:
    port = free_port()
    status = f"tcp://127.0.0.1:{free_port()}"
    cfg = ServeConfig(
        root=str(tmp_path / "data"),
        detectors=[{"name": "eiger", "protocol": "dectris-stream2", "connect": f"tcp://127.0.0.1:{port}"}],
        status_endpoint=status,
    )
    server = IngestServer(cfg, DECODERS)
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,))
    thread.start()
    try:
        time.sleep(0.3)
        assert query(status)["detectors"]["eiger"]["connected"] is False
        detector = Detector(f"tcp://127.0.0.1:{port}")
        try:
            s = start("late", n=2)
            detector.series(s)
            recent = lambda: [r["series_id"] for r in query(status)["recent_series"]]  # noqa: E731
            wait_until(lambda: "late" in recent(), "written")
        finally:
            detector.term()
    finally:
        stop.set()
        thread.join(WAIT)
        server.close()
    assert_series(tmp_path / "data" / "eiger" / "late.zarr", s, range(2))


# -- a server process killed mid-series -------------------------------------------------------
class ServeProcess:
    """``acqzarr serve`` with the test wire's decoder, in a child process (``detector_helpers``)."""

    def __init__(self, base: Path, config: dict[str, Any]) -> None:
        self.config_path = base / "serve.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.status_endpoint = config["status_endpoint"]
        self.log = base / "serve.log"

    def start(self) -> subprocess.Popen[bytes]:
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "detector_helpers.py"), str(self.config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + WAIT
        while True:
            try:
                query(self.status_endpoint, timeout=0.5)
                return proc
            except StatusUnavailable:
                assert proc.poll() is None and time.monotonic() < deadline, self.log.read_text()

    def input(self) -> dict[str, Any]:
        snap: dict[str, Any] = query(self.status_endpoint, timeout=WAIT)["detectors"]["eiger"]
        return snap


@pytest.mark.slow
@pytest.mark.parametrize("version", [2, 3])
def test_a_killed_server_leaves_a_valid_store_and_the_next_series_is_written(
    tmp_path: Path, version: int
) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    root = tmp_path / "data"
    config = {
        "root": str(root),
        "status_endpoint": f"tcp://127.0.0.1:{free_port()}",
        "detectors": [
            {
                "name": "eiger",
                "protocol": "dectris-stream2",
                "connect": endpoint,
                "version": version,
                "chunks_per_shard": 2,
            }
        ],
    }
    server = ServeProcess(tmp_path, config)
    detector = Detector(endpoint)
    proc = server.start()
    try:
        s = start("killed", n=40)
        detector.send(s)
        for i in range(25):
            detector.send(image(s, i))
        wait_until(lambda: (server.input()["series_flushed"] or 0) >= 20, "20 images flushed")
        flushed = server.input()["series_flushed"]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()

        store = root / "eiger" / "killed.zarr"
        problems = validate(open_store(str(store)), deep=True)
        assert [p for p in problems if p.severity == "error"] == []  # staging files are warnings
        cli = subprocess.run([sys.executable, "-m", "acqzarr", "validate", str(store)], capture_output=True)
        assert cli.returncode == 0, cli.stdout + cli.stderr
        group = zarr.open_group(str(store), mode="r", zarr_format=version)  # type: ignore[arg-type]
        length = group["0"].shape[0]  # type: ignore[union-attr]
        assert flushed <= length <= 25  # every flushed image is there (maybe more)
        assert_series(store, s, range(length))
        if version == 2:
            from ome_zarr_models.v04.image import Image
        else:
            from ome_zarr_models.v05.image import Image  # type: ignore[assignment]
        Image.from_zarr(group)

        proc = server.start()  # restarted: the detector is connected to again
        nxt = start("after-kill", n=3)
        detector.series(nxt)
        wait_until(lambda: server.input()["series_finished"] == 1, "the next series finalized")
        after = root / "eiger" / "after-kill.zarr"
        assert _record(after, version)["completed"] is True
        assert_series(root / "eiger" / "after-kill.zarr", nxt, range(3))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(WAIT) == 0, server.log.read_text()
        detector.term()


@pytest.mark.slow  # waits on reconnects, timeouts or a slow store
def test_status_shows_the_detector_its_series_and_counts(served: DetectorServed) -> None:
    s = start("live", n=4)
    served.detector.send(s)
    for i in range(2):
        served.detector.send(image(s, i))
    served.detector.send(image(s, 1))  # a duplicate
    snap = served.wait_input(lambda d: d["images_rejected"] == 1 and d["images_written"] == 2, "2 in, 1 out")
    assert snap["connected"] is True and snap["series"] == "live" and snap["series_images"] == 2
    assert snap["series_expected"] == 4 and snap["images_received"] == 3
    assert snap["store"] == str(served.root / "eiger" / "live.zarr")
    assert snap["protocol"] == "dectris-stream2" and snap["connect"] == served.endpoint
    cli = subprocess.run(
        [sys.executable, "-m", "acqzarr", "status", served.status_endpoint], capture_output=True, text=True
    )
    assert cli.returncode == 0, cli.stderr
    assert "eiger: connected, series live (2/4), images 3 in / 2 written / 1 rejected" in cli.stdout
    for i in range(2, 4):
        served.detector.send(image(s, i))
    served.detector.send(end(s))
    served.wait_series("live")
    cli = subprocess.run(
        [sys.executable, "-m", "acqzarr", "status", served.status_endpoint], capture_output=True, text=True
    )
    assert cli.returncode == 0, cli.stderr
    assert "live: complete (series_end), 4 frames" in cli.stdout and "series -," in cli.stdout


def test_two_detectors_and_an_acqzarr_sender_in_one_server(tmp_path: Path) -> None:
    detectors = {name: f"tcp://127.0.0.1:{free_port()}" for name in ("eiger", "pilatus")}
    status = f"tcp://127.0.0.1:{free_port()}"
    cfg = ServeConfig(
        root=str(tmp_path / "data"),
        endpoints=[f"tcp://127.0.0.1:{free_port()}"],  # acqzarr senders too
        detectors=[{"name": n, "protocol": "dectris-stream2", "connect": e} for n, e in detectors.items()],
        status_endpoint=status,
    )
    server = IngestServer(cfg, DECODERS)
    stop = threading.Event()
    thread = threading.Thread(target=server.run, args=(stop,))
    thread.start()
    eiger, pilatus = (Detector(e) for e in detectors.values())
    ctx, sock = raw_socket(cfg.endpoints[0])
    try:
        a, b = start("a", n=3), start("b", n=4, channels=("threshold_1",), dtype="<u2")
        eiger.send(a)
        pilatus.send(b)
        for i in range(4):  # the two detectors' images interleaved
            if i < 3:
                eiger.send(image(a, i))
            pilatus.send(image(b, i))
        eiger.send(end(a))
        pilatus.send(end(b))
        sock.send_multipart(
            [header(series_id="cam", msg_number=0, htype="series_start", settings=SMALL_SERIES), b""]
        )
        for i in range(1, 4):
            fields = {**SMALL_FRAME_HEADER, "frame_id": i}
            sock.send_multipart([header(series_id="cam", msg_number=i, **fields), small_frame(i).tobytes()])
        sock.send_multipart([header(series_id="cam", msg_number=4, htype="series_end"), b""])

        def finished() -> set[str]:
            return {r["series_id"] for r in query(status)["recent_series"]}

        wait_until(lambda: finished() == {"a", "b", "cam"}, "three series finalized")
        snap = query(status)["detectors"]
        assert snap["eiger"]["images_written"] == 3 and snap["pilatus"]["images_written"] == 4
    finally:
        sock.close()
        ctx.term()
        stop.set()
        thread.join(WAIT)
        eiger.term()
        pilatus.term()
        server.close()
    root = tmp_path / "data"
    assert_series(root / "eiger" / "a.zarr", a, range(3))
    assert_series(root / "pilatus" / "b.zarr", b, range(4))
    assert_store(root, "cam", range(1, 4))


def test_the_documented_config_loads(tmp_path: Path) -> None:
    text = (HERE.parent / "docs" / "protocol.md").read_text()
    section = text[text.index("## Detector inputs") :]
    block = section[section.index("```yaml\n") + 8 : section.index("```\n", section.index("```yaml\n") + 8)]
    path = tmp_path / "serve.yaml"
    path.write_text(block)
    cfg = load_serve_config(path)
    assert [d.name for d in cfg.detectors] == ["eiger"] and cfg.detectors[0].connect == "tcp://10.0.0.5:31001"


def test_a_start_without_a_dtype_takes_its_first_images(served: DetectorServed) -> None:
    """Stream V2 before firmware 2023.x sends no image_dtype: the first image decides."""
    s = start("no-dtype", n=3, channels=("threshold_1",), dtype="<u2")
    served.detector.send(dataclasses.replace(s, dtype=None))  # type: ignore[arg-type]
    for i in range(3):
        served.detector.send(image(s, i))
    served.detector.send(end(s))
    assert served.wait_series("no-dtype")["completed"] is True
    group = assert_series(served.root / "eiger" / "no-dtype.zarr", s, range(3))
    assert group["0"].dtype == np.uint16  # type: ignore[union-attr]
    assert group.attrs["dectris"]["image_dtype"] == "uint16"  # type: ignore[index]
    # A first image that is wrong opens the store with its dtype but is itself rejected.
    bad = start("bad-first", n=2, channels=("threshold_1",), dtype="<u2")
    served.detector.send(dataclasses.replace(bad, dtype=None))  # type: ignore[arg-type]
    wrong = pixels(bad, 0, 0)[:-1]
    served.detector.send(image(bad, 0, data={"threshold_1": wrong}))
    for i in range(2):
        served.detector.send(image(bad, i))
    served.detector.send(end(bad))
    assert served.wait_series("bad-first")["completed"] is True
    assert served.input()["rejected"] == {"bad_image": 1}
    assert_series(served.root / "eiger" / "bad-first.zarr", bad, range(2))
    # One that ends before any image writes no store, and says so.
    empty = start("empty", n=3)
    served.detector.send(dataclasses.replace(empty, dtype=None))  # type: ignore[arg-type]
    served.detector.send(end(empty))
    served.detector.send(image(empty, 0))
    snap = served.wait_input(lambda d: d["rejected"].get("image_after_end") == 1, "the late image rejected")
    assert snap["rejected"] == {"bad_image": 1, "empty_series": 1, "image_after_end": 1}
    assert not (served.root / "eiger" / "empty.zarr").exists()


@pytest.mark.skipif(not have_stream2_decoder(), reason="no Stream V2 decoder in this installation yet")
def test_real_stream2_bytes_from_a_sender_written_from_the_spec(tmp_path: Path) -> None:
    """The good series again, as Stream V2 CBOR (``encode_stream2``, from the spec alone) through the
    server's own decoder."""
    served = DetectorServed(tmp_path / "data", wire=encode_stream2, decoders=None)
    try:
        s = start("v2", n=4, dtype=">u2")  # big-endian typed arrays on the wire
        served.detector.series(s, order=[2, 0, 3, 1])
        summary = served.wait_series("v2")
    finally:
        served.shutdown()
    assert summary["completed"] is True
    store = tmp_path / "data" / "eiger" / "v2.zarr"
    group = assert_series(store, s, range(4))
    block = group.attrs["dectris"]
    for name, value in s.fields.items():
        assert block[name] == value, name
    for name, want in s.arrays.items():
        np.testing.assert_array_equal(np.asarray(group[f"dectris/{name}"][...]), want)  # type: ignore[index]
    assert validate(open_store(str(store))) == []


@pytest.mark.parametrize("version", [2, 3])
def test_tiles_chunk_large_frames(tmp_path: Path, version: int) -> None:
    served = DetectorServed(tmp_path / "data", detector={"version": version, "tile": [4, 3], "threads": 1})
    try:
        s = start("tiled", n=3, size=(10, 7))
        served.detector.series(s)
        assert served.wait_series("tiled")["completed"] is True
    finally:
        served.shutdown()
    store = tmp_path / "data" / "eiger" / "tiled.zarr"
    group = assert_series(store, s, range(3))
    assert group["0"].chunks == (1, 1, 4, 3)  # type: ignore[union-attr]
    if version == 3:
        assert group["0"].shards == (16, 1, 12, 9)  # type: ignore[union-attr]
    assert validate(open_store(str(store))) == []


def test_an_image_id_far_ahead_is_refused(tmp_path: Path) -> None:
    """A corrupt image_id of 10**9 would leave a billion holes to close: past max_id_jump it is
    refused, and the series goes on."""
    served = DetectorServed(tmp_path / "data", detector={"max_id_jump": 100})
    try:
        s = start("jumps", n=None, channels=("threshold_1",))
        served.detector.send(s)
        for i in (0, 10**9, 101, 1, 2, 100):  # 10**9 and 101 jump more than 100 past 0; 100 does not past 2
            served.detector.send(image(s, i))
        served.detector.send(end(s))
        summary = served.wait_series("jumps")
        snap = served.input()
    finally:
        served.shutdown()
    assert snap["rejected"] == {"bad_image": 2} and summary["frames_total"] == 4
    group = assert_series(tmp_path / "data" / "eiger" / "jumps.zarr", s, [0, 1, 2, 100])
    assert group["0"].shape[0] == 101  # type: ignore[union-attr]


def test_a_server_stopped_mid_series_finalizes_it_with_every_image_received(tmp_path: Path) -> None:
    served = DetectorServed(tmp_path / "data")
    s = start("stopped", n=10)
    try:
        served.detector.send(s)
        for i in range(4):
            served.detector.send(image(s, i))
        served.wait_input(lambda d: d["images_written"] == 4, "4 images written")
    finally:
        served.shutdown()  # as SIGTERM: the open series is finalized
    store = tmp_path / "data" / "eiger" / "stopped.zarr"
    record = _record(store)
    assert record["completed"] is False and record["stop"] is not None
    assert record["source"]["end"] == "shutdown" and record["source"]["images_written"] == 4
    assert_series(store, s, range(4))
    assert validate(open_store(str(store))) == []


def test_the_store_template_may_name_the_date(tmp_path: Path) -> None:
    served = DetectorServed(tmp_path / "data", detector={"store": "{detector}/{date}_{series_id}.zarr"})
    try:
        before = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        served.detector.series(start("dated", n=1, series_id=3))
        summary = served.wait_series("dated")
        after = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    finally:
        served.shutdown()
    name = Path(summary["store"]).name
    assert name.endswith("_3.zarr") and before <= name[:15] <= after


# -- memory: the decode queue and the receive pipe come out of the series' cap ----------------------
@pytest.mark.slow  # waits on reconnects, timeouts or a slow store
def test_the_decode_queue_is_bounded_in_bytes_and_a_full_one_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    take = DetectorSeries.image

    def slow(self: DetectorSeries, img: Any) -> None:  # a slow store: the queue fills behind it
        time.sleep(0.03)
        take(self, img)

    monkeypatch.setattr(DetectorSeries, "image", slow)
    served = DetectorServed(tmp_path / "data", detector={"idle_timeout": 30})
    seen: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(served.input())
            time.sleep(0.003)

    watcher = threading.Thread(target=watch)
    try:
        s = start("big", n=24, size=(512, 512))  # 2 channels of uint32: 2 MiB an image
        eiger = DetectorInput(name="eiger", protocol="dectris-stream2", connect="tcp://h:1")
        budget = decode_budget(eiger, s)
        assert budget.frame_bytes == 2 << 20 and budget.queue_messages == 3  # decode_threads + 1
        assert budget.pipe_messages == 4  # rcvhwm
        watcher.start()
        served.detector.series(s)  # at once: the server takes them as it can
        summary = served.wait_series("big")
        done.set()
        watcher.join()
        snap = served.input()
    finally:
        done.set()
        served.shutdown()
    assert summary["completed"] is True and summary["frames_total"] == 24
    assert_series(served.root / "eiger" / "big.zarr", s, range(24))  # nothing lost to the bound
    # Each message is 2 MiB received and 2 MiB decoded: the budget takes 3 (the decode threads and
    # one decoded, waiting), where the count alone (4 per decode thread) took 8.
    most = max(d["decoding"] for d in seen)
    assert most * 2 * budget.frame_bytes <= budget.queue_bytes, f"{most} messages queued"
    assert most == budget.queue_messages  # the slow store did fill it
    # The start's masks and flat fields (4 MiB decoded) wait in the queue beside the first images
    # until the loop applies it: counted in the bound (the peak went past the images' alone).
    assert budget.start_bytes > 2 * sum(a.nbytes for a in s.arrays.values()) >= 8 << 20
    assert snap["decode_queue_max_bytes"] == budget.queue_max_bytes == budget.queue_bytes + budget.start_bytes
    assert 0 < snap["decode_queue_peak_bytes"] <= budget.queue_max_bytes
    assert max(d["decode_queue_bytes"] for d in seen) <= budget.queue_max_bytes


def test_a_detector_series_cap_leaves_room_for_what_the_input_holds(tmp_path: Path) -> None:
    detector = DetectorInput(name="eiger", protocol="dectris-stream2", connect="tcp://h:1")
    eiger_4m = start("4m", n=8, size=(2162, 2068), dtype="<u2", channels=("threshold_1",), with_arrays=False)
    settings = series_stream_settings(detector, eiger_4m, str(tmp_path / "a.zarr"), S3Settings())
    budget = decode_budget(detector, eiger_4m)
    plan = plan_memory(settings)
    assert budget.frame_bytes == 2162 * 2068 * 2 and plan.default_cap == MIN_DEFAULT_CAP
    # The stream's share and the input's are the cap an acqzarr sender's series would have.
    assert settings.max_inflight_bytes == MIN_DEFAULT_CAP - budget.total > plan.required
    # Frames so large that nothing would be left: the stream still gets what it needs.
    huge = start("huge", n=8, size=(8192, 8192), channels=("threshold_1",), with_arrays=False)
    settings = series_stream_settings(detector, huge, str(tmp_path / "b.zarr"), S3Settings())
    assert settings.max_inflight_bytes == plan_memory(settings).required


_REJECTING = re.compile(r'(?:ProtocolError|DetectorMessageError|_reject)\(\s*"([a-z_]+)"')
# optional_int/optional_float(value, name, reason[, minimum=/positive=]): the reason is the last string
_PASSED_REASON = re.compile(r'optional_(?:int|float)\([^\n]*"([a-z_]+)"(?:, (?:minimum|positive)=\w+)?\)')


def test_every_reason_a_detector_rejects_with_is_documented() -> None:
    ingest = HERE.parent / "src" / "acqzarr" / "ingest"
    sources = [ingest / "detectors.py", *sorted((ingest / "dectris").glob("*.py"))]
    used = {m for f in sources for rx in (_REJECTING, _PASSED_REASON) for m in rx.findall(f.read_text())}
    assert {"start_while_open", "bad_image", "bad_compression", "malformed", "shutdown"} <= used
    assert not used - set(REASONS), f"add to protocol.REASONS: {sorted(used - set(REASONS))}"
