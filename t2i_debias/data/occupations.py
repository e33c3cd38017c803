"""MPII activity -> occupation noun phrase ("carpentry, general" -> "carpenter").

The map is the committed file `occupations.csv` (columns activity, category, occupation; an empty
occupation means "not an occupation"). Lookups are robust to the ways the real annotation file
mangles activity strings: surrounding/duplicate whitespace, case, `act_name` cut at 100
characters, and slashes / apostrophes stripped (or apostrophes written as "_").
"""

from __future__ import annotations

import csv
import re
from importlib import resources
from pathlib import Path
from typing import Any

COLUMNS: tuple[str, str, str] = ("activity", "category", "occupation")
ACT_NAME_MAX = 100  # the real file cuts act_name at this many characters
_DROP = re.compile(r"[/'_\u2019`\\]")
_SPACE = re.compile(r"\s+")


def packaged_map_path() -> Path:
    """Path of the committed occupation map."""
    return Path(str(resources.files("t2i_debias.data").joinpath("occupations.csv")))


def normalize_activity(activity: str) -> str:
    """The lookup key of an activity: lower-case, slashes/apostrophes/underscores dropped,
    whitespace collapsed, cut to 100 characters (as the real file cuts act_name)."""
    s = _SPACE.sub(" ", _DROP.sub("", activity.strip().lower())).strip()
    return s[:ACT_NAME_MAX].rstrip()


class OccupationMap(dict):
    """dict[activity, occupation | None] keyed by the exact CSV strings, whose lookups (`[]`, `get`,
    `in`) also accept mangled variants: see `normalize_activity`; a string cut short (>= 80 chars)
    matches the unique entry it is a prefix of, and vice versa."""

    def __init__(self, data: dict[str, str | None], categories: dict[str, str] | None = None,
                 source: str = "") -> None:
        super().__init__(data)
        self.categories = categories or {}
        self.source = source
        self._norm: dict[str, str] = {}
        for k in data:
            key = normalize_activity(k)
            other = self._norm.get(key)
            if other is not None and data[other] != data[k]:
                raise ValueError(f"{source}: activities {other!r} and {k!r} normalise to the same key "
                                 f"but map to different occupations")
            self._norm.setdefault(key, k)

    def resolve(self, activity: str) -> str | None:
        """The CSV activity string that `activity` refers to, or None when unknown."""
        if dict.__contains__(self, activity):
            return activity
        key = normalize_activity(activity)
        if key in self._norm:
            return self._norm[key]
        if len(key) >= 80:  # truncated on one side or the other
            hits = {v for k, v in self._norm.items() if len(k) >= 80 and (k.startswith(key) or key.startswith(k))}
            if len(hits) == 1:
                return hits.pop()
        return None

    def __missing__(self, activity: str) -> str | None:
        if not isinstance(activity, str) or (real := self.resolve(activity)) is None:
            raise KeyError(activity)
        return dict.__getitem__(self, real)

    def get(self, activity: Any, default: Any = None) -> Any:  # type: ignore[override]
        try:
            return self[activity]
        except KeyError:
            return default

    def __contains__(self, activity: object) -> bool:
        return isinstance(activity, str) and self.resolve(activity) is not None


def load_occupation_map(path: str | Path | None = None) -> OccupationMap:
    """Read an occupation map CSV (default: the packaged one) into an OccupationMap.

    Errors name the file and line: missing columns, duplicate activities, bad occupations.
    """
    p = Path(path) if path else packaged_map_path()
    data: dict[str, str | None] = {}
    cats: dict[str, str] = {}
    try:
        fh = open(p, newline="", encoding="utf-8")
    except FileNotFoundError as e:
        raise FileNotFoundError(f"occupation map not found: {p}") from e
    with fh:
        reader = csv.DictReader(fh)
        missing = set(COLUMNS) - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{p}: missing column(s) {', '.join(sorted(missing))}; need {', '.join(COLUMNS)}")
        for row in reader:
            line = reader.line_num
            act = (row["activity"] or "").strip()
            occ = (row["occupation"] or "").strip()
            if not act:
                raise ValueError(f"{p}:{line}: empty activity")
            if act in data:
                raise ValueError(f"{p}:{line}: duplicate activity {act!r}")
            if occ and occ != occ.lower():
                raise ValueError(f"{p}:{line}: occupation {occ!r} must be lower-case")
            data[act] = occ or None
            cats[act] = (row["category"] or "").strip()
    return OccupationMap(data, cats, str(p))


def occupations(path: str | Path | None = None) -> list[str]:
    """The distinct occupations of a map, sorted."""
    return sorted({o for o in load_occupation_map(path).values() if o})
