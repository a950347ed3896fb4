"""The module map of ``src/acqzarr``, drawn from the code's own imports.

Folders are stages of a frame's way through the package; a stage may import
only the stages below it (and modules of its own stage, without a cycle).
``tests/test_module_map.py`` checks both rules and that docs/how-it-works.md
shows the map as this module renders it; regenerate it with

    python tests/module_map.py --write
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "acqzarr"
DOC = ROOT / "docs" / "how-it-works.md"
START, END = "<!-- module-map:start -->", "<!-- module-map:end -->"

# Top first: each stage may import only the stages after it in this list.
STAGES: list[tuple[str, tuple[str, ...], str]] = [
    ("faces", ("__init__", "__main__", "cli"), "the public API (`acqzarr`) and the command line"),
    ("mda", (), "a pymmcore-plus MDA output handler built on a stream"),
    ("ingest", (), "`acqzarr serve` / `send`: the ZeroMQ protocol, series, the server loop"),
    ("recording", (), "`acqzarr record`: cameras, one recording's life cycle, Ctrl-C, progress"),
    ("read", (), "`acqzarr info`, `acqzarr validate`, frames read back without zarr-python"),
    ("engine", (), "a stream routes frames to images; an image owns levels, pyramid, publisher, documents"),
    ("writers", (), "one array level: band assembly, encoding, chunk (v2) / shard (v3) objects, threads"),
    ("metadata", (), "documents: Zarr v2 / v3 (the version seam), OME-NGFF, pyramid levels"),
    ("codecs", (), "Blosc and the `sharding_indexed` index"),
    ("stores", (), "where bytes go: local (atomic renames, O_DIRECT), memory, S3"),
    ("settings", (), "what a user declares: models, loading, overrides, store locations"),
    ("base", ("errors", "_version"), "typed errors and the version"),
]
RANK = {name: len(STAGES) - i for i, (name, _, _) in enumerate(STAGES)}


@dataclass(frozen=True)
class Module:
    name: str  # dotted, relative to acqzarr: "engine.image", "errors", "__init__"
    path: Path
    doc: str  # the docstring's first sentence
    imports: frozenset[str]  # modules of acqzarr it imports (at any depth of the file)

    @property
    def stage(self) -> str:
        head = self.name.split(".")[0]
        for stage, roots, _ in STAGES:
            if head == stage or head in roots:
                return stage
        raise ValueError(f"module {self.name} is in no stage: add it to STAGES in {__file__}")


def _name_of(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
        parts = parts[:-1]
    return ".".join(parts)


def modules() -> dict[str, Module]:
    paths = sorted(p for p in SRC.rglob("*.py"))
    names = {_name_of(p) for p in paths}
    out: dict[str, Module] = {}
    for path in paths:
        name = _name_of(path)
        tree = ast.parse(path.read_text(), str(path))
        package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
        if name == "__init__":
            package = []
        imported: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[: len(package) - (node.level - 1)]
                    target = ".".join([*base, *(node.module.split(".") if node.module else [])])
                elif node.module and (node.module == "acqzarr" or node.module.startswith("acqzarr.")):
                    target = node.module.removeprefix("acqzarr").lstrip(".")
                else:
                    continue
                for alias in node.names:  # "from . import x" names a submodule
                    sub = f"{target}.{alias.name}" if target else alias.name
                    imported.add(sub if sub in names else target or "__init__")
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("acqzarr."):
                        imported.add(alias.name.removeprefix("acqzarr."))
        imported.discard(name)
        doc = (ast.get_docstring(tree) or "").strip().split("\n\n")[0].replace("\n", " ")
        out[name] = Module(name, path, doc, frozenset(i for i in imported if i in names))
    return out


def upward_imports(mods: dict[str, Module]) -> list[str]:
    """Every import of a module from a stage above its own."""
    bad = []
    for m in mods.values():
        for target in sorted(m.imports):
            t = mods[target]
            if RANK[t.stage] > RANK[m.stage]:
                bad.append(f"{m.name} ({m.stage}) imports {target} ({t.stage})")
    return bad


def cycles(mods: dict[str, Module]) -> list[list[str]]:
    """Import cycles between modules (each reported once, from its smallest name)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        stack.append(n)
        for t in sorted(mods[n].imports):
            if state.get(t) == 1:
                cycle = stack[stack.index(t) :]
                start = cycle.index(min(cycle))
                found.append(cycle[start:] + cycle[:start])
            elif t not in state:
                visit(t)
        stack.pop()
        state[n] = 2

    for n in sorted(mods):
        if n not in state:
            visit(n)
    return found


def render(mods: dict[str, Module]) -> str:
    """The map as Markdown: the stages top down, what each imports, and its modules."""
    lines = [
        START,
        "<!-- generated by `python tests/module_map.py --write` from the imports; checked in CI -->",
        "",
        "| stage | job | imports the stages |",
        "|---|---|---|",
    ]
    by_stage: dict[str, list[Module]] = {}
    for m in mods.values():
        by_stage.setdefault(m.stage, []).append(m)
    for stage, _, job in STAGES:
        uses = sorted(
            {mods[t].stage for m in by_stage.get(stage, []) for t in m.imports} - {stage},
            key=lambda s: -RANK[s],
        )
        where = f"`{stage}/`" if stage not in ("faces", "base") else stage
        lines.append(f"| {where} | {job} | {', '.join(uses) or '-'} |")
    lines += ["", "| module | what it is for |", "|---|---|"]
    for stage, _, _ in STAGES:
        for m in sorted(by_stage.get(stage, []), key=lambda m: m.name):
            rel = m.path.relative_to(SRC).as_posix()
            lines.append(f"| `{rel}` | {m.doc.replace('|', '/')} |")
    lines.append(END)
    return "\n".join(lines)


def current_block(text: str) -> str:
    start, end = text.index(START), text.index(END) + len(END)
    return text[start:end]


def main(argv: list[str]) -> int:
    mods = modules()
    text = DOC.read_text()
    block = render(mods)
    if "--write" in argv:
        DOC.write_text(text.replace(current_block(text), block))
        return 0
    print(block)
    for line in upward_imports(mods):
        print("upward:", line, file=sys.stderr)
    for cycle in cycles(mods):
        print("cycle:", " -> ".join(cycle), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
