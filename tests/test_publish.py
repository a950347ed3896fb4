"""ImagePublisher and PublishPacer: when an image's stored bands become visible, and what bounds
the cost of showing them when a stream has many images.

The clocks are the publish module's own (``time.monotonic`` for the interval and the pacing,
``time.thread_time`` for what a publish cost), replaced by a fake so that every rule is checked
exactly, without timing anything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import acqzarr as az
import acqzarr.engine.publish as publish
from acqzarr.engine.publish import ImagePublisher, PublishPacer
from acqzarr.writers.layout import ArrayLayout
from acqzarr.writers.objects import StoredBand
from builders import dims


@dataclass
class Clock:
    now: float = 100.0
    cpu: float = 0.0

    def monotonic(self) -> float:
        return self.now

    def thread_time(self) -> float:
        return self.cpu


@dataclass
class Documents:
    """What a publish writes, and what it costs: ``cost`` seconds of the fake clock's CPU."""

    clock: Clock
    cost: float
    shown: list[tuple[list[int], int]] = field(default_factory=list)

    def publish(self, extents: list[int], frames: int) -> None:
        self.clock.cpu += self.cost
        self.shown.append((extents, frames))


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(publish.time, "monotonic", fake.monotonic)
    monkeypatch.setattr(publish.time, "thread_time", fake.thread_time)
    return fake


def layout() -> ArrayLayout:
    """(t, y, x) with one frame per band: every stored band is one more step to show."""
    settings = az.ArraySettings(key="a", dtype="uint16", dimensions=dims((0, 8, 8), (1, 8, 8), None))  # type: ignore[arg-type]
    return ArrayLayout(settings, sharded=False)


def publisher(clock: Clock, pacer: PublishPacer, cost: float) -> tuple[ImagePublisher, Documents]:
    docs = Documents(clock, cost)
    return ImagePublisher(docs, [layout()], halved_append=False, pacer=pacer), docs


def test_a_publish_holds_back_the_next_for_its_cost_over_the_share(clock: Clock) -> None:
    pacer = PublishPacer()
    assert pacer.wait() <= 0
    pacer.spent(0.004)
    assert pacer.wait() == pytest.approx(0.004 * (1 / publish.PUBLISH_SHARE - 1))
    clock.now += 0.004 * (1 / publish.PUBLISH_SHARE - 1) + 1e-6
    assert pacer.wait() <= 0


def test_one_image_publishes_every_interval_while_bands_are_stored(clock: Clock) -> None:
    pub, docs = publisher(clock, PublishPacer(), cost=0.0)
    pub.stored(0, [StoredBand((0, 0, 0), 1)])
    assert docs.shown == [([1], 1)]  # the first stored band: nothing published before
    pub.stored(0, [StoredBand((1, 0, 0), 1)])
    assert len(docs.shown) == 1  # within the interval: coalesced
    assert pub.catch_up() == pytest.approx(publish.PUBLISH_INTERVAL)
    clock.now += publish.PUBLISH_INTERVAL + 1e-6
    pub.stored(0, [StoredBand((2, 0, 0), 1)])
    assert docs.shown[-1] == ([3], 3)


def test_images_of_one_stream_share_the_publishing_budget(clock: Clock) -> None:
    """However many images, paced publishes take at most PUBLISH_SHARE of the CPU time: the
    images wait their turn; a flush and the final extent never wait."""
    cost = 0.02  # each publish: 20 ms of CPU, so 0.4 s between publishes at 5%
    pacer = PublishPacer()
    images = [publisher(clock, pacer, cost) for _ in range(4)]
    gap = cost * (1 / publish.PUBLISH_SHARE - 1)
    for pub, _docs in images:
        pub.stored(0, [StoredBand((0, 0, 0), 1)])
    assert [len(d.shown) for _p, d in images] == [1, 0, 0, 0]  # the first took the budget
    waits = [p.catch_up() for p, _d in images[1:]]
    assert waits == [pytest.approx(gap)] * 3

    published = 1
    for _ in range(40):  # two seconds of stored bands: every image keeps storing
        clock.now += 0.05
        for pub, _docs in images:
            pub.catch_up()
        published = sum(len(d.shown) for _p, d in images)
    assert clock.cpu == pytest.approx(published * cost)
    assert clock.cpu <= publish.PUBLISH_SHARE * 2.0 + cost  # the share of the 2 s, within a publish
    assert all(d.shown for _p, d in images)  # and every image got its turn

    before = [len(d.shown) for _p, d in images]
    for k, (pub, _docs) in enumerate(images):
        pub.stored(0, [StoredBand((1, 0, 0), 1)])
        pub.catch_up(now=True)  # a flush: never held back
        assert len(images[k][1].shown) == before[k] + 1
    assert pacer.wait() > 0


def test_the_final_extent_is_published_at_once(clock: Clock) -> None:
    pacer = PublishPacer()
    pacer.spent(1.0)  # a long hold-off
    pub, docs = publisher(clock, pacer, cost=0.0)
    pub.set_final(2)
    pub.stored(0, [StoredBand((0, 0, 0), 1)])
    assert docs.shown == []
    pub.stored(0, [StoredBand((1, 0, 0), 1)])
    assert docs.shown == [([2], 2)]


def test_pacing_never_holds_a_publish_past_its_max_wait(clock: Clock) -> None:
    """A publish that cost 0.1 s (a stalled disk) would hold the next for 1.9 s at a 5% share, long
    enough for a durability deadline of 4 s to write a checkpoint (a frame a second unreadable): the
    hold stops at ``max_wait`` (a stream gives an eighth of its deadline)."""
    pacer = PublishPacer(max_wait=0.5)
    pacer.spent(0.1)
    assert pacer.wait() == pytest.approx(0.5)
    pacer.spent(0.001)  # a cheap one after it does not shorten the hold
    assert pacer.wait() == pytest.approx(0.5)
    clock.now += 0.5 + 1e-6
    assert pacer.wait() <= 0
    assert PublishPacer().max_wait == publish.PUBLISH_MAX_WAIT


def test_a_stream_paces_its_publishes_within_an_eighth_of_its_deadline(tmp_path: Path) -> None:
    def pacer_of(**settings: Any) -> PublishPacer:
        array = az.ArraySettings(key="a", dtype="uint16", dimensions=dims((0, 8, 8), (1, 8, 8), None))  # type: ignore[arg-type]
        with az.open_stream(
            az.StreamSettings(store=str(tmp_path / "s.zarr"), overwrite=True, arrays=[array], **settings)
        ) as stream:
            pacer: PublishPacer = stream._pacer
        return pacer

    assert pacer_of(max_unflushed_seconds=2.0).max_wait == pytest.approx(0.25)
    assert pacer_of(max_unflushed_seconds=60.0).max_wait == publish.PUBLISH_MAX_WAIT
    assert pacer_of(max_unflushed_seconds=None).max_wait == publish.PUBLISH_MAX_WAIT
