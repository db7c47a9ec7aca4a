"""The base of every pydantic model read from a user's file: specs, plugin parameters,
search spaces, budgets, training and data settings.

Besides frozen and unknown keys rejected, two rules pydantic's lax mode would not apply:

* **Finite numbers.** ``nan`` and ``inf`` (YAML's ``.nan``, ``.inf``) are refused in every
  float field: a learning rate, a search range or a block parameter of ``nan`` would only
  fail later, far from the file.
* **A boolean is not a number.** pydantic takes ``true`` for the integer 1 (and 1.0);
  in a file that is a slip (``channels: true``, ``{int: [true, 64]}``), refused here.
  Fields that may hold a boolean (``bool``, a union with ``bool``, ``Any``) keep it.
"""

from __future__ import annotations

import types
import typing
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError


def _members(annotation: Any) -> list[Any]:
    """The alternatives of a (possibly Annotated) union, or the annotation itself."""
    while typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        out = []
        for arg in typing.get_args(annotation):
            out.extend(_members(arg))
        return out
    return [annotation]


def _numbers_only(annotation: Any) -> bool:
    """Does the annotation take numbers (int/float) and no booleans?"""
    members = [m for m in _members(annotation) if m is not type(None)]
    if not members or any(m is bool or m is Any for m in members):
        return False
    if any(typing.get_origin(m) is typing.Literal for m in members):
        return False
    return all(m in (int, float) for m in members)


def _item_annotations(annotation: Any, length: int) -> list[Any] | None:
    """Per-item annotations when the annotation takes a tuple/list of ``length`` items."""
    for member in _members(annotation):
        origin, args = typing.get_origin(member), typing.get_args(member)
        if origin in (tuple, list) and args:
            if origin is list or (len(args) == 2 and args[1] is Ellipsis):
                return [args[0]] * length
            return list(args) if len(args) == length else None
    return None


def misplaced_boolean(annotation: Any, value: Any) -> tuple[int, ...] | None:
    """Where a boolean sits in ``value`` although ``annotation`` wants a number: ``()`` for
    the value itself, ``(1,)`` for item 1 of a tuple; None when there is none."""
    if isinstance(value, bool):
        return () if _numbers_only(annotation) else None
    if isinstance(value, (list, tuple)):
        items = _item_annotations(annotation, len(value))
        for index, (item, item_annotation) in enumerate(zip(value, items or [], strict=False)):
            if isinstance(item, bool) and _numbers_only(item_annotation):
                return (index,)
    return None


class FileModel(BaseModel):
    """Frozen, unknown keys rejected, finite numbers only, no boolean where a number belongs."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, data: Any) -> Any:
        # A model validator, not a field one: pydantic allows no "before" validator on the
        # ``kind`` discriminator that plugin models get. The errors keep their field's location.
        if not isinstance(data, dict):
            return data
        errors = []
        for name, value in data.items():
            field = cls.model_fields.get(name) if isinstance(name, str) else None
            where = misplaced_boolean(field.annotation, value) if field is not None else None
            if where is not None:
                shown = str(value[where[0]] if where else value).lower()
                message = f"{shown} is a boolean where a number belongs; write the number (e.g. 1, not true)"
                errors.append(InitErrorDetails(type=PydanticCustomError("boolean_for_number", message), loc=(name, *where), input=value))
        if errors:
            raise ValidationError.from_exception_data(cls.__name__, errors)
        return data


__all__ = ["FileModel", "misplaced_boolean"]
