"""The house: folders are stages, imports only run down, no cycles, and the map in
docs/how-it-works.md is the one the code's imports draw (``tests/module_map.py``)."""

from __future__ import annotations

import re

import module_map


def test_no_module_imports_from_a_stage_above_its_own() -> None:
    assert module_map.upward_imports(module_map.modules()) == []


def test_no_modules_import_each_other_in_a_cycle() -> None:
    assert module_map.cycles(module_map.modules()) == []


def test_every_module_belongs_to_a_stage() -> None:
    for m in module_map.modules().values():
        assert m.stage  # raises for a module in no stage


def test_the_documented_map_is_the_generated_one() -> None:
    text = module_map.DOC.read_text()
    expected = module_map.render(module_map.modules())
    assert module_map.current_block(text) == expected, (
        "docs/how-it-works.md's module map is stale: run `python tests/module_map.py --write`"
    )


def test_a_frames_path_names_each_module_once_and_every_one_exists() -> None:
    text = module_map.DOC.read_text()
    section = text[text.index("## A frame's path") :]
    section = section[: section.index("\n## ", 1)]
    steps = re.findall(r"^\d+\. `([^`]+\.py)`", section, flags=re.M)
    assert len(steps) >= 8
    assert len(steps) == len(set(steps)), steps
    for path in steps:
        assert (module_map.SRC / path).is_file(), path


def test_the_checks_catch_an_upward_import_and_a_cycle(tmp_path: object) -> None:
    """The checks can fail: an engine module importing the CLI, and two modules importing each other."""
    mods = module_map.modules()
    image = mods["engine.image"]
    cli = mods["cli"]
    bad = {
        **mods,
        "engine.image": module_map.Module(image.name, image.path, image.doc, image.imports | {"cli"}),
        "cli": module_map.Module(cli.name, cli.path, cli.doc, cli.imports | {"engine.image"}),
    }
    assert "engine.image (engine) imports cli (faces)" in module_map.upward_imports(bad)
    assert any("cli" in c and "engine.image" in c for c in module_map.cycles(bad))
