"""Write issue 16's figures into docs/performance.md and README.md from one targets run.

    python benchmarks/performance_doc.py                    # from benchmarks/last-run-targets.json
    python benchmarks/performance_doc.py --json run.json    # from another report of targets.py
    python benchmarks/performance_doc.py --check            # exit 1 if the files differ from the JSON
    python benchmarks/performance_doc.py --stdout           # print both blocks, write nothing

Only the blocks between ``<!-- targets.py: begin -->`` and ``<!-- targets.py: end -->`` are
rewritten: the whole targets section in docs/performance.md, a short summary in the README. The
sections around them (``stream.py``'s tables of acqzarr beside acquire-zarr and tensorstore,
z-stacks, S3) are left as they are. Every figure in the blocks comes from the JSON; a ``--quick``
report says it is a check of the harness, and with no report the blocks say how to make one.
``targets.py`` prints the same section (``targets_markdown``) when a run ends.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_JSON = HERE / "last-run-targets.json"
DOC = REPO / "docs" / "performance.md"
README = REPO / "README.md"
BEGIN, END = "<!-- targets.py: begin -->", "<!-- targets.py: end -->"
RUN = "python benchmarks/targets.py --repeat 3 --against <rev>"

Report = dict[str, Any]
Entry = dict[str, Any]


# -- small formats ---------------------------------------------------------------------
def _gb(n: float | None) -> str:
    return f"{n / 1e9:.2f}" if n else "-"


def _mib(n: float | None) -> str:
    return f"{n / 2**20:.0f}" if n is not None else "-"


_GOAL_TEXT = {
    "x_ref": lambda op, v: f"{op} {v:g}x",
    "fps": lambda op, v: f"{op} {v:g} frames/s",
    "p99": lambda op, v: f"p99 {op} {v:g} ms",
    "memory": lambda op, v: "RSS growth <= cap" if v == 1 else f"RSS growth {op} {v:g}x cap",
    "cpu_x_ref": lambda op, v: f"CPU/frame {op} {v:g}x reference's",
}


def goals_text(goals: list[dict[str, Any]]) -> str:
    """``>= 0.6x: met; RSS growth <= cap: met`` for a row's judged goals (see targets.judge)."""
    parts = [
        f"{_GOAL_TEXT[g['figure']](g['op'], g['value'])}: {'met' if g['met'] else '**not met**'}"
        + (f" ({g['got']:.2f}x)" if g["figure"] == "cpu_x_ref" and g.get("got") is not None else "")
        for g in goals
    ]
    return "; ".join(parts) or "-"


def _header(report: Report, command: bool = True) -> str:
    """Where, when, which commits, how many runs (and, for the doc, the command that ran)."""
    sides = report["sides"]
    against = f" against {sides['old']['rev']}" if "old" in sides else ""
    ran = f"; `{report['command']}`" if command and "command" in report else ""
    quick = " **--quick: a check of the harness, not a result.**" if report.get("quick") else ""
    return (
        f"{report['machine']}, {report['date']}; commit {sides['new']['rev']}{against}; medians of "
        f"{report['repeat']} run(s) per row{ran}.{quick}"
    )


# -- the rows ----------------------------------------------------------------------------
def _memory_cell(m: dict[str, Any]) -> str:
    """Peak RSS, what the run added to it, and the in-flight cap that addition is judged against."""
    growth = m["peak_rss"] - m.get("start_rss", 0)
    cap = (m.get("engine") or {}).get("cap")
    return f"{_mib(m['peak_rss'])} (+{_mib(growth)}) / {_mib(cap) if cap else '-'}"


def _latency_cell(m: dict[str, Any], f: dict[str, Any]) -> str:
    """p50 of the median run / p99 judged (the median of the runs' p99s), with their range."""
    if "p99" not in m:
        return "-"
    p99s = m.get("p99s") or [m["p99"]]
    p99 = f.get("p99", m["p99"])
    spread = f" ({p99s[0]:.1f}-{p99s[-1]:.1f})" if len(p99s) > 1 else ""
    return f"{m['p50']:.2f} / {p99:.1f}{spread}"


def _row_cells(e: Entry, against: bool) -> list[str]:
    m, f = e["median"]["new"], e["figures"]["new"]
    ref = f"{e['ref']} {_gb(f['ref_rate'])}" if e["ref"] else "-"
    cells = [
        f"`{e['name']}`",
        e["what"],
        _gb(f["value"]),
        f"{m['fps']:.0f}",
        ref,
        _ratio_cell(e, f),
        goals_text(f["goals"]),
        f"{m['cores']:.2f}",
        _memory_cell(m),
        _latency_cell(m, f),
        {True: "ok", False: "**MISMATCH**", None: "-"}[m.get("ok")],
    ]
    if against:
        old = e["median"]["old"]
        old_cell = _gb(e["figures"]["old"]["value"]) if "rate" in old else f"failed: {old.get('error', '?')}"
        ratio = e.get("new_vs_old")
        cells[6:6] = [old_cell, f"{ratio:.2f}" if ratio else "-"]
    return cells


def _ratio_cell(e: Entry, f: dict[str, Any]) -> str:
    """``x reference``, and beside it the ratio to the row doing this row's necessary work."""
    if f["x_ref"] is None:
        return "-"
    cell = f"{f['x_ref']:.2f}"
    if f.get("x_necessary") is not None:
        cell += f" ({f['x_necessary']:.2f}x `{e['necessary']}`)"
    return cell


def rows_table(report: Report) -> str:
    """One line per row, beside the row it is a ratio of (measured in the same run)."""
    against = "old" in report["sides"]
    cols = [
        "row",
        "what",
        "GB/s",
        "frames/s",
        "reference GB/s",
        "x reference",
        "target",
        "cores",
        "peak RSS (+growth) / in-flight cap MiB",
        "append p50 / p99 ms",
        "read back",
    ]
    if against:
        cols[6:6] = ["old GB/s", "new / old"]
    lines = ["| " + " | ".join(cols) + " |", "|---" * len(cols) + "|"]
    for e in report["rows"]:
        m = e["median"]["new"]
        if "rate" not in m:
            lines.append(f"| `{e['name']}` | {e['what']} | failed: {m.get('error', '?')} |")
            continue
        lines.append("| " + " | ".join(_row_cells(e, against)) + " |")
    return "\n".join(lines) + "\n"


ROWS_NOTE = """
`GB/s` is raw frame bytes per second over the whole run (open to close; ZeroMQ: the first
`start_series` to the last series finalized), except for the steady row, where it is the rate
appends were accepted at after the first quarter of the frames (once the in-flight cap is reached
that is the rate frames are written). `x reference` divides it by the reference row's whole-run
rate, measured in the same run by the same commit. The limit rows compress the very chunks the
default workload writes with numcodecs Blosc (lz4, clevel 1, byte shuffle, Blosc's own threads
off) on a pool of 2 threads (or 1): the 2-core compression limit, with no tiling and no I/O.
Their chunks are tiled before timing and compressed again and again, so from cache; a stream
compresses each chunk once, fresh from the memory the appending thread copied the frames into.
The `limit-*-copy` rows do that necessary work and no more (each frame copied into a band of
chunks, every chunk compressed on 2 threads as its band fills, no I/O); in brackets beside
`x reference`, a stream row's ratio to the one doing its work.
`cores` is process CPU time over wall time (ZeroMQ: server plus senders). `peak RSS` is the
process's high-water mark (ZeroMQ: the server's); `+growth` is that over what was resident before
the timed part (the frame pool, the interpreter), judged against the engine's in-flight cap (for
ZeroMQ the sum of every series' cap). Latency is per `append` (ZeroMQ: acquire + copy + `send`):
p50 of the median run, and p99 as judged, the median of the runs' p99s (their range in brackets).
`new / old` is this commit over `--against` on the same row, run alternately in the same
invocation.
"""


# -- where the time goes -----------------------------------------------------------------
def profile_table(report: Report) -> str:
    """CPU seconds per thread group of each row's median run: where the cores went."""
    lines = [
        "CPU seconds per thread over each row's median run (this commit). `MainThread` is the thread "
        "that appends (the ZeroMQ server's receive loop); pools are summed over their threads; "
        "`share` is of the row's CPU time.\n",
        "| row | wall s | thread (count) | CPU s | cores | share |",
        "|---|---|---|---|---|---|",
    ]
    for e in report["rows"]:
        m = e["median"]["new"]
        prof = m.get("threads")
        if not prof:
            continue
        unattributed = {"cpu": prof["unattributed"], "threads": 0}
        label = f"`{e['name']}` | {m['wall']:.2f}"
        for name, g in [*prof["groups"].items(), ("(unattributed)", unattributed)]:
            if abs(g["cpu"]) < 0.005:
                continue
            count = f" (x{g['threads']})" if g["threads"] > 1 else ""
            share = g["cpu"] / m["cpu"] if m.get("cpu") else 0.0
            lines.append(
                f"| {label} | {name}{count} | {g['cpu']:.2f} | {g['cpu'] / m['wall']:.2f} | {share:.0%} |"
            )
            label = " |"
    return "\n".join(lines) + "\n"


def targets_markdown(report: Report) -> str:
    """The section docs/performance.md holds: the rows, what they mean, the per-thread profile."""
    return "\n".join(
        [_header(report), "", rows_table(report) + ROWS_NOTE + decode_note(report), profile_table(report)]
    )


def decode_note(report: Report) -> str:
    """The detector rows' decode CPU per frame (the server's CBOR + bslz4 decoding threads), when
    the report has detector rows; nothing otherwise."""
    lines = [
        f"`{e['name']}` {e['median']['new']['decode_cpu_per_frame'] * 1e3:.2f} ms"
        for e in report["rows"]
        if "decode_cpu_per_frame" in e["median"]["new"]
    ]
    if not lines:
        return ""
    return (
        "\nDecode CPU per frame (the server's `acqzarr-decode-*` threads: CBOR and bslz4, over the "
        "images of the median run): " + "; ".join(lines) + ".\n"
    )


# -- the two blocks ------------------------------------------------------------------------
HOW = f"""<!-- doc-test: skip (the benchmarks: minutes at full sizes, on a quiet machine) -->
```bash
{RUN}   # full sizes; writes benchmarks/last-run-targets.json
python benchmarks/performance_doc.py   # then this section and the README summary, from that JSON
```

Issue 16's rows, each a ratio of another row measured in the same invocation. Every row runs in a
fresh process after `sync` and a pause, on the same pre-generated camera-like frames, and its
output is read back with tensorstore after the timed part. The raw JSON (every run, each thread's
CPU time) is `benchmarks/last-run-targets.json`.
"""


def doc_block(report: Report | None) -> str:
    if report is None:
        return HOW + "\nNo run recorded yet (`benchmarks/last-run-targets.json` is missing).\n"
    return HOW + "\n" + targets_markdown(report)


def readme_block(report: Report | None) -> str:
    """The README's summary: each row with a goal, its ratio and whether the goal is met."""
    if report is None:
        return f"Issue 16's targets: not measured yet (`{RUN}`).\n"
    lines = [
        f"Issue 16's targets (`benchmarks/targets.py`; {_header(report, command=False)}), from "
        "[docs/performance.md](docs/performance.md):\n"
    ]
    for e in report["rows"]:
        f = e["figures"]["new"]
        if not e["goals"]:
            continue
        if "rate" not in e["median"]["new"]:
            lines.append(f"- `{e['name']}`: failed")
            continue
        ratio = f"{f['x_ref']:.2f}x `{e['ref']}`, " if f["x_ref"] is not None else ""
        if f.get("x_necessary") is not None:
            ratio += f"{f['x_necessary']:.2f}x `{e['necessary']}`, "
        fps = e["median"]["new"]["fps"]
        lines.append(f"- `{e['name']}` ({e['what']}): {ratio}{fps:.0f} frames/s; {goals_text(f['goals'])}")
    return "\n".join(lines) + "\n"


def replace_block(text: str, content: str, where: Path) -> str:
    """``text`` with what lies between the begin and end markers replaced by ``content``."""
    try:
        head, rest = text.split(BEGIN + "\n", 1)
        _, tail = rest.split(END, 1)
    except ValueError:
        raise SystemExit(f"{where}: no {BEGIN} ... {END} block to write into") from None
    return f"{head}{BEGIN}\n{content}{END}{tail}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=str(DEFAULT_JSON), help="the targets.py report to render")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file would change")
    p.add_argument("--stdout", action="store_true", help="print the two blocks instead of writing them")
    args = p.parse_args()
    source = Path(args.json)
    report = json.loads(source.read_text()) if source.exists() else None
    blocks = {DOC: doc_block(report), README: readme_block(report)}
    if args.stdout:
        print("\n\n".join(blocks.values()))
        return 0
    stale = []
    for path, block in blocks.items():
        text = path.read_text()
        new = replace_block(text, block, path)
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
    if args.check and stale:
        print(f"out of date with {source}: {', '.join(str(s) for s in stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
