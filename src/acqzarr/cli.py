"""The ``acqzarr`` command."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._version import __version__
from .engine.stream import open_stream
from .errors import (
    EXIT_CONFIG,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    AcqzarrError,
    ConfigError,
    StoreError,
)
from .ingest.commands import add_subcommands as add_ingest_subcommands
from .metadata.zarr_versions import spec_for
from .recording.synthetic import camera_frames
from .settings import ArraySettings, Blosc, Dimension, S3Settings, StreamSettings
from .settings.overrides import add_set_argument, parse_assignment
from .stores import Store, open_store

__all__ = ["main"]


def _record(args: argparse.Namespace) -> int:
    """Run a recording session from a config file (see configs/)."""
    import json

    from .recording.command import SessionConfig, estimate, load_session, record

    def may_write(config: SessionConfig) -> None:
        if not args.dry_run:
            # A store to resume is checked by the stream: compatible, or refused untouched.
            _refuse_existing(
                config.store,
                config.on_existing != "error",
                "--set overwrite=true",
                config.s3,
                resume=", or --resume to continue it",
            )

    # --resume wins over the config's overwrite (the shipped configs say overwrite: true).
    sets = [*args.set, "overwrite=false", "existing=resume"] if args.resume else args.set
    config, cameras = load_session(args.config, sets, frames=args.frames, output=args.output, check=may_write)
    if args.dry_run:
        resolved = json.loads(config.model_dump_json())
        print(json.dumps({"config": resolved, "estimate": estimate(config, cameras)}, indent=2))
        return EXIT_OK
    sessions = record(config, cameras)
    for src, session in zip(config.sources, sessions, strict=True):
        print(
            f"recorded {session['frames_on_disk']} frames from {src.driver} into "
            f"{config.store}{'/' + src.key if src.key else ''} (dropped by the source: "
            f"{session['frames_dropped']})"
            + (f"; interrupted by {session['interrupted']}" if session["interrupted"] else "")
        )
        if session["dropped_reason"]:
            print(f"  {session['dropped_reason']}")
    return EXIT_INTERRUPTED if sessions and sessions[0]["interrupted"] else EXIT_OK


def _refuse_existing(
    location: str, overwrite: bool, flag: str, s3: S3Settings | None = None, resume: str = ""
) -> None:
    """Refuse an existing store now, naming the command-line flag, before any work: the stream
    refuses it too, but only once it opens, after the camera set-up (5.3 s for the first
    command), and in the Python API's words (``overwrite=True``)."""
    if overwrite:
        return
    store = open_store(location, direct_io=False, s3=s3)
    if not store.is_empty():
        raise StoreError(f"{store.describe()}: already exists; pass {flag} to replace it{resume}")


def _s3_settings(items: Sequence[str]) -> S3Settings:
    """``--s3 endpoint=http://127.0.0.1:8333 --s3 allow_http=true``: the s3 section, from the command line."""
    values = dict(parse_assignment(item, "--s3") for item in items)
    return S3Settings.from_mapping(values, source="--s3", prefix="s3")


def _open_existing(location: str, s3: Sequence[str]) -> Store:
    store = open_store(location, direct_io=False, s3=_s3_settings(s3))
    if store.is_empty():
        raise StoreError(errno.ENOENT, f"no Zarr store at {store.describe()}")
    return store


def _info(args: argparse.Namespace) -> int:
    """Print the arrays, images, codecs, sizes and session records of a store."""
    import json

    from .read.info import describe, render

    info = describe(_open_existing(args.store, args.s3))
    if info["zarr_format"] is None:
        raise StoreError(errno.EINVAL, f"{args.store}: no Zarr metadata (zarr.json, .zgroup or .zarray)")
    print(json.dumps(info, indent=2) if args.json else render(info))
    return EXIT_OK


def _validate(args: argparse.Namespace) -> int:
    """Check structure, shard indexes and OME-NGFF metadata; exit 1 if anything is wrong."""
    import json

    from .read.validate import validate

    problems = validate(_open_existing(args.store, args.s3), deep=args.deep)
    errors = [p for p in problems if p.severity == "error"]
    if args.json:
        print(json.dumps([p.__dict__ for p in problems], indent=2))
    else:
        for p in problems:
            print(p)
        print(
            f"{args.store}: {'valid' if not errors else 'INVALID'} ({len(errors)} errors, "
            f"{len(problems) - len(errors)} warnings{', every chunk decoded' if args.deep else ''})"
        )
    return EXIT_RUNTIME if errors else EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    """Record a simulated camera into an OME-Zarr store and print what was written."""
    _refuse_existing(args.output, args.overwrite, "--overwrite")
    size = args.size
    spec = spec_for(args.version)
    shard = 4 if spec.sharded else 1
    settings = StreamSettings(
        store=args.output,
        version=args.version,
        overwrite=args.overwrite,
        arrays=[
            ArraySettings(
                key="cam0",
                dtype="uint16",
                dimensions=[
                    Dimension(name="t", kind="time", size=0, chunk=32, unit="millisecond", scale=10.0),
                    *(
                        Dimension(
                            name=axis,
                            kind="space",
                            size=size,
                            chunk=256,
                            shard=shard,
                            unit="micrometer",
                            scale=0.65,
                        )
                        for axis in "yx"
                    ),
                ],
                compression=Blosc(cname="lz4", clevel=1, shuffle="byte"),
            )
        ],
    )
    pool = camera_frames(min(args.frames, 16), (size, size))
    t0 = time.perf_counter()
    with open_stream(settings) as stream:
        for i in range(args.frames):
            stream.append(pool[i % len(pool)])
    elapsed = time.perf_counter() - t0
    stats = stream.stats()
    raw = args.frames * size * size * 2
    print(
        f"wrote {stats.frames_flushed} frames of {size}x{size} uint16 to {args.output} "
        f"(Zarr v{args.version}, OME-NGFF {spec.ngff_version}) in {elapsed:.2f} s: "
        f"{raw / elapsed / 1e6:.0f} MB/s, {args.frames / elapsed:.0f} frames/s, "
        f"{stats.bytes_written / 1e6:.1f} MB on disk (ratio {raw / max(stats.bytes_written, 1):.2f})"
    )
    return EXIT_OK


def _size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` (image_size_x by image_size_y, as DECTRIS names a 1M: 1028x1062)."""
    width, sep, height = text.lower().partition("x")
    if not (sep and width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 1028x1062")
    return int(width), int(height)


def _simulate_detector(args: argparse.Namespace) -> int:
    """Send series of EIGER-like frames over DECTRIS Stream V2 or V1 (``acqzarr_drivers.dectris``)."""
    from acqzarr_drivers.dectris import DetectorSimulator, DetectorSimulatorOptions
    from pydantic import ValidationError

    from .settings import format_validation_error

    width, height = args.size
    try:
        options = DetectorSimulatorOptions(
            protocol=args.protocol,
            bind=args.bind,
            frames=args.frames,
            width=width,
            height=height,
            dtype=args.dtype,
            channels=args.channels,
            fps=args.fps,
            series=args.series,
            series_id=args.series_id,
            compression=args.compression,
            header_detail=args.header_detail,
            pool=args.pool,
            seed=args.seed,
            connect_timeout=args.connect_timeout,
        )
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "simulate-detector")) from None
    sim = DetectorSimulator(options, say=lambda line: print(line, flush=True))
    report = sim.run()
    seconds = max(report.seconds, 1e-9)
    print(
        f"sent {report.images} images in {report.series} series in {report.seconds:.2f} s "
        f"({report.images / seconds:.1f} fps, {report.raw_bytes / seconds / 1e6:.0f} MB/s of pixels, "
        f"{report.wire_bytes / seconds / 1e6:.0f} MB/s on the wire)"
        + (f"; {report.late} images late (the receiver held the socket back)" if report.late else ""),
        flush=True,
    )
    return EXIT_OK


def _add_simulate_detector(sub: Any) -> None:
    sim = sub.add_parser(
        "simulate-detector",
        help="act as a DECTRIS detector: send EIGER-like series over Stream V2 (or V1) to a receiver",
        description="Bind a ZeroMQ PUSH socket as a DECTRIS detector does, wait for a receiver (e.g. "
        "acqzarr serve with a detectors: input) and send series of photon-counting frames; "
        "see docs/detectors.md.",
    )
    sim.add_argument("--protocol", choices=("dectris-stream2", "dectris-stream1"), default="dectris-stream2")
    sim.add_argument(
        "--bind", help="endpoint to bind (default tcp://127.0.0.1:31001 for V2, tcp://127.0.0.1:9999 for V1)"
    )
    sim.add_argument("--frames", type=int, default=100, help="images per series (default: 100)")
    sim.add_argument(
        "--size", type=_size, default=(1028, 1062), help="WIDTHxHEIGHT in pixels (default: 1028x1062, a 1M)"
    )
    sim.add_argument("--dtype", choices=("uint8", "uint16", "uint32"), default="uint32")
    sim.add_argument("--channels", type=int, default=1, help="threshold channels (V2: 1-4; V1: 1)")
    sim.add_argument("--fps", type=float, help="frame rate (default: as fast as the receiver takes them)")
    sim.add_argument("--series", type=int, default=1, help="series to send (default: 1)")
    sim.add_argument("--series-id", type=int, default=1, help="series_id of the first series (default: 1)")
    sim.add_argument("--compression", choices=("bslz4", "lz4", "none"), default="bslz4")
    sim.add_argument(
        "--header-detail",
        choices=("all", "basic", "none"),
        default="all",
        help="all (default): the start carries pixel masks, flatfields and the count-rate table",
    )
    sim.add_argument("--pool", type=int, default=4, help="distinct frames, generated once (default: 4)")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument(
        "--connect-timeout", type=float, help="seconds to wait for a receiver (default: wait forever)"
    )
    sim.set_defaults(func=_simulate_detector)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="acqzarr", description=__doc__)
    p.add_argument("--version", action="version", version=f"acqzarr {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="record a simulated camera to a local OME-Zarr store")
    demo.add_argument("--output", default="demo.zarr", help="store path (default: demo.zarr)")
    demo.add_argument("--frames", type=int, default=256, help="frames to record (default: 256)")
    demo.add_argument("--size", type=int, default=2048, help="frame height and width (default: 2048)")
    demo.add_argument("--version", type=int, choices=(2, 3), default=3, help="Zarr format (default: 3)")
    demo.add_argument("--overwrite", action="store_true", help="replace an existing store")
    demo.set_defaults(func=_demo)
    rec = sub.add_parser("record", help="record a session described by a YAML/JSON config file")
    rec.add_argument("config", help="session config: StreamSettings fields plus a source: section")
    add_set_argument(rec, "source.frames=100")
    rec.add_argument(
        "--dry-run", action="store_true", help="print the resolved config and estimates, then exit"
    )
    rec.add_argument("--frames", type=int, help="frames to record (overrides source.frames)")
    rec.add_argument("--output", help="store path (overrides store)")
    rec.add_argument(
        "--resume",
        action="store_true",
        help="continue the store where it stops (a recording that was interrupted, or closed); "
        "the same as --set overwrite=false --set existing=resume; a store that does not exist is started",
    )
    rec.set_defaults(func=_record)
    info = sub.add_parser("info", help="arrays, shapes, chunks, codecs, ratio, frames and session record")
    info.add_argument("--json", action="store_true", help="print JSON instead of text")
    info.set_defaults(func=_info)
    val = sub.add_parser("validate", help="check a store's structure, shard indexes and OME-NGFF metadata")
    val.add_argument("--deep", action="store_true", help="also decode every chunk (reads the whole store)")
    val.add_argument("--json", action="store_true", help="print the problems as JSON")
    val.set_defaults(func=_validate)
    for reader in (info, val):
        reader.add_argument("store", help="the store: a path or s3://bucket/prefix")
        reader.add_argument(
            "--s3",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="an s3 setting for s3:// stores, e.g. --s3 endpoint=http://127.0.0.1:8333 "
            "--s3 allow_http=true",
        )
    add_ingest_subcommands(sub)  # serve, send, status
    _add_simulate_detector(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except AcqzarrError as exc:
        print(f"acqzarr: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG if isinstance(exc, ConfigError) else EXIT_RUNTIME
    except BrokenPipeError:  # `acqzarr info STORE | head`: the reader left; nothing is wrong
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush does not fail too
        return EXIT_OK
    return code


if __name__ == "__main__":
    raise SystemExit(main())
