"""Malformed ZeroMQ messages among good frames, sent to `acqzarr serve` (a child process) over real
loopback sockets: every bad message is rejected and counted under its reason, on the server and (when it
names the series) on the series, and no good frame is lost: every one is on disk with its metadata.

The counts across all examples go to .results/ingest_fuzz.json for RELIABILITY.md (report.py).
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import blosc2
import numpy as np
import pytest
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import UNSHARDED, array_document
from ingest_helpers import ServerProcess, header, loopback_server, raw_socket
from readback import assert_reads_back

from .sizes import RESULTS, scale

pytestmark = pytest.mark.reliability

# Across all examples: messages sent by kind, rejections the server counted by reason, good frames sent
# and good frames found on disk with their metadata.
COUNTS: dict[str, Any] = {
    "series": 0,
    "messages_sent": 0,
    "good_frames_sent": 0,
    "bad_messages_sent": 0,
    "control_messages_sent": 0,
    "good_frames_on_disk": 0,
    "rejected": Counter(),
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A lossless (PULL) server for the module, started from configs/serve-loopback.yaml."""
    with loopback_server(tmp_path_factory.mktemp("serve")) as srv:
        yield srv


FUZZ_SHAPE = (8, 12)
FUZZ_SETTINGS = {"arrays": [array_document(3, (0, *FUZZ_SHAPE), (4, *FUZZ_SHAPE), shards=UNSHARDED)]}
_FRAME_FIELDS = [
    "htype",
    "series_id",
    "msg_number",
    "key",
    "frame_id",
    "shape",
    "dtype",
    "timestamp_ns",
    "version",
]

good_op = st.tuples(st.just("good"), st.sampled_from(["raw", "blosc2"]))
bad_op = st.one_of(
    st.tuples(st.just("parts"), st.sampled_from([1, 3])),
    st.tuples(
        st.just("json"),
        st.one_of(
            st.binary(max_size=40).map(lambda b: b"\xff" + b),
            st.sampled_from([b"", b"[]", b"3", b'"x"', b"null", b"{", b"{'a': 1}"]),
        ),
    ),
    st.tuples(st.just("version"), st.integers(-(2**40), 2**40).filter(lambda v: v != 1)),
    st.tuples(st.just("unknown_field"), st.text(alphabet="abcdefghij_", min_size=1, max_size=10)),
    st.tuples(st.just("missing_field"), st.sampled_from(_FRAME_FIELDS)),
    st.tuples(
        st.just("wrong_type"),
        st.sampled_from(
            [
                ("frame_id", "x"),
                ("shape", "8x12"),
                ("dtype", "uint17"),
                ("encoding", "zip"),
                ("msg_number", -1),
                ("timestamp_ns", 1.5),
                ("htype", "frames"),
                ("key", 7),
                ("shape", [8, -12]),
                ("msg_number", "3"),
                ("frame_id", 0.0),
                ("version", True),
            ]
        ),
    ),
    st.tuples(st.just("payload_size"), st.integers(0, 400).filter(lambda n: n != 192)),
    st.tuples(st.just("blosc2_size"), st.sampled_from(["other-shape", "truncated", "zeros"])),
    st.tuples(
        st.just("frame_mismatch"),
        st.sampled_from([((12, 8), "uint16"), ((8, 12), "uint8"), ((96,), "uint16")]),
    ),
    st.tuples(st.just("unknown_key"), st.sampled_from(["cam1", "cam", "CAM0"])),
    st.tuples(st.just("bad_key"), st.sampled_from(["../x", "/abs", "a//b", ".", "cam0/.."])),
    st.tuples(st.just("bad_series"), st.sampled_from(["../x", "/abs", "a/b", "", ".."])),
    st.tuples(
        st.sampled_from(["unknown_series", "out_of_order", "header_size", "start_again", "busy"]), st.none()
    ),
)
# kind -> (reason counted, counted on the series too, uses up a msg_number)
EXPECTED = {
    "parts": ("parts", False, False),
    "json": ("json", False, False),
    "version": ("version", False, False),
    "unknown_field": ("header", False, False),
    "missing_field": ("header", False, False),
    "wrong_type": ("header", False, False),
    "payload_size": ("payload_size", True, True),
    "blosc2_size": ("payload_size", True, True),
    "frame_mismatch": ("frame_mismatch", True, True),
    "unknown_key": ("unknown_key", True, True),
    "bad_key": ("bad_path", False, False),
    "bad_series": ("bad_path", False, False),
    "unknown_series": ("unknown_series", False, False),
    "out_of_order": ("out_of_order", True, False),
    "header_size": ("header_size", False, False),
    "start_again": ("series_open", False, False),
    "busy": ("busy", False, False),
}


def _fuzz_frame(i: int) -> np.ndarray[Any, Any]:
    return ((np.arange(96).reshape(FUZZ_SHAPE) * 7 + 1000 * i) % 65536).astype(np.uint16)


def _bad_message(kind: str, param: Any, sid: str, msg: int) -> list[bytes]:
    frame = {
        "htype": "frame",
        "version": 1,
        "series_id": sid,
        "msg_number": msg,
        "key": "cam0",
        "frame_id": 0,
        "shape": list(FUZZ_SHAPE),
        "dtype": "uint16",
        "timestamp_ns": 0,
    }
    payload = _fuzz_frame(99).tobytes()
    if kind == "parts":
        return [json.dumps(frame).encode()] if param == 1 else [json.dumps(frame).encode(), payload, b"x"]
    if kind == "json":
        return [param, payload]
    if kind == "version":
        frame["version"] = param
    elif kind == "unknown_field":
        frame[f"zz_{param}"] = 1
    elif kind == "missing_field":
        del frame[param]
    elif kind == "wrong_type":
        frame[param[0]] = param[1]
    elif kind == "payload_size":
        payload = bytes(param)
    elif kind == "blosc2_size":
        frame["encoding"] = "blosc2"
        chunk = blosc2.compress(_fuzz_frame(1)[:, :6].copy(), typesize=2)
        payload = {
            "other-shape": chunk,
            "truncated": blosc2.compress(_fuzz_frame(1), typesize=2)[:-1],
            "zeros": bytes(32),
        }[param]
    elif kind == "frame_mismatch":
        frame["shape"], frame["dtype"] = list(param[0]), param[1]
        payload = bytes(int(np.prod(param[0])) * np.dtype(param[1]).itemsize)
    elif kind in ("unknown_key", "bad_key"):
        frame["key"] = param
    elif kind == "bad_series":
        frame["series_id"] = param
    elif kind == "unknown_series":
        frame["series_id"] = "never-started"
    elif kind == "out_of_order":
        frame["msg_number"] = msg - 1
    elif kind == "header_size":
        frame["user_data"] = "x" * 70000
    elif kind in ("start_again", "busy"):
        start = {
            "htype": "series_start",
            "version": 1,
            "series_id": sid if kind == "start_again" else "other",
            "msg_number": 0,
            "settings": FUZZ_SETTINGS,
        }
        return [json.dumps(start).encode(), b""]
    return [json.dumps(frame).encode(), payload]


@settings(max_examples=scale("FUZZ_MESSAGES", 60))
@given(ops=st.lists(st.one_of(good_op, bad_op), min_size=1, max_size=14), after_end=st.integers(0, 2))
def test_fuzz_bad_messages_are_counted_and_good_frames_land(
    server: ServerProcess, ops: list[tuple[str, Any]], after_end: int
) -> None:
    sid = f"fuzz-{uuid.uuid4().hex[:12]}"
    before = server.status()
    expected: Counter[str] = Counter()
    on_series: Counter[str] = Counter()
    good: list[np.ndarray[Any, Any]] = []
    sent: Counter[str] = Counter()
    ctx, sock = raw_socket(server.tcp)
    try:
        start = {"htype": "series_start", "series_id": sid, "msg_number": 0, "settings": FUZZ_SETTINGS}
        sock.send_multipart([header(**start), b""])
        sent["control"] += 1
        msg = 1
        for kind, param in [("good", "raw"), *ops]:
            if kind == "good":
                i = len(good)
                data = _fuzz_frame(i)
                payload = data.tobytes() if param == "raw" else blosc2.compress(data, typesize=2)
                frame = header(
                    htype="frame",
                    series_id=sid,
                    msg_number=msg,
                    key="cam0",
                    frame_id=i,
                    shape=list(FUZZ_SHAPE),
                    dtype="uint16",
                    timestamp_ns=1000 * i,
                    encoding=param,
                    user_data={"seq": i},
                )
                sock.send_multipart([frame, payload])
                sent["good"] += 1
                good.append(data)
                msg += 1
                continue
            reason, attributable, consumes = EXPECTED[kind]
            sock.send_multipart(_bad_message(kind, param, sid, msg))
            sent["bad"] += 1
            expected[reason] += 1
            if attributable:
                on_series[reason] += 1
            msg += consumes
        sock.send_multipart([header(htype="series_end", series_id=sid, msg_number=msg), b""])
        sent["control"] += 1
        for n in range(after_end):
            sock.send_multipart(_bad_message("payload_size", 0, sid, msg + 1 + n))
            sent["bad"] += 1
            expected["series_ended"] += 1
        total = sum(expected.values())
        snap = server.wait_for(
            lambda s: (
                s["rejected_total"] - before["rejected_total"] >= total
                and any(r["series_id"] == sid for r in s["recent_series"])
            )
        )
    finally:
        sock.close()
        ctx.term()
    delta = Counter({k: v - before["rejected"].get(k, 0) for k, v in snap["rejected"].items()})
    assert +delta == expected
    assert snap["gaps"] == before["gaps"] and snap["frames"] - before["frames"] == len(good)
    summary = next(r for r in snap["recent_series"] if r["series_id"] == sid)
    assert summary["rejected"] == dict(on_series) and summary["gaps"] == 0
    assert summary["completed"] is (not on_series) and summary["frames_total"] == len(good)
    # No good frame lost: each is on disk, in order, with the metadata it was sent with.
    store = server.root / sid / "cam0"
    assert_reads_back(store / "0", 3, np.stack(good))
    columns = zarr.open_group(str(store / "acqzarr_frames"), mode="r")
    meta = {name: np.asarray(columns[name][...]) for name in columns.array_keys()}  # type: ignore[index]
    n = len(good)
    np.testing.assert_array_equal(meta["frame_id"], np.arange(n))
    np.testing.assert_array_equal(meta["timestamp_ns"], 1000 * np.arange(n))
    assert (meta["gap_before"] == 0).all() and (meta["dropped_before"] == 0).all()
    assert [json.loads(str(text))["user_data"] for text in meta["json"]] == [{"seq": i} for i in range(n)]
    assert server.proc.poll() is None
    COUNTS["series"] += 1
    COUNTS["messages_sent"] += sum(sent.values())
    COUNTS["good_frames_sent"] += sent["good"]
    COUNTS["bad_messages_sent"] += sent["bad"]
    COUNTS["control_messages_sent"] += sent["control"]
    COUNTS["good_frames_on_disk"] += n
    COUNTS["rejected"].update(+delta)


def test_write_ingest_fuzz_counts() -> None:
    """Runs after the fuzz (file order): records what it sent, what was rejected, and what was lost."""
    assert COUNTS["series"] > 0
    counts = {**COUNTS, "rejected": dict(sorted(COUNTS["rejected"].items()))}
    counts["good_frames_lost"] = counts["good_frames_sent"] - counts["good_frames_on_disk"]
    assert counts["good_frames_lost"] == 0
    assert sum(counts["rejected"].values()) == counts["bad_messages_sent"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "ingest_fuzz.json").write_text(json.dumps(counts, indent=2))
