"""The base of every settings model: strict keys, immutable, ConfigError on every way in."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict

from .loading import config_errors

__all__ = ["FrozenMapping", "SettingsModel", "finite"]

K = TypeVar("K")
V = TypeVar("V")


class SettingsModel(BaseModel):
    """Base of the settings models: unknown keys are errors, instances are immutable, and every way
    of validating one (constructor, ``model_validate*``, ``from_mapping``, assignment) raises
    ConfigError, never pydantic's ValidationError.

    Immutable all the way down: besides the frozen fields, every sequence field is a tuple and every
    mapping field a FrozenMapping, so settings cannot be edited in place after validation into
    something the validators never saw (a list field edited after its check). Lists are still
    accepted as input (YAML, JSON, ``--set``, constructors) and tuples dump as JSON arrays.

    A model nested in another is validated by pydantic's core in one pass, so its problems appear
    once, under their full key path, in the outer model's error.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, /, **data: Any) -> None:
        with config_errors(type(self).__name__):
            super().__init__(**data)

    # Marks the override as pydantic's own __init__ (RootModel does the same): otherwise pydantic
    # calls __init__ for every nested model, and a nested problem would arrive as a ConfigError
    # wrapped in the outer model's error instead of as a line with its key path.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def __setattr__(self, name: str, value: Any) -> None:
        with config_errors(type(self).__name__):
            super().__setattr__(name, value)

    def __delattr__(self, name: str) -> None:
        with config_errors(type(self).__name__):
            super().__delattr__(name)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy; with ``update``, validated like a new model (pydantic's own copy is not), so an
        update cannot make settings that were never checked or that hold a list again. Private
        attributes are copied along."""
        if not update:
            return super().model_copy(deep=deep)
        fields = {name: getattr(self, name) for name in self.model_fields_set}
        copied = type(self).model_validate({**fields, **update})  # raises ConfigError
        if deep:
            copied = copied.model_copy(deep=True)
        object.__setattr__(copied, "__pydantic_private__", dict(self.__pydantic_private__ or {}))
        return copied

    def _unchecked_copy(self, update: Mapping[str, Any]) -> Self:
        """pydantic's copy without validation, for a value valid by construction (an image's full key
        from a validated position path and array key): validating each image of a
        large plate every time ``images`` is read costs more than the read itself."""
        return super().model_copy(update=update)

    @classmethod
    def model_validate(cls, obj: Any, **kwargs: Any) -> Self:
        with config_errors(cls.__name__):
            return super().model_validate(obj, **kwargs)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        with config_errors(cls.__name__):
            return super().model_validate_json(json_data, **kwargs)

    @classmethod
    def model_validate_strings(cls, obj: Any, **kwargs: Any) -> Self:
        with config_errors(cls.__name__):
            return super().model_validate_strings(obj, **kwargs)

    @classmethod
    def from_mapping(cls, data: Any, source: str = "settings", prefix: str = "") -> Self:
        """Validate a mapping, naming ``source`` (e.g. the config file) in the ConfigError.

        ``prefix`` is the mapping's key path inside a larger document (``"s3"`` for the s3 section
        given on its own); it starts every problem's key path.
        """
        with config_errors(source, prefix):
            return super().model_validate(data)


def finite(v: float | None, what: str) -> float | None:
    """``v`` when it is None or finite; a ValueError naming ``what`` otherwise (NaN, inf)."""
    if v is not None and not math.isfinite(v):
        raise ValueError(f"{what} must be finite, got {v}")
    return v


class FrozenMapping(Mapping[K, V]):
    """A mapping that cannot change after it is built: what a settings model keeps of a mapping
    field, so that validated settings stay as validated, like their tuples. The field's serializer
    dumps it as a dict; it compares equal to a dict of the same items, copies and pickles."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[K, V] | None = None) -> None:
        self._items: dict[K, V] = dict(items or {})

    def __getitem__(self, key: K) -> V:
        return self._items[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(frozenset(self._items.items()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"
