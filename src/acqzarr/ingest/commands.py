"""``acqzarr serve``, ``acqzarr send`` and ``acqzarr status``: argument parsing and the thin glue.

Registered by the ``acqzarr`` command through ``add_subcommands``; exit codes
mean what they mean for ``acqzarr record`` (0 ok, 1 runtime error, 2 config
error), except that a server stopped by SIGINT/SIGTERM has done its job and
exits 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from ..errors import EXIT_OK, EXIT_RUNTIME, ConfigError
from ..metadata.zarr_versions import spec_for
from ..settings import format_validation_error, load_mapping
from ..settings.overrides import add_set_argument, parse_assignment

if TYPE_CHECKING:
    from .sender import Sender

__all__ = ["add_subcommands"]

# What to do about a refused series, in the command's words.
_REFUSAL_HINTS = {
    "series_exists": "choose another --series-id, pass --resume to continue its store (or set overwrite: "
    "true in the server's config)",
    "resume": "send it with the settings the store was written with, or choose another --series-id",
    "version": "the server is older than this sender; upgrade it to resume a series",
    "busy": "the server holds max_open_series series already; send again once one has ended",
}


def _serve(args: argparse.Namespace) -> int:
    from .config import load_serve_config
    from .server import serve

    config = load_serve_config(args.config, args.set)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    serve(config)
    return EXIT_OK


def _default_settings(shape: tuple[int, ...], dtype: Any, key: str, version: int) -> dict[str, Any]:
    """A sensible series for a camera: time-chunked by 32, 256-pixel tiles, 4x4-chunk shards, lz4."""
    axes = []
    for name, size in zip("yx", shape, strict=True):
        chunk = min(256, size)
        shard = min(4, math.ceil(size / chunk)) if spec_for(version).sharded else 1
        axes.append({"name": name, "kind": "space", "size": size, "chunk": chunk, "shard": shard})
    return {
        "version": version,
        "arrays": [
            {
                "key": key,
                "dtype": np.dtype(dtype).name,
                "dimensions": [{"name": "t", "kind": "time", "size": 0, "chunk": 32}, *axes],
                "compression": {"cname": "lz4", "clevel": 1, "shuffle": "byte"},
            }
        ],
    }


def _send(args: argparse.Namespace) -> int:
    import acqzarr_drivers

    from .sender import CurveClient, Sender
    from .status import SeriesRejected

    options: dict[str, Any] = dict(parse_assignment(item, "--option", "name=value") for item in args.option)
    try:
        camera = acqzarr_drivers.create(args.driver, options)
    except KeyError as exc:
        raise ConfigError(f"--driver: {exc.args[0]}") from None
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, f"--option ({args.driver})")) from None
    settings: dict[str, Any] | None = None
    if args.preset is None:
        if args.settings is not None:
            settings = load_mapping(args.settings)
            if not isinstance(settings, dict):
                raise ConfigError(f"{args.settings}: the top level must be a mapping")
        else:
            settings = _default_settings(camera.shape, camera.dtype, args.key, args.version)
    curve = None
    if args.curve_secret or args.curve_server_key:
        if not (args.curve_secret and args.curve_server_key):
            raise ConfigError("--curve-secret and --curve-server-key go together")
        curve = CurveClient(args.curve_secret, args.curve_server_key)
    series_id = args.series_id or f"{args.driver.replace('.', '-')}-{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}"
    t0 = time.perf_counter()
    with Sender(
        args.endpoint,
        socket=args.socket,
        encoding=args.encoding,
        timeout=args.timeout,
        curve=curve,
        status_endpoint=args.status,
    ) as sender:
        try:
            _send_series(args, camera, sender, series_id, settings)
        except SeriesRejected as exc:
            hint = _REFUSAL_HINTS.get(exc.reason)
            raise SeriesRejected(
                exc.series_id,
                exc.reason,
                f"{exc.detail}{f'; {hint}' if hint else ''} ({sender.sent} frames sent before it was heard)",
            ) from None
    elapsed = time.perf_counter() - t0
    frame_bytes = math.prod(camera.shape) * np.dtype(camera.dtype).itemsize
    print(
        f"sent {sender.sent} frames of series {series_id!r} to {args.endpoint} in {elapsed:.2f} s "
        f"({sender.sent / elapsed:.1f} fps, {sender.sent * frame_bytes / elapsed / 1e6:.0f} MB/s raw); "
        f"dropped by the socket: {sender.dropped}, by the camera: {camera.dropped}"
    )
    if sender.summary is not None:
        s = sender.summary
        print(
            f"server: {'complete' if s['completed'] else 'INCOMPLETE'} ({s['end']}), {s['frames_total']} "
            f"frames, {s['gaps']} gaps, rejected {s['rejected'] or 'none'} -> {s['store']}"
            f"{' (resumed)' if s.get('resumed') else ''}{_error(s)}"
        )
        return EXIT_OK if s["completed"] else EXIT_RUNTIME
    return EXIT_OK


def _send_series(
    args: argparse.Namespace, camera: Any, sender: Sender, series_id: str, settings: dict[str, Any] | None
) -> None:
    """One series of the camera's frames: start, frames until ``--frames`` or the driver ends, end."""
    sender.start_series(
        series_id, settings, preset=args.preset, user_data={"driver": args.driver}, resume=args.resume
    )
    camera.start()
    try:
        while args.frames is None or sender.sent + sender.dropped < args.frames:
            buf = sender.acquire(camera.shape, camera.dtype)
            info = camera.read_into(buf)
            if info is None:
                break
            sender.send(
                buf,
                key=args.key,
                frame_id=info.frame_id,
                timestamp_ns=info.timestamp_ns,
                dropped_before=info.dropped_before,
            )
    finally:
        camera.stop()
    sender.end_series(user_data={"camera_dropped": int(camera.dropped)})


def _status(args: argparse.Namespace) -> int:
    from .status import format_line, query

    snap = query(args.endpoint, args.timeout)
    if args.json:
        print(json.dumps(snap, indent=2))
        return EXIT_OK
    print(format_line(snap))
    for s in snap["recent_series"]:
        state = "complete" if s["completed"] else "INCOMPLETE"
        print(
            f"  {s['series_id']}: {state} ({s['end']}), {s['frames_total']} frames, {s['gaps']} gaps, "
            f"rejected {s['rejected'] or 'none'} -> {s['store']}{_error(s)}"
        )
    return EXIT_OK


def _error(summary: dict[str, Any]) -> str:
    """How a series' finalize failed, if it did (the store is then incomplete)."""
    return f"; finalizing failed: {summary['error']}" if "error" in summary else ""


def add_subcommands(sub: Any) -> None:
    """Add serve, send and status to the ``acqzarr`` argument parser's subparsers."""
    srv = sub.add_parser("serve", help="receive frames over ZeroMQ and write one store per series")
    srv.add_argument("config", help="server config (YAML/JSON); see docs/protocol.md")
    add_set_argument(srv, "root=/data")
    srv.set_defaults(func=_serve)

    snd = sub.add_parser("send", help="stream a driver's frames to an acqzarr serve endpoint")
    snd.add_argument("--driver", required=True, help="registered driver name, e.g. simulated.noise")
    snd.add_argument(
        "--option", action="append", default=[], metavar="NAME=VALUE", help="driver option (YAML value)"
    )
    snd.add_argument("--frames", type=int, help="frames to send (default: until the driver ends)")
    snd.add_argument("--endpoint", default="tcp://127.0.0.1:5555", help="server endpoint (tcp:// or ipc://)")
    snd.add_argument("--socket", choices=("push", "pub"), default="push", help="push (lossless) or pub")
    snd.add_argument("--encoding", choices=("raw", "blosc2"), default="raw", help="payload encoding")
    snd.add_argument("--series-id", help="series id (default: DRIVER-UTCTIME)")
    snd.add_argument("--key", default="cam0", help="array key of the frames (default: cam0)")
    snd.add_argument(
        "--resume",
        action="store_true",
        help="continue the series' store on the server if it exists (same --series-id and settings; "
        "protocol 1.1): the frames go on after those it holds; a store that does not exist is started",
    )
    group = snd.add_mutually_exclusive_group()
    group.add_argument(
        "--settings", help="stream settings file (StreamSettings fields without store, overwrite, s3)"
    )
    group.add_argument("--preset", help="name of settings in the server's presets")
    snd.add_argument(
        "--version", type=int, choices=(2, 3), default=3, help="Zarr format without --settings (default: 3)"
    )
    snd.add_argument("--timeout", type=float, default=60.0, help="seconds a send may block (default: 60)")
    snd.add_argument(
        "--status",
        metavar="ENDPOINT",
        help="the server's status endpoint: stop with the server's reason if it refuses the series, "
        "and wait until it has finalized the series and report it",
    )
    snd.add_argument("--curve-secret", help="this sender's CURVE certificate (.key_secret)")
    snd.add_argument("--curve-server-key", help="the server's public CURVE certificate (.key)")
    snd.set_defaults(func=_send)

    st = sub.add_parser("status", help="print the live counters of an acqzarr serve status endpoint")
    st.add_argument("endpoint", help="the server's status_endpoint")
    st.add_argument("--json", action="store_true", help="print the full JSON answer")
    st.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer (default: 5)")
    st.set_defaults(func=_status)
