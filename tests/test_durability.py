"""The durability deadline (``max_unflushed_seconds``): every accepted frame is readable, and survives a
kill, within the deadline, although its chunk or shard is not full; the store a run closes is the
same as without it."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import acqzarr as az
from acqzarr.errors import ConfigError
from acqzarr.read.validate import validate
from acqzarr.stores import LocalStore
from builders import pyramid_settings, stream_settings
from child_writer import start_writer
from readback import read_tensorstore, read_zarr
from test_multiscale import reference_pyramid

REPO = Path(__file__).resolve().parent.parent
DEADLINE = 0.3  # seconds, for the in-process tests
WAIT = 10.0  # seconds a test waits for a frame to show before failing (the deadline is far shorter)


class Layout:
    """One array layout the deadline must handle: bands deep along t (so they fill slowly)."""

    def __init__(
        self,
        name: str,
        version: int,
        shape: tuple[int, ...],
        chunks: tuple[int, ...],
        shards: tuple[int, ...] | None = None,
        levels: int = 1,
        order: tuple[str, ...] | None = None,
        names: str | None = None,
    ) -> None:
        self.name, self.version, self.shape, self.chunks = name, version, shape, chunks
        self.shards, self.levels, self.order = shards, levels, order
        self.names = names or {3: "tyx", 5: "tczyx"}[len(shape)]

    def settings(self, path: Path, **fields: Any) -> az.StreamSettings:
        return stream_settings(
            path,
            self.version,
            self.shape,
            self.chunks,
            shards=self.shards,
            multiscale=az.Multiscale(levels=self.levels, method="mean") if self.levels > 1 else None,
            acquisition_order=self.order,
            names=self.names,
            frame_columns={"frame_id": "int64"},
            **fields,
        )

    @property
    def kinds(self) -> list[str]:
        return [{"t": "time", "c": "channel"}.get(n, "space") for n in self.names]

    @property
    def per_t(self) -> int:
        return int(np.prod(self.shape[1:-2], dtype=int))

    def index_of(self, seq: int) -> tuple[int, ...]:
        """Where frame ``seq`` of the acquisition goes (t first, then the acquisition order)."""
        t, rest = divmod(seq, self.per_t)
        inner = self.shape[1:-2]
        if not inner:
            return (t,)
        names = list(self.names[1:-2])
        order = [n for n in (self.order or ("t", *names)) if n != "t"]
        sizes = dict(zip(names, inner, strict=True))
        index: dict[str, int] = {}
        for name in reversed(order):
            rest, index[name] = divmod(rest, sizes[name])
        return (t, *(index[n] for n in names))


LAYOUTS = [
    Layout("v2", 2, (0, 37, 50), (4, 16, 16)),
    # the case: shards 16 deep along t, in chunks of 4
    Layout("v3-deep-shards", 3, (0, 37, 50), (4, 16, 16), shards=(4, 2, 2)),
    Layout("v3-one-band-shards", 3, (0, 37, 50), (4, 16, 16), shards=(1, 2, 2)),
    Layout("v2-pyramid", 2, (0, 37, 50), (4, 16, 16), levels=3),
    Layout("v3-deep-pyramid", 3, (0, 37, 50), (4, 16, 16), shards=(4, 2, 2), levels=2),
    # t, c, z with an acquisition order that is not the storage order
    Layout("v3-tzc", 3, (0, 2, 3, 20, 24), (2, 1, 2, 16, 16), shards=(2, 1, 2, 2, 2), order=("t", "z", "c")),
    # a pyramid that halves z, one plane a band: every pair of planes straddles two bands
    Layout("v2-z-pyramid", 2, (0, 5, 20, 24), (2, 1, 16, 16), levels=2, names="tzyx"),
]


def frame(seq: int, shape: Sequence[int]) -> np.ndarray[Any, Any]:
    """Frame ``seq``: distinct, never all zero."""
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    return ((seq * 131 + yy * 7 + xx * 3) % 4000 + 1).astype(np.uint16)


def expected(layout: Layout, frames: dict[int, int]) -> np.ndarray[Any, Any]:
    """The level-0 array holding ``frames`` (acquisition seq -> seq, None for a hole) and fill value
    elsewhere, as long as the last frame's timepoint."""
    last = max(frames) if frames else -1
    out = np.zeros((last // layout.per_t + 1, *layout.shape[1:]), np.uint16)
    for seq in frames:
        out[layout.index_of(seq)] = frame(seq, layout.shape[-2:])
    return out


def wait_for(path: Path, extent: int) -> None:
    """Wait until a reader opening the store afresh sees ``extent`` timepoints of level 0.

    A read may fail while the writer replaces a shard: zarr-python reads a shard's index and its
    chunks in separate requests, and a shard written again in between holds the chunks elsewhere
    (docs/how-it-works.md, "The durability deadline"); reading again succeeds.
    """
    end = time.monotonic() + WAIT
    while True:
        try:
            if read_zarr(path / "cam0" / "0").shape[0] >= extent:
                return
        except (FileNotFoundError, KeyError, ValueError, RuntimeError):
            pass
        assert time.monotonic() < end, f"{extent} timepoints not readable within {WAIT} s"
        time.sleep(0.02)


def assert_valid(path: Path) -> None:
    errors = [p for p in validate(LocalStore(path)) if p.severity == "error"]
    assert not errors, errors


def session(path: Path, version: int) -> dict[str, Any]:
    if version == 2:
        doc = json.loads((path / "cam0" / ".zattrs").read_text())
    else:
        doc = json.loads((path / "cam0" / "zarr.json").read_text())["attributes"]
    record: dict[str, Any] = doc["acqzarr_session"]
    return record


@pytest.mark.parametrize("layout", LAYOUTS, ids=[lay.name for lay in LAYOUTS])
def test_a_reader_sees_every_accepted_frame_within_the_deadline(tmp_path: Path, layout: Layout) -> None:
    """Frames go in a few at a time, never filling a band before the pause; after each pause a reader
    sees all of them (every level, the columns, the session record), then the closed store is the one
    a run without pauses writes."""
    path = tmp_path / "s.zarr"
    skip = 5  # a hole, left with skip()
    written: dict[int, int] = {}
    steps = [3, 4, 9, 10, 17] if layout.per_t == 1 else [2, 7, 13, 18, 20]
    seq = 0
    with az.open_stream(layout.settings(path, max_unflushed_seconds=DEADLINE)) as stream:
        for upto in steps:
            while seq < upto:
                if seq == skip:
                    stream.skip()
                else:
                    stream.append(frame(seq, layout.shape[-2:]), metadata={"frame_id": seq})
                    written[seq] = seq
                seq += 1
            # Every timepoint whose slots are all filled or skipped shows; one still waiting for a
            # frame shows once it has them all (what is shown never changes afterwards).
            settled = seq // layout.per_t
            shown = {s: s for s in written if s < settled * layout.per_t}
            want = expected(layout, shown)[:settled]
            wait_for(path, settled)
            end = time.monotonic() + WAIT
            while stream.stats().frames_flushed < len(shown):  # the publish that showed it is done
                assert time.monotonic() < end
                time.sleep(0.01)
            np.testing.assert_array_equal(read_zarr(path / "cam0" / "0"), want)
            for level, reference in enumerate(reference_pyramid(want, layout.kinds, layout.levels, "mean")):
                np.testing.assert_array_equal(read_zarr(path / "cam0" / str(level)), reference)
            if not settled:
                continue  # (a timepoint still waiting: nothing to show yet, no columns)
            ids = read_zarr(path / "cam0" / "acqzarr_frames" / "frame_id")
            assert ids.shape[0] == settled
            for s in range(settled * layout.per_t):
                assert ids[layout.index_of(s)] == (s if s in shown else -(2**63))
            assert session(path, layout.version)["frames_on_disk"] == len(shown)
            assert stream.stats().frames_flushed == len(shown)
        assert stream.stats().checkpoints >= 1  # (a step that completes a band needs none)
    final = expected(layout, written)
    final = np.concatenate(
        [final, np.zeros((-(-seq // layout.per_t) - final.shape[0], *final.shape[1:]), final.dtype)]
    )
    for got in (read_zarr(path / "cam0" / "0"), read_tensorstore(path / "cam0" / "0", layout.version)):
        np.testing.assert_array_equal(got, final)
    for level, reference in enumerate(reference_pyramid(final, layout.kinds, layout.levels, "mean")):
        np.testing.assert_array_equal(read_tensorstore(path / "cam0" / str(level), layout.version), reference)
    assert_valid(path)
    assert not (path / ".acqzarr-staging").exists()


@pytest.mark.slow  # three seconds of paced frames
def test_no_checkpoint_while_bands_fill_faster_than_the_deadline(tmp_path: Path) -> None:
    """100 frames/s in bands of 4: every frame is readable long before the deadline, so the deadline
    never writes anything (what a fast camera pays for it: two counters read a few times a second)."""
    settings = LAYOUTS[1].settings(tmp_path / "fast.zarr", max_unflushed_seconds=4.0)  # looks every 1 s
    with az.open_stream(settings) as stream:
        end = time.monotonic() + 3.0  # three looks, each after frames a second old
        seq = 0
        while time.monotonic() < end:
            stream.append(frame(seq, (37, 50)), metadata={"frame_id": seq})
            seq += 1
            time.sleep(0.01)
        assert stream.stats().checkpoints == 0
    assert read_zarr(tmp_path / "fast.zarr" / "cam0" / "0").shape[0] == seq


def test_the_per_step_counts_stay_as_small_as_the_open_rows(tmp_path: Path) -> None:
    """A long stream keeps per-step frame counts (a checkpoint's count) only for rows still open,
    not one entry per step of the whole run (white box: a leak here grows for days)."""
    from acqzarr.writers.bands import BandAssembler

    seen: list[int] = []
    close = BandAssembler._close

    def spy(self: BandAssembler, band: tuple[int, ...]) -> None:
        close(self, band)
        seen.append(len(self.filled_at))

    settings = LAYOUTS[0].settings(tmp_path / "long.zarr", max_unflushed_seconds=None)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(BandAssembler, "_close", spy)
        with az.open_stream(settings) as stream:
            stream.append(np.stack([frame(s, (37, 50)) for s in range(400)]))
    assert len(seen) >= 100 and max(seen) <= 4  # a row is 4 steps; closed rows are dropped


def _append_until_it_fails(stream: az.Stream, match: str) -> None:
    """Append a frame every 50 ms until append raises a writer thread's failure (a checkpoint's,
    after the deadline); WriterError matching ``match``, within WAIT."""
    end, seq = time.monotonic() + WAIT, 0
    with pytest.raises(az.WriterError, match=match):
        while time.monotonic() < end:
            stream.append(frame(seq, (37, 50)))
            seq += 1
            time.sleep(0.05)


def test_a_checkpoint_that_fails_fails_the_stream_and_its_close_returns(tmp_path: Path) -> None:
    """The copies cannot be queued for encoding (the pool refuses): the queued write raises that
    failure instead of waiting for them, so the stream's next call raises it and close() returns
    (a checkpoint's error never dies in its thread, and never hangs the I/O thread)."""
    from acqzarr.writers.pipeline import Pipeline

    compress = Pipeline.compress

    def refuse(self: Pipeline, fn: Any, *args: Any) -> Any:
        if len(args) == 3 and args[2] is False:  # a checkpoint copy's encoding (observe=False)
            raise RuntimeError("the compression pool refused a checkpoint's copy")
        return compress(self, fn, *args)

    settings = LAYOUTS[1].settings(tmp_path / "s.zarr", max_unflushed_seconds=DEADLINE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Pipeline, "compress", refuse)
        stream = az.open_stream(settings)
        _append_until_it_fails(stream, "refused a checkpoint's copy")
        closed: list[BaseException] = []

        def close() -> None:
            try:
                stream.close()
            except BaseException as exc:
                closed.append(exc)

        closer = threading.Thread(target=close)
        closer.start()
        closer.join(WAIT)
        assert not closer.is_alive(), "close() hangs on the failed checkpoint"
        assert len(closed) == 1 and "refused a checkpoint's copy" in str(closed[0])


def test_without_a_deadline_frames_wait_for_their_band(tmp_path: Path) -> None:
    settings = LAYOUTS[0].settings(tmp_path / "none.zarr", max_unflushed_seconds=None)
    with az.open_stream(settings) as stream:
        stream.append(frame(0, (37, 50)))
        time.sleep(0.5)
        assert read_zarr(tmp_path / "none.zarr" / "cam0" / "0").shape[0] == 0
        assert stream.stats().checkpoints == 0
    assert read_zarr(tmp_path / "none.zarr" / "cam0" / "0").shape[0] == 1


@pytest.mark.parametrize("value", [0, -1.0, "soon"])
def test_a_deadline_that_is_not_a_positive_number_is_refused(tmp_path: Path, value: Any) -> None:
    with pytest.raises(ConfigError, match="max_unflushed_seconds"):
        LAYOUTS[0].settings(tmp_path / "x.zarr", max_unflushed_seconds=value)


# -- a kill at any moment --------------------------------------------------------------------------
CHILD = """
import sys, time
sys.path[:0] = [{tests!r}]
import acqzarr as az
from test_durability import frame
settings = az.StreamSettings.model_validate_json(sys.argv[1])
shape = settings.arrays[0].frame_shape
stream = az.open_stream(settings)
seq = int(sys.argv[2])
while True:
    stream.append(frame(seq, shape), metadata={{"frame_id": seq}})
    print(seq, time.monotonic(), flush=True)
    seq += 1
    time.sleep(1 / {rate})
"""


def _kill_at_random(
    settings: az.StreamSettings, start: int, rate: float, seconds: tuple[float, float] = (2.0, 4.0)
) -> tuple[dict[int, float], float]:
    """Run a writer appending ``rate`` frames a second from frame ``start``; SIGKILL it at a random
    moment ``seconds`` after its first frame; return when it reported each frame accepted, and when
    it was killed (CLOCK_MONOTONIC, which the two processes share)."""
    code = CHILD.format(tests=str(REPO / "tests"), rate=rate)
    child = start_writer(code, settings, start)
    assert child.stdout is not None
    accepted: dict[int, float] = {}
    until = None  # counted from its first frame (starting Python takes a while)
    try:
        while until is None or time.monotonic() < until:
            line = child.stdout.readline()
            assert line, "the writer ended early"
            seq, at = line.split()
            accepted[int(seq)] = float(at)
            until = until or time.monotonic() + random.uniform(*seconds)
    finally:
        killed = time.monotonic()
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    return accepted, killed


KILL_LAYOUTS = [LAYOUTS[0], LAYOUTS[1], LAYOUTS[4], LAYOUTS[5]]


@pytest.mark.slow
@pytest.mark.parametrize("layout", KILL_LAYOUTS, ids=[lay.name for lay in KILL_LAYOUTS])
def test_a_kill_loses_at_most_the_frames_of_the_last_deadline(tmp_path: Path, layout: Layout) -> None:
    """A time lapse at 4 frames/s, bands of 4 (shards of 16): killed at a random moment, the store
    holds every timepoint completed more than a deadline before the kill (with a z stack and two
    channels, a timepoint is complete with its last frame), on every level, with its columns and a
    session record that agree; resumed, it goes on at the next timepoint (the frames of one the
    kill interrupted are lost, counted as skipped), and the result is one run's store."""
    random.seed(layout.name)
    deadline = 1.0
    path = tmp_path / "lapse.zarr"
    accepted, killed = _kill_at_random(layout.settings(path, max_unflushed_seconds=deadline), 0, 4.0)
    assert len(accepted) >= 6
    on_disk = read_zarr(path / "cam0" / "0")
    extent = on_disk.shape[0]
    shown = session(path, layout.version)["frames_on_disk"]  # the first `shown` frames, in order
    complete = [s for s, at in accepted.items() if at <= killed - deadline and (s + 1) % layout.per_t == 0]
    assert complete and shown > max(complete), (shown, complete, accepted, killed)
    assert shown == extent * layout.per_t  # whole timepoints only
    kept = {s: s for s in range(shown)}
    np.testing.assert_array_equal(on_disk, expected(layout, kept))
    for level, reference in enumerate(reference_pyramid(on_disk, layout.kinds, layout.levels, "mean")):
        np.testing.assert_array_equal(read_zarr(path / "cam0" / str(level)), reference)
    ids = read_zarr(path / "cam0" / "acqzarr_frames" / "frame_id")
    for seq in range(extent * layout.per_t):
        assert ids[layout.index_of(seq)] == (seq if seq < shown else -(2**63)), seq
    assert_valid(path)
    first = extent * layout.per_t  # the resumed run starts at the next timepoint
    more = range(first, first + 9)
    with az.open_stream(layout.settings(path, existing="resume")) as stream:
        for seq in more:
            stream.append(frame(seq, layout.shape[-2:]), metadata={"frame_id": seq})
    final = expected(layout, {**kept, **{s: s for s in more}})
    for got in (read_zarr(path / "cam0" / "0"), read_tensorstore(path / "cam0" / "0", layout.version)):
        np.testing.assert_array_equal(got, final)
    for level, reference in enumerate(reference_pyramid(final, layout.kinds, layout.levels, "mean")):
        np.testing.assert_array_equal(read_tensorstore(path / "cam0" / str(level), layout.version), reference)
    record = session(path, layout.version)
    assert [s["ended"] for s in record["segments"]] == ["killed", "completed"]
    assert record["frames_on_disk"] == shown + len(more)
    assert record["frames_skipped"] == final.shape[0] * layout.per_t - shown - len(more)
    assert_valid(path)


PYRAMID_LAYOUTS = [lay for lay in LAYOUTS if lay.levels > 1]


@pytest.mark.slow
@pytest.mark.parametrize("layout", PYRAMID_LAYOUTS, ids=[lay.name for lay in PYRAMID_LAYOUTS])
def test_a_writer_killed_among_many_checkpoints_leaves_every_level_the_pyramid_of_level_0(
    tmp_path: Path, layout: Layout
) -> None:
    """300 frames a second with a 10 ms deadline: a checkpoint every few frames, bands completing
    while checkpoints copy theirs.  Killed at a random moment, every level is the pyramid of what
    level 0 shows (a third of these runs had a lower level wrong before checkpoints left the planes
    of a band completed meanwhile alone)."""
    random.seed(f"many {layout.name}")
    path = tmp_path / "s.zarr"
    settings = layout.settings(path, max_unflushed_seconds=0.01)
    accepted, _killed = _kill_at_random(settings, 0, 300.0, seconds=(0.5, 1.5))
    on_disk = read_zarr(path / "cam0" / "0")
    assert on_disk.shape[0] * layout.per_t >= len(accepted) // 2, (on_disk.shape, len(accepted))
    for level, reference in enumerate(reference_pyramid(on_disk, layout.kinds, layout.levels, "mean")):
        for got in (
            read_zarr(path / "cam0" / str(level)),
            read_tensorstore(path / "cam0" / str(level), layout.version),
        ):
            np.testing.assert_array_equal(got, reference, err_msg=f"level {level}")
    assert_valid(path)


def test_a_checkpoint_copy_that_fails_to_encode_returns_its_memory(tmp_path: Path) -> None:
    """A checkpoint's copy fails in its compression task: the stream raises it, and every copy's
    output (the ones that were encoded and the failed one's) goes back to the budget."""
    from acqzarr.writers.encode import Encoder

    encode = Encoder.encode

    def fail_copies(self: Encoder, band: Any, band_coords: Any, coords: Any, observe: bool = True) -> Any:
        if not observe:  # a checkpoint copy's encoding
            raise RuntimeError("a checkpoint copy failed to encode")
        return encode(self, band, band_coords, coords, observe)

    settings = LAYOUTS[1].settings(tmp_path / "s.zarr", max_unflushed_seconds=DEADLINE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Encoder, "encode", fail_copies)
        stream = az.open_stream(settings)
        _append_until_it_fails(stream, "checkpoint copy failed")
        with pytest.raises(az.WriterError):
            stream.close()
    assert stream.memory().used == 0


@pytest.mark.parametrize("names", ["zyx", "tyx"], ids=["z-halved", "t"])
@pytest.mark.parametrize("version", [2, 3])
def test_a_band_completed_while_a_checkpoint_copies_keeps_its_lower_levels(
    tmp_path: Path, version: int, names: str
) -> None:
    """A checkpoint takes copies of the open bands under the lock and copies their frames after it,
    while the appender goes on.  A frame that completes one of those bands meanwhile is reduced into
    the lower levels before the checkpoint's copies are, so its planes there are final: the
    checkpoint's stale copy of them (made from the band as it was) must not be written over them.
    It was, and a pyramid level then kept one plane made of one frame and a hole (seen killing
    writers with a deadline: a lower level wrong below the published extent)."""
    from acqzarr.writers.bands import BandAssembler

    path, reference = tmp_path / "s.zarr", tmp_path / "one.zarr"
    with az.open_stream(pyramid_settings(reference, version, names)) as one:
        for seq in range(24):
            one.append(frame(seq, (20, 24)))
    copy_frames = BandAssembler.copy_frames
    with az.open_stream(pyramid_settings(path, version, names)) as stream:
        for seq in range(15):  # the band of frames 14 and 15 holds 14
            stream.append(frame(seq, (20, 24)))
        completed = []

        def copy_then_complete(self: BandAssembler, band: Any, copy: Any) -> None:
            copy_frames(self, band, copy)
            if not completed:  # the appender, while the checkpoint copies: the band completes
                completed.append(15)
                stream.append(frame(15, (20, 24)))

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(BandAssembler, "copy_frames", copy_then_complete)
            assert stream._images["cam0"].checkpoint()
        assert completed == [15]
        for seq in range(16, 24):
            stream.append(frame(seq, (20, 24)))
    for level in range(3):
        expected = read_zarr(reference / "cam0" / str(level))
        for got in (
            read_zarr(path / "cam0" / str(level)),
            read_tensorstore(path / "cam0" / str(level), version),
        ):
            np.testing.assert_array_equal(got, expected, err_msg=f"level {level}")
