"""Command-line and environment overrides of a config mapping, before it is validated.

Shared by ``acqzarr record`` and ``acqzarr serve`` so both spell an override
the same way: ``--set a.b.0.c=value`` and ``ACQZARR_A__B=value``, values
parsed as YAML, errors naming where the override came from.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import yaml

from ..errors import ConfigError

__all__ = ["ENV_PREFIX", "add_set_argument", "apply_overrides", "parse_assignment"]

ENV_PREFIX = "ACQZARR_"


def _set_path(data: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    """Set ``a.b.0.c`` inside nested dicts/lists, creating dicts where keys are missing."""
    parts = dotted.split(".")
    node: Any = data
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"{origin}: {'.'.join(parts[: i + 1])}: no such list index")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise ConfigError(f"{origin}: {'.'.join(parts[:i])} is not a mapping or list")


def apply_overrides(
    data: dict[str, Any], sets: Sequence[str], environ: Mapping[str, str], sections: Collection[str]
) -> dict[str, Any]:
    """Environment (ACQZARR_SECTION__KEY=value) first, then --set key.path=value; values parse as YAML.

    Only variables whose first part names one of ``sections`` (the config's top-level fields) are
    config; other ACQZARR_* variables are left alone.
    """
    for name, raw in sorted(environ.items()):
        parts = name[len(ENV_PREFIX) :].lower().split("__") if name.startswith(ENV_PREFIX) else []
        if parts and parts[0] in sections:
            _set_path(data, ".".join(parts), yaml.safe_load(raw), f"environment {name}")
    for item in sets:
        key, value = parse_assignment(item, "--set", "key.path=value")
        _set_path(data, key, value, f"--set {key}")
    return data


def parse_assignment(item: str, flag: str, form: str = "key=value") -> tuple[str, Any]:
    """``name=value`` from a command-line flag, the value parsed as YAML (``3``, ``true``, ``[1, 2]``)."""
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"{flag} {item!r}: expected {form}")
    return key.strip(), yaml.safe_load(raw)


def add_set_argument(parser: argparse.ArgumentParser, example: str) -> None:
    """The ``--set KEY.PATH=VALUE`` option of the commands that read a config file."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY.PATH=VALUE",
        help=f"override a config value (YAML syntax), e.g. --set {example}",
    )
