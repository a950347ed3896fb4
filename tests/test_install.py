"""The README's first command installs everything its first screen imports.

A newcomer runs command 1, then pastes the first screen's snippets; a module
they import that the install did not bring is a ModuleNotFoundError on the
first page (it was: ``import zarr`` after ``pip install -e .``).
"""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).parent.parent
OWN = {"acqzarr", "acqzarr_drivers"}  # the project itself


def _name(requirement: str) -> str:
    """The normalised distribution name of a requirement string (``zarr>=3`` -> ``zarr``)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement.strip())
    assert match is not None, requirement
    return re.sub(r"[-_.]+", "-", match.group(0)).lower()


def first_screen() -> str:
    """The README up to its second section: the commands, and recording from Python with its read-back."""
    text = (ROOT / "README.md").read_text()
    sections = re.split(r"^## ", text, flags=re.M)
    return sections[0] + "## " + sections[1]


def command_one_installs() -> set[str]:
    """Distribution names the first ``pip install`` of the README installs directly."""
    match = re.search(r"pip install -e (\S+)", first_screen())
    assert match is not None, "the README's first command installs the project"
    target = match.group(1).strip("'\"")
    extras = re.fullmatch(r"\.(?:\[([^\]]*)\])?", target)
    assert extras is not None, target
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in filter(None, (extras.group(1) or "").split(",")):
        wanted += project["optional-dependencies"][extra.strip()]
    return {_name(r) for r in wanted}


def imported_modules(text: str) -> set[str]:
    modules: set[str] = set()
    for block in re.findall(r"```python\n(.*?)```", text, re.S):
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module.split(".")[0])
    return modules


def test_command_one_installs_every_module_the_first_screen_imports() -> None:
    installed = command_one_installs()
    providers = packages_distributions()
    modules = imported_modules(first_screen()) - OWN - set(sys.stdlib_module_names)
    assert "zarr" in modules  # the read-back: the case that failed
    missing = {
        module
        for module in modules
        if not {_name(dist) for dist in providers.get(module, [module])} & installed
    }
    assert not missing, f"the README's first screen imports {sorted(missing)}, not installed by command 1"
