"""The distributions a search-space file may give a parameter: ``int``, ``float`` or ``choice``."""

from __future__ import annotations

from typing import Annotated, Any, Union

from pydantic import Discriminator, PositiveFloat, PositiveInt, Tag, field_validator, model_validator

from dicesearch.filemodel import FileModel


class IntParam(FileModel):
    """Integers in [low, high] (both included), every ``step``, optionally log-uniform."""

    int: tuple[int, int]
    step: PositiveInt = 1
    log: bool = False

    @model_validator(mode="after")
    def _check(self):
        low, high = self.int
        if low > high:
            raise ValueError(f"low {low} > high {high}; write [low, high]")
        if (high - low) % self.step:
            raise ValueError(f"high - low = {high - low} is not a multiple of step {self.step}; adjust the range or step")
        if self.log and (low <= 0 or self.step != 1):
            raise ValueError("log needs low > 0 and step 1")
        return self

    def suggest(self, trial, name: str):
        return trial.suggest_int(name, self.int[0], self.int[1], step=self.step, log=self.log)

    def values(self) -> list:
        return [self.int[0], self.int[1]]


class FloatParam(FileModel):
    """Floats in [low, high], uniform or log-uniform, optionally quantised by ``step``."""

    float: tuple[float, float]
    log: bool = False
    step: PositiveFloat | None = None

    @model_validator(mode="after")
    def _check(self):
        low, high = self.float
        if low > high:
            raise ValueError(f"low {low} > high {high}; write [low, high]")
        if self.log and low <= 0:
            raise ValueError(f"log needs low > 0, got {low}")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined; drop one")
        return self

    def suggest(self, trial, name: str):
        return trial.suggest_float(name, self.float[0], self.float[1], log=self.log, step=self.step)

    def values(self) -> list:
        return [self.float[0], self.float[1]]


Scalar = Union[bool, int, float, str, None]  # noqa: UP007


class ChoiceParam(FileModel):
    """One of the listed values."""

    choice: tuple[Scalar, ...]

    @field_validator("choice")
    @classmethod
    def _non_empty(cls, value):
        if not value:
            raise ValueError("the choice list is empty; list at least one value")
        if len(set(map(repr, value))) != len(value):
            raise ValueError("the choice list repeats a value; list each once")
        return value

    def suggest(self, trial, name: str):
        return trial.suggest_categorical(name, list(self.choice))

    def values(self) -> list:
        return list(self.choice)


def _param_tag(value: Any) -> str | None:
    if isinstance(value, dict):
        keys = [k for k in ("int", "float", "choice") if k in value]
        return keys[0] if len(keys) == 1 else None
    return {IntParam: "int", FloatParam: "float", ChoiceParam: "choice"}.get(type(value))


Distribution = Annotated[
    Union[Annotated[IntParam, Tag("int")], Annotated[FloatParam, Tag("float")], Annotated[ChoiceParam, Tag("choice")]],  # noqa: UP007
    Discriminator(
        _param_tag,
        custom_error_type="distribution",
        custom_error_message="write one of {int: [low, high]}, {float: [low, high]} or {choice: [a, b, ...]}",
    ),
]


__all__ = ["ChoiceParam", "Distribution", "FloatParam", "IntParam"]
