"""Render the settings models as the Markdown config reference (docs/settings.md).

    python -m acqzarr.settings.doc > docs/settings.md

The field descriptions are the documentation; a test keeps the file in step.
"""

from __future__ import annotations

import re
import typing

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from . import (
    Acquisition,
    ArraySettings,
    Blosc,
    Channel,
    Dimension,
    Plate,
    Position,
    S3Settings,
    StreamSettings,
)

__all__ = ["model_section", "render"]

MODELS: list[type[BaseModel]] = [
    StreamSettings,
    ArraySettings,
    Dimension,
    Blosc,
    Channel,
    Position,
    Plate,
    Acquisition,
    S3Settings,
]


_SETTINGS_MODULE = re.compile(r"\bacqzarr\.settings\.(?:\w+\.)*")
_SEQUENCE = re.compile(r"\btuple\[(\w+), \.\.\.\]")
_MAPPING = re.compile(r"\bcollections\.abc\.Mapping\[")


def _type_name(annotation: object, as_written: bool = False) -> str:
    """The type shown in a field's row. ``as_written`` (the settings models) shows a sequence as
    ``list[...]`` and a mapping as ``dict[...]``, as a config file writes them: the models keep them
    as a tuple and a FrozenMapping only so that validated settings cannot change."""
    if typing.get_origin(annotation):
        text = repr(annotation)
    else:
        text = getattr(annotation, "__name__", str(annotation))
    # A model's qualified name (acqzarr.settings.arrays.Channel) is shown as the name a reader looks
    # up below (Channel).
    text = _SETTINGS_MODULE.sub("", text.replace("typing.", ""))
    if as_written:
        text = _MAPPING.sub("dict[", _SEQUENCE.sub(r"list[\1]", text))
    return text


def render() -> str:
    lines = [
        "# Settings reference",
        "",
        "Generated from the pydantic models by `python -m acqzarr.settings.doc`; the same field names",
        "work in Python, YAML and JSON (`StreamSettings.from_file`). Unknown keys are errors.",
    ]
    for model in MODELS:
        lines += ["", *model_section(model)]
    return "\n".join(lines) + "\n"


def model_section(model: type[BaseModel], level: str = "##") -> list[str]:
    """A model's heading, the first line of its docstring, and one table row per field."""
    doc = (model.__doc__ or "").strip().splitlines()[0]
    lines = [f"{level} {model.__name__}", "", doc, ""]
    lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if field.default is not PydanticUndefined:
            default = f"`{field.default!r}`"
        elif field.default_factory is not None:
            default = f"`{field.default_factory.__name__}()`"
        else:
            default = "required"
        desc = (field.description or "").replace("|", "\\|")
        as_written = model.__module__.startswith(f"{__package__}.")
        kind = _type_name(field.annotation, as_written).replace("|", "\\|")
        lines.append(f"| `{name}` | `{kind}` | {default} | {desc} |")
    return lines


if __name__ == "__main__":
    print(render(), end="")
