"""What each column of the comparison table is: direction, label and note, declared by whoever measures it.

`higher_is_better` is the package's one direction rule: the bias columns `<attribute>_<metric>` (and a bare
metric name) take their direction from the metric's spec (`metrics.bias.METRICS`); the quality columns are
declared here; another world (the toy world) registers its own columns and a `TableView`, the
set of columns shown instead of the default ones when its columns hold a number. `report.comparison`
shows whichever registered columns a comparison.csv holds and never names one itself.
"""

from __future__ import annotations

from dataclasses import dataclass

from t2i_debias.metrics.bias import METRICS


@dataclass(frozen=True)
class Column:
    """One metric column: which way is better, how it is named, and the row that is its own reference."""

    name: str
    higher_is_better: bool
    label: str = ""
    self_row: str | None = None  # the row measured against itself (CLIP-I of the base is 1): no contest there


@dataclass(frozen=True)
class TableView:
    """The columns and charts of the table when any of `when` holds a number, with a note saying why."""

    name: str
    when: tuple[str, ...]
    columns: tuple[str, ...]
    note: str
    charts: tuple[tuple[str, tuple[str, ...]], ...]


COLUMNS: dict[str, Column] = {}
VIEWS: dict[str, TableView] = {}


def register(*columns: Column) -> None:
    """Declare columns (a second declaration of a name replaces the first)."""
    for c in columns:
        COLUMNS[c.name] = c


def register_view(view: TableView) -> None:
    """Declare a table view (checked before the default, in the order registered)."""
    VIEWS[view.name] = view


def higher_is_better(column: str) -> bool:
    """True when a larger value of `column` is better: its declaration, else the spec of the bias metric after
    the last `_` ("gender_entropy", "entropy"); False (lower is better, as for bias) for anything else."""
    if column in COLUMNS:
        return COLUMNS[column].higher_is_better
    metric = METRICS.get(column.rsplit("_", 1)[-1])
    return metric is not None and metric.higher_is_better


def self_row(column: str) -> str | None:
    """The row whose value of `column` is measured against itself (left out of the contest), if any."""
    spec = COLUMNS.get(column)
    return spec.self_row if spec else None


register(Column("face_rate", True, "face rate"), Column("fid", False, "FID"), Column("kid", False, "KID"),
         Column("clip_t", True, "CLIP-T"), Column("clip_i", True, "CLIP-I", self_row="base"))

# The default view: comparison.md's columns (comparison.csv holds every bias and quality column).
TABLE_COLUMNS: tuple[str, ...] = ("gender_tvd", "race_tvd", "gender_race_tvd", "gender_kl", "race_kl",
                                  "race4_pairwise", "face_rate", "fid", "kid", "clip_t", "clip_i")
BIAS_CHART: tuple[str, tuple[str, ...]] = ("bias_tvd.png", ("gender_tvd", "race_tvd", "gender_race_tvd"))
QUALITY_CHARTS: tuple[tuple[str, tuple[str, ...]], ...] = (("quality_clip.png", ("clip_t", "clip_i")),)
