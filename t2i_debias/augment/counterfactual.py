"""Counterfactual demographics for the positive of each triplet (DESIGN.md §1.4).

The positive flips the anchor's perceived gender and takes the race that is, at that moment, the
least represented for the anchor's occupation among the positives already chosen. Processing the
people in a fixed order therefore balances the positives by race per occupation (max - min <= 1),
and ties are broken by a numpy Generator seeded from `run.seed`, so the plan is reproducible.
`release()` takes a positive back out of the counts: the enriched stage releases every triplet it
did not write (rejected, skipped), so the balance counts written triplets only.
Age is kept unless `change_age`, which picks the least-represented *other* adult age group the
same way. The negative keeps the anchor's own demographics.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from t2i_debias.core.vocab import AGE_GROUPS, GENDERS, RACES, other_gender

# Counterfactual ages never ask for a child working in an occupation.
ADULT_AGE_GROUPS: tuple[str, ...] = tuple(a for a in AGE_GROUPS if a != "child")


@dataclass(frozen=True)
class Demographics:
    """One perceived (gender, race, age group) triple; values come from t2i_debias.core.vocab."""

    gender: str
    race: str
    age_group: str | None = None

    def __post_init__(self) -> None:
        if self.gender not in GENDERS:
            raise ValueError(f"unknown gender {self.gender!r}; expected one of {GENDERS}")
        if self.race not in RACES:
            raise ValueError(f"unknown race {self.race!r}; expected one of {RACES}")
        if self.age_group is not None and self.age_group not in AGE_GROUPS:
            raise ValueError(f"unknown age group {self.age_group!r}; expected one of {AGE_GROUPS}")


class CounterfactualChooser:
    """Stateful chooser: call `positive()` once per anchor, in a fixed order, to get balanced positives."""

    def __init__(self, seed: int | np.random.Generator, change_age: bool = False,
                 races: Sequence[str] = RACES, age_groups: Sequence[str] = ADULT_AGE_GROUPS) -> None:
        self.rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
        self.change_age = change_age
        self.races = tuple(races)
        unknown = sorted(set(self.races) - set(RACES))
        if not self.races or unknown:
            raise ValueError(f"positive races must be a non-empty subset of {RACES}; unknown: {unknown}")
        self.age_groups = tuple(age_groups)
        self.race_counts: dict[str, Counter[str]] = defaultdict(Counter)
        self.age_counts: dict[str, Counter[str]] = defaultdict(Counter)

    def _least(self, counts: Counter[str], classes: Sequence[str]) -> str:
        """The class with the fewest counts; a tie is broken by the seeded RNG."""
        low = min(counts[c] for c in classes)
        tied = [c for c in classes if counts[c] == low]
        return tied[int(self.rng.integers(len(tied)))] if len(tied) > 1 else tied[0]

    def positive(self, occupation: str, anchor: Demographics) -> Demographics:
        """The counterfactual for `anchor` in `occupation`; updates the per-occupation counts."""
        race = self._least(self.race_counts[occupation], self.races)
        self.race_counts[occupation][race] += 1
        age = anchor.age_group
        if self.change_age:
            choices = [a for a in self.age_groups if a != anchor.age_group] or list(self.age_groups)
            age = self._least(self.age_counts[occupation], choices)
            self.age_counts[occupation][age] += 1
        return Demographics(other_gender(anchor.gender), race, age)

    def release(self, occupation: str, positive: Demographics) -> None:
        """Undo one `positive()` whose triplet was not written, so only written triplets count."""
        counts = self.race_counts[occupation]
        if counts[positive.race] <= 0:
            raise ValueError(f"release of a {positive.race} positive for {occupation!r} that was never chosen")
        counts[positive.race] -= 1
        if self.change_age and positive.age_group is not None:
            self.age_counts[occupation][positive.age_group] -= 1

    @staticmethod
    def negative(anchor: Demographics) -> Demographics:
        """The same-demographic negative: the anchor's own attributes."""
        return anchor
