"""Markdown for the report: number formatting, tables and sections."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from reporting import markdown_table


def num(value: float | None, digits: int = 3, unit: str = "") -> str:
    """``value`` to about ``digits`` significant digits; None, NaN or inf become an em dash."""
    if value is None or not math.isfinite(value):
        return "—"
    if value == 0:
        return "0" + unit
    magnitude = math.floor(math.log10(abs(value)))
    if magnitude >= 6 or magnitude < -3:
        return f"{value:.{digits}g}{unit}"
    return f"{value:.{max(0, digits - 1 - magnitude)}f}{unit}"


def percent(fraction: float | None, signed: bool = False) -> str:
    if fraction is None or not math.isfinite(fraction):
        return "—"
    return f"{100 * fraction:+.1f} %" if signed else f"{100 * fraction:.1f} %"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """A Markdown table: benchmarks/reporting.py's, which every benchmark prints."""
    return markdown_table(headers, rows)


@dataclass
class Section:
    """One numbered section of the report: a title, paragraphs and tables in order."""

    title: str
    parts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    failed: bool = False  # the section raised: its parts hold the traceback

    def add(self, text: str) -> None:
        self.parts.append(text)

    def render(self) -> str:
        return "\n\n".join([f"## {self.title}", *self.parts, f"_Section time: {self.seconds:.0f} s._"])


def report(title: str, environment: list[tuple[str, str]], sections: list[Section], footer: str) -> str:
    head = [f"# {title}", table(["", ""], [[k, v] for k, v in environment])]
    return "\n\n".join([*head, *(s.render() for s in sections), footer]) + "\n"
