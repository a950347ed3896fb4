"""Every fenced Python and shell snippet in README.md and docs/*.md runs as written.

Each ```python, ```bash, ```sh and ```console block is one test, named ``<file>:<line>``. It runs
in a fresh temporary directory holding a copy of ``configs/`` (the README's commands run from a
clone's root): Python in a subprocess of this interpreter, shell with ``bash -eo pipefail`` and
this interpreter's directory first on ``PATH``, so ``acqzarr`` is this venv's command. For a
``console`` block only the ``$ `` lines run.

A comment on the last non-blank line before the fence changes that, and nothing else does:

- ``<!-- doc-test: skip (reason) -->``: not run; pytest's skip report shows the reason. For what
  cannot run here (a camera, a server that runs until stopped, the install commands).
- ``<!-- doc-test: continue -->``: runs after the previous snippet, as in the same terminal: in its
  directory, with the environment its shell exported, and with what it left running in the
  background (a server) still running. Python variables do not carry over. E.g. reading back the
  store the quick start wrote, or talking to the S3 server the recipe before started.
- ``<!-- doc-test: slow -->``: marked ``slow`` (left out of the quick loop).

Directives combine with commas (``continue, slow``). What a snippet leaves running in the background
is stopped (its process group) when the next snippet that does not continue it starts, and at the
end of the module.  Some snippets are also checked for what they
claim (``CHECKS``, by heading): a snippet that runs but stops doing what its comments say fails.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import zarr

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = {"python", "bash", "sh", "console"}
TIMEOUT = 180
_MARKER = re.compile(r"<!--\s*doc-test:\s*(?P<directives>.*?)\s*-->")


@dataclass(frozen=True)
class Snippet:
    doc: Path
    line: int  # of the opening fence, 1-based
    lang: str
    code: str
    heading: str  # the nearest heading above it, without the #s
    directives: tuple[str, ...]
    skip_reason: str | None

    @property
    def id(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.line}"

    @property
    def continues(self) -> bool:
        return "continue" in self.directives


def _directives(marker: str | None, where: str) -> tuple[tuple[str, ...], str | None]:
    """(directives, skip reason) of a marker comment; an unknown directive is an error, so that a
    typo cannot turn a snippet off silently."""
    if marker is None:
        return (), None
    text = marker.strip()
    skip = re.fullmatch(r"skip\s*\((?P<reason>.+)\)", text)
    if skip:
        return ("skip",), skip["reason"].strip()
    found = tuple(d.strip() for d in text.split(","))
    unknown = [d for d in found if d not in {"continue", "slow"}]
    if unknown:
        raise ValueError(
            f"{where}: unknown doc-test directive(s) {unknown}; use skip (reason), continue, slow"
        )
    return found, None


def _snippets(doc: Path) -> list[Snippet]:
    """The runnable fenced blocks of one Markdown file, in order."""
    lines = doc.read_text().splitlines()
    out: list[Snippet] = []
    heading = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#"):
            heading = line.lstrip("#").strip()
        if not line.startswith("```"):
            i += 1
            continue
        lang = line[3:].strip()
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        body = lines[i + 1 : end]
        if lang in RUNNABLE:
            before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = _MARKER.fullmatch(before.strip())
            where = f"{doc.relative_to(ROOT)}:{i + 1}"
            directives, reason = _directives(marker["directives"] if marker else None, where)
            if lang == "console":
                body = [b[2:] for b in body if b.startswith("$ ")]
            out.append(Snippet(doc, i + 1, lang, "\n".join(body) + "\n", heading, directives, reason))
        i = end + 1
    return out


SNIPPETS = [s for doc in DOCS for s in _snippets(doc)]


def _param(snippet: Snippet) -> object:
    marks: list[pytest.MarkDecorator] = []
    if snippet.skip_reason is not None:
        marks.append(pytest.mark.skip(reason=f"{snippet.id}: {snippet.skip_reason}"))
    if "slow" in snippet.directives:
        marks.append(pytest.mark.slow)
    return pytest.param(snippet, id=snippet.id, marks=marks)


# -- running ------------------------------------------------------------------------------------
@dataclass
class _Run:
    directory: Path
    stdout: str
    env: dict[str, str]  # as the snippet left it (a shell's exports), for the snippets continuing it


_runs: dict[str, _Run] = {}  # snippet id -> its run
_failed: set[str] = set()
_running: list[int] = []  # process groups of shell snippets, which may have left a server running
_ENV_FILE = ".doc-test-env"


def _environment() -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}


def _stop_background() -> None:
    """Stop what earlier shell snippets left running: SIGTERM to each process group, then SIGKILL
    after 15 s."""
    while _running:
        group = _running.pop()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                try:
                    os.killpg(group, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                continue
            break


@pytest.fixture(scope="module", autouse=True)
def _stop_background_at_the_end() -> Iterator[None]:
    yield
    _stop_background()


def _run(snippet: Snippet, factory: pytest.TempPathFactory) -> _Run:
    """Run ``snippet`` (after the one it continues, if that has not run yet); raise on failure."""
    if snippet.id in _runs:
        return _runs[snippet.id]
    if snippet.continues:
        previous = _previous(snippet)
        if previous.skip_reason is not None:
            pytest.skip(f"{snippet.id}: continues {previous.id}, which is skipped")
        if previous.id in _failed:
            pytest.fail(f"{snippet.id}: continues {previous.id}, which failed", pytrace=False)
        before = _run(previous, factory)
        directory, env = before.directory, before.env
    else:
        _stop_background()
        directory, env = factory.mktemp("doc"), _environment()
        shutil.copytree(ROOT / "configs", directory / "configs")
    name = f"snippet_{snippet.line}.{'py' if snippet.lang == 'python' else 'sh'}"
    if snippet.lang == "python":
        (directory / name).write_text(snippet.code)
        command = [sys.executable, name]
    else:  # the shell's environment at the end, for a snippet that continues this one
        (directory / name).write_text(f"{snippet.code}\nenv -0 > {_ENV_FILE}\n")
        command = ["bash", "-eo", "pipefail", name]
    # A process group of its own, so that a server it starts in the background can be stopped;
    # output to files, not pipes, which such a server would hold open.
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            command, cwd=directory, env=env, stdout=out, stderr=err, start_new_session=True
        )
        if snippet.lang != "python":
            _running.append(proc.pid)
        try:
            proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        _failed.add(snippet.id)
        pytest.fail(
            f"{snippet.id} ({snippet.lang}) exited with {proc.returncode} (-9: killed after {TIMEOUT} s)\n"
            f"--- stdout ---\n{stdout[-3000:]}\n--- stderr ---\n{stderr[-5000:]}",
            pytrace=False,
        )
    if snippet.lang != "python":
        pairs = (item.partition("=") for item in (directory / _ENV_FILE).read_text().split("\0") if item)
        env = {key: value for key, _, value in pairs}
    _runs[snippet.id] = _Run(directory, stdout, env)
    return _runs[snippet.id]


def _previous(snippet: Snippet) -> Snippet:
    same_doc = [s for s in SNIPPETS if s.doc == snippet.doc and s.line < snippet.line]
    if not same_doc:
        raise ValueError(f"{snippet.id}: 'continue' on the first snippet of its file")
    return same_doc[-1]


@pytest.mark.parametrize("snippet", [_param(s) for s in SNIPPETS])
def test_snippet_runs(snippet: Snippet, tmp_path_factory: pytest.TempPathFactory) -> None:
    run = _run(snippet, tmp_path_factory)
    ordinal = [s for s in SNIPPETS if s.doc == snippet.doc and s.heading == snippet.heading].index(snippet)
    check = CHECKS.get((snippet.doc.name, snippet.heading, ordinal))
    if check is not None:
        check(run.directory, run.stdout)


def test_every_marker_is_right_before_a_runnable_fence() -> None:
    """A marker anywhere else (or before a ```text block) does nothing: a mistake to catch."""
    misplaced = []
    for doc in DOCS:
        lines = doc.read_text().splitlines()
        for i, line in enumerate(lines):
            if not _MARKER.fullmatch(line.strip()):
                continue
            after = next((lines[j] for j in range(i + 1, len(lines)) if lines[j].strip()), "")
            if not (after.startswith("```") and after[3:].strip() in RUNNABLE):
                misplaced.append(f"{doc.relative_to(ROOT)}:{i + 1}")
    assert misplaced == []


def test_the_docs_have_snippets_to_run() -> None:
    ran = [s for s in SNIPPETS if s.skip_reason is None]
    assert len(ran) >= 7, [s.id for s in ran]


# -- what some snippets claim -------------------------------------------------------------------
def _quick_start(directory: Path, stdout: str) -> None:
    during, after = stdout.splitlines()[-2:]
    assert "frames_appended=8, frames_flushed=0" in during  # a band of 32 frames is not full yet
    assert "frames_appended=8, frames_flushed=8" in after and "bytes_written=0" not in after
    camera = np.random.default_rng(0).integers(0, 4096, (8, 2048, 2048), dtype=np.uint16)
    stored = zarr.open_array(str(directory / "run.zarr/cam0/0"), mode="r")
    np.testing.assert_array_equal(stored[...], camera)


def _read_back(directory: Path, stdout: str) -> None:
    camera_last = np.random.default_rng(0).integers(0, 4096, (8, 2048, 2048), dtype=np.uint16)[-1]
    assert stdout.splitlines()[-1] == f"(8, 2048, 2048) {camera_last.mean()}"


def _any_order(directory: Path, stdout: str) -> None:
    # t=0 z0 c0; t3 z17 c1; then the volume's 8 frames (t3 z18, z19, t4 z0, z1), 2 skipped: 10
    # of 5 x 2 x 20 slots written
    assert stdout.splitlines()[-1] == "190"
    image = np.asarray(zarr.open_array(str(directory / "order.zarr/cam0/0"), mode="r")[...])
    assert image.shape == (5, 2, 20, 64, 64)
    assert (image[0, 0, 0] == 7).all() and (image[3, 1, 17] == 7).all()
    assert (image[3, :, 18:] == 1).all() and (image[4, :, :2] == 1).all()
    assert int(np.count_nonzero(image.reshape(-1, 64 * 64).any(axis=1))) == 10


def _per_frame_metadata(directory: Path, stdout: str) -> None:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 4096, (512, 512), dtype=np.uint16) for _ in range(40)]
    # frames went t, p, c: position B's channel c at time t is frame 4 t + 2 + c
    image = np.asarray(zarr.open_array(str(directory / "run.zarr/B/cam/0"), mode="r")[...])
    expected = np.stack([[frames[4 * t + 2 + c] for c in range(2)] for t in range(10)])
    np.testing.assert_array_equal(image, expected)
    group = zarr.open_group(str(directory / "run.zarr/B/cam/acqzarr_frames"), mode="r")
    assert (np.asarray(group["stage_x_um"][...]) == 800.0).all()
    assert np.asarray(group["exposure_ms"][...]).tolist() == [[20.0, 50.0]] * 10
    assert json.loads(str(group["json"][3, 1])) == {"objective": "20x", "focus": {"offset_um": 1.2}}
    session = zarr.open_group(str(directory / "run.zarr/B/cam"), mode="r").attrs["acqzarr_session"]
    assert session["completed"] is True and session["frames_on_disk"] == 20  # type: ignore[index]


def _positions(directory: Path, stdout: str) -> None:
    assert stdout.splitlines()[-1] == "['p0/cam', 'p1/cam']"
    image = zarr.open_array(str(directory / "positions.zarr/p1/cam/0"), mode="r")
    assert image.shape == (1, 2, 256, 256) and (image[0, 1] == 100).all()


def _pyramid(directory: Path, stdout: str) -> None:
    assert stdout.splitlines()[-1] == "[(1, 512, 512), (1, 256, 256), (1, 128, 128), (1, 64, 64)]"


def _info_and_validate(directory: Path, stdout: str) -> None:
    assert "small.zarr" in stdout and "cam0" in stdout
    assert "valid" in stdout.lower()


CHECKS: dict[tuple[str, str, int], Callable[[Path, str], None]] = {
    ("README.md", "Recording from Python", 0): _quick_start,
    ("README.md", "Recording from Python", 1): _read_back,
    ("README.md", "Recording from Python", 2): _any_order,
    ("README.md", "Per-frame metadata and the session record", 0): _per_frame_metadata,
    ("README.md", "Channels, positions and plates", 0): _positions,
    ("README.md", "Pyramids while streaming", 0): _pyramid,
    ("README.md", "Looking at a store: `acqzarr info` and `acqzarr validate`", 0): _info_and_validate,
}


def test_every_check_names_a_snippet() -> None:
    keys = set()
    for s in SNIPPETS:
        same = [t for t in SNIPPETS if t.doc == s.doc and t.heading == s.heading]
        keys.add((s.doc.name, s.heading, same.index(s)))
    assert set(CHECKS) <= keys, set(CHECKS) - keys
