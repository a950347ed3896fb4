"""The ``acqzarr`` command."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import time
from collections.abc import Sequence

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
