"""Memory follows the band, not the volume: a deep z-stack streams in a few bands of memory.

Measured in a child process (so the peak resident set, VmHWM, is this
stream's alone), against the process's own baseline taken just before the
stream opens.  Timings are the benchmark's job; memory is a bound, so it is
asserted here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from acqzarr.engine.memory import MIN_DEFAULT_CAP, plan_memory
from builders import stream_settings

PLANES, SIZE, CHUNK_Z = 512, 512, 32
BAND = CHUNK_Z * SIZE * SIZE * 2  # one band: 32 planes of 512x512 uint16 = 16 MiB

CHILD = """
import json, sys
import numpy as np
import acqzarr as az

path, version, planes, size, chunk_z = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:6])
shard = 4 if version == 3 else 1

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) * 1024

settings = az.StreamSettings(store=path, version=version, arrays=[az.ArraySettings(
    dtype=np.uint16,
    dimensions=[
        az.Dimension(name="t", kind="time", size=0, chunk=1),
        az.Dimension(name="z", kind="space", size=planes, chunk=chunk_z, shard=shard),
        az.Dimension(name="y", kind="space", size=size, chunk=128, shard=shard),
        az.Dimension(name="x", kind="space", size=size, chunk=128, shard=shard),
    ])])
yy, xx = np.mgrid[0:size, 0:size]
base = ((yy + xx) * 3 % 4000).astype(np.uint16)
noise = np.random.default_rng(0).integers(0, 16, (size, size), dtype=np.uint16)
frame = base + noise
del yy, xx
baseline = status("VmRSS")
open("/proc/self/clear_refs", "w").write("5")  # VmHWM restarts from here
with az.open_stream(settings) as stream:
    for t in range(2):
        for z in range(planes):
            np.add(base, noise, out=frame)
            frame += z + t  # every plane differs; no new memory
            stream.append(frame)
    during = stream.memory()
print(json.dumps({"baseline": baseline, "peak": status("VmHWM"), "cap": during.cap,
                  "reserved_peak": during.peak, "required": during.required}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("version", [2, 3])
def test_a_deep_z_stack_streams_in_a_few_bands_of_memory(tmp_path: Path, version: int) -> None:
    """(t, z, y, x) with 512 planes per timepoint, chunk z 32 (v3: shards of 4 chunks along z, so a
    shard spans 4 bands): the peak resident memory grows by less than the default cap (4 bands, or
    the floor for small bands: 16 of these), never by more than the engine's own reservation
    says, and the cap does not depend on the number of planes."""
    path = tmp_path / "z.zarr"
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(version), str(PLANES), str(SIZE), str(CHUNK_Z)],
        capture_output=True,
        text=True,
        check=True,
        timeout=240,
    )
    m = json.loads(out.stdout)
    grown = m["peak"] - m["baseline"]
    assert m["required"] < 3 * BAND, m  # a band and its worst-case encoding: not the volume
    assert m["cap"] == max(2 * m["required"], MIN_DEFAULT_CAP), m
    assert grown <= m["reserved_peak"] + (4 << 20), m  # the reservation bounds what is resident
    assert m["reserved_peak"] <= m["cap"], m
    stored = zarr.open_array(str(path / "0"), mode="r")
    assert stored.shape == (2, PLANES, SIZE, SIZE)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    base = ((yy + xx) * 3 % 4000).astype(np.uint16)
    noise = np.random.default_rng(0).integers(0, 16, (SIZE, SIZE), dtype=np.uint16)
    for t, z in [(0, 0), (0, 255), (1, 511)]:
        np.testing.assert_array_equal(stored[t, z], base + noise + np.uint16(z + t))


def test_the_default_cap_is_twice_the_need_and_never_below_the_floor(tmp_path: Path) -> None:
    """Big bands: twice what the order needs.  Small bands (a 512x512 frame is one shard, one
    compression task a band): at least MIN_DEFAULT_CAP, so several bands compress at once."""
    big = plan_memory(stream_settings(tmp_path / "big", 3, (0, 2048, 2048), (32, 256, 256), shards=(1, 4, 4)))
    small = plan_memory(
        stream_settings(tmp_path / "small", 3, (0, 512, 512), (32, 128, 128), shards=(1, 4, 4))
    )
    assert big.default_cap == 2 * big.required > MIN_DEFAULT_CAP
    assert 2 * small.required < MIN_DEFAULT_CAP == small.default_cap
