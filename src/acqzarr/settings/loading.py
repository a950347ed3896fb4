"""Reading a config file, and pydantic's ValidationError told as one key-path line per problem."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sized
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ..errors import ConfigError

__all__ = ["config_errors", "format_validation_error", "load_mapping"]


@contextmanager
def config_errors(source: str, prefix: str = "") -> Iterator[None]:
    """Turn pydantic's ValidationError into a ConfigError, one key-path line per problem."""
    try:
        yield
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source, prefix)) from None


def load_mapping(path: str | Path) -> Any:
    """Read a YAML (.yaml/.yml) or JSON file into plain Python data."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config file: {exc.strerror or exc}") from None
    try:
        if p.suffix.lower() == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        kind = "JSON" if p.suffix.lower() == ".json" else "YAML"
        raise ConfigError(f"{p}: not valid {kind}: {exc}") from None


def _key_text(part: object) -> str:
    """A key as written, or its repr when it holds anything but plain printable characters."""
    text = str(part)
    return text if text.isprintable() and text.strip() == text and text else repr(text)


def format_validation_error(exc: ValidationError, source: str, prefix: str = "") -> str:
    """One line per problem, each starting with the dotted key path (under ``prefix``, if given)."""
    lines = [f"{source}: invalid settings"]
    for err in exc.errors():
        if _only_failed_items(err):
            continue
        loc = ".".join([*([prefix] if prefix else []), *(_key_text(p) for p in err["loc"])]) or "(root)"
        lines.append(f"  {loc}: {_message(err['type'], err['msg'])}")
    return "\n".join(lines)


def _only_failed_items(err: ErrorDetails) -> bool:
    """A tuple's ``too_short`` that only counts the items that failed validation: pydantic's tuple
    validator (unlike its list validator) checks the length of what validated, so one bad item of a
    one-item list would be reported twice, once as itself and once as a list too short."""
    given, least = err.get("input"), err.get("ctx", {}).get("min_length")
    if err["type"] != "too_short" or not isinstance(given, Sized) or not isinstance(least, int):
        return False
    return len(given) >= least


def _message(kind: str, msg: str) -> str:
    """pydantic's message in the config file's words: the models keep sequences as tuples (so that
    validated settings cannot change), but YAML, JSON and ``--set`` write lists."""
    msg = msg.removeprefix("Value error, ")
    if kind == "tuple_type":
        return msg.replace("a valid tuple", "a valid list")
    if kind in ("too_short", "too_long") and msg.startswith("Tuple "):
        return "List " + msg.removeprefix("Tuple ")
    return msg
