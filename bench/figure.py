"""One figure's results: measured series, ratios, goals and notes, as JSON and Markdown."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bench.timing import Series


@dataclass
class Goal:
    label: str
    target: str
    value: float
    met: bool

    def as_json(self) -> dict[str, Any]:
        return {"label": self.label, "target": self.target, "value": self.value, "met": self.met}


@dataclass
class Figure:
    key: str
    title: str
    series: list[Series] = field(default_factory=list)
    ratios: dict[str, float] = field(default_factory=dict)
    goals: list[Goal] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add(self, series: Series) -> Series:
        self.series.append(series)
        return series

    def goal(self, label: str, target: str, value: float, met: bool) -> None:
        self.goals.append(Goal(label, target, value, met))

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "series": [s.as_json() for s in self.series],
            "ratios": self.ratios,
            "goals": [g.as_json() for g in self.goals],
            "facts": self.facts,
            "notes": self.notes,
            "seconds": round(self.seconds, 2),
        }
