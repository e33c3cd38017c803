"""Demographics of the labelled MPII people, per occupation and overall (the analysis stage writes them).

From `labels/labels.csv`, the tables of `analysis/`:
- `by_occupation.csv`: one row per occupation plus `all`: persons, labelled (`ok`) persons, face rate,
  counts `n_<attr>=<class>` and proportions `p_<attr>=<class>` for gender, race, age group and
  gender×race, and the imbalance metrics `<attr>_<metric>` (tvd, pairwise, kl, entropy; DESIGN §3,
  from t2i_debias.metrics.bias) for gender, race, race4 (Shen's grouping), age_group, gender_race;
- `skip_reasons.csv`: persons per (occupation, status), with the share of the occupation's persons;
- `summary.json`: the same numbers as nested JSON;
- `<attr>_by_occupation.png`: stacked proportion bars, one bar per occupation.
Proportions count only `ok` rows; an occupation with none has empty proportions and metrics,
never 0. An attribute the labels backend does not measure (its `measures`; the toy world has no age) has
empty counts, proportions and metrics, no plot, and is listed in summary.json's `not_measured`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.core.errors import InputError
from t2i_debias.core.vocab import (
    AGE_GROUPS,
    GENDERS,
    MEASURABLE,
    RACES,
    SHEN4,
    SHEN4_CLASSES,
    STATUS_OK,
    is_measured,
)
from t2i_debias.metrics import bias

log = logging.getLogger(__name__)

ALL = "all"  # the overall row
NO_OCCUPATION = "(none)"  # persons whose activity maps to no occupation


def attribute_classes(race_classes: tuple[str, ...] = RACES) -> dict[str, tuple[str, ...]]:
    """Classes of each analysed attribute; race4 only exists for DeepFace's six races."""
    out = {"gender": GENDERS, "race": race_classes}
    if set(race_classes) == set(RACES):
        out["race4"] = SHEN4_CLASSES
    out["age_group"] = AGE_GROUPS
    out["gender_race"] = tuple(f"{g}|{r}" for g in GENDERS for r in race_classes)
    return out


def _val(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) == "":
        return None
    return str(v)


def row_labels(row: dict[str, Any], attrs: dict[str, tuple[str, ...]]) -> dict[str, str | None]:
    """The class of each attribute for one labels.csv row (None when not `ok` or not predicted)."""
    if row.get("status") != STATUS_OK:
        return dict.fromkeys(attrs)
    g, r, a = _val(row.get("gender")), _val(row.get("race")), _val(row.get("age_group"))
    out: dict[str, str | None] = {"gender": g, "race": r, "age_group": a,
                                  "gender_race": f"{g}|{r}" if g and r else None}
    if "race4" in attrs:
        out["race4"] = SHEN4.get(r) if r else None
    return {k: out[k] for k in attrs}


def group_stats(rows: list[dict[str, Any]], attrs: dict[str, tuple[str, ...]],
                measures: tuple[str, ...] = MEASURABLE) -> dict[str, Any]:
    """Counts, proportions and imbalance metrics of one group of labels.csv rows (all None, with
    `measured` false, for an attribute the backend does not measure)."""
    n = len(rows)
    n_ok = sum(r.get("status") == STATUS_OK for r in rows)
    labels = [row_labels(r, attrs) for r in rows]
    out: dict[str, Any] = {"n_persons": n, "n_ok": n_ok, "face_rate": n_ok / n if n else None, "attributes": {}}
    for attr, classes in attrs.items():
        if not is_measured(attr, measures):
            out["attributes"][attr] = {"measured": False, "counts": None, "proportions": None,
                                       "metrics": dict.fromkeys(bias.METRIC_NAMES)}
            continue
        labs = [lab[attr] for lab in labels]
        counts = bias.counts(labs, classes)
        p = bias.distribution(labs, classes)
        metrics = bias.all_metrics(p)
        out["attributes"][attr] = {
            "counts": dict(zip(classes, (int(c) for c in counts), strict=True)),
            "proportions": None if p is None else dict(zip(classes, (float(x) for x in p), strict=True)),
            "metrics": {k: (None if math.isnan(v) else v) for k, v in metrics.items()},
        }
    return out


def analyze_labels(df: pd.DataFrame, race_classes: tuple[str, ...] = RACES, measures: tuple[str, ...] = MEASURABLE
                   ) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """(by_occupation, skip_reasons, summary) of a labels table; occupations sorted, `all` last.
    Attributes not in `measures` (nor derived from them) are left empty: see group_stats."""
    attrs = attribute_classes(race_classes)
    df = df.copy()
    df["occupation"] = df["occupation"].map(lambda v: _val(v) or NO_OCCUPATION)
    records = df.to_dict("records")
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r["occupation"], []).append(r)
    order = sorted(groups) + [ALL]
    groups[ALL] = records
    stats = {occ: group_stats(groups[occ], attrs, measures) for occ in order}

    rows = []
    for occ in order:
        s = stats[occ]
        row: dict[str, Any] = {"occupation": occ, "n_persons": s["n_persons"], "n_ok": s["n_ok"],
                               "face_rate": s["face_rate"]}
        for attr, a in s["attributes"].items():
            for metric, v in a["metrics"].items():
                row[f"{attr}_{metric}"] = v
        for attr, a in s["attributes"].items():
            if attr == "race4":
                continue
            for cls in attrs[attr]:
                row[f"n_{attr}={cls}"] = None if a["counts"] is None else a["counts"][cls]
            for cls in attrs[attr]:
                row[f"p_{attr}={cls}"] = None if a["proportions"] is None else a["proportions"][cls]
        rows.append(row)
    by_occ = pd.DataFrame(rows)

    skip_rows = []
    for occ in order:
        st = pd.Series([r["status"] for r in groups[occ]]).value_counts()
        for status, count in sorted(st.items()):
            skip_rows.append({"occupation": occ, "status": status, "count": int(count),
                              "share": count / len(groups[occ])})
    skips = pd.DataFrame(skip_rows, columns=["occupation", "status", "count", "share"])
    summary = {"n_persons": len(records), "n_occupations": len(order) - 1,
               "status_counts": {k: int(v) for k, v in sorted(df["status"].value_counts().items())},
               "classes": {k: list(v) for k, v in attrs.items()},
               "not_measured": [a for a in attrs if not is_measured(a, measures)],
               "overall": stats[ALL], "by_occupation": {o: stats[o] for o in order if o != ALL}}
    return by_occ, skips, summary


LABELS_REQUIRED: tuple[str, ...] = ("person_id", "occupation", "status", "gender", "race", "age_group")


def read_labels(labels_csv: str | Path, race_classes: tuple[str, ...] = RACES) -> pd.DataFrame:
    """labels.csv checked for what the analysis counts: UTF-8, the columns, one row per person, and known
    classes on every `ok` row; each problem is an InputError naming the file and the line."""
    from t2i_debias.core.tables import read_csv

    df = read_csv(labels_csv, LABELS_REQUIRED, unique="person_id",
                  dtype={c: str for c in LABELS_REQUIRED if c != "person_id"} | {"person_id": str})
    vocab = {"gender": GENDERS, "race": tuple(race_classes), "age_group": AGE_GROUPS}
    for i, row in enumerate(df[["status", *vocab]].to_dict("records")):
        if row["status"] != STATUS_OK:
            continue
        for col, classes in vocab.items():
            v = row[col]
            if v and v not in classes:  # empty: not predicted (counted as unknown)
                raise InputError(f"{labels_csv}:{i + 2}: unknown {col} {v!r} on an ok row; expected one of "
                                 f"{list(classes)} (set [analysis] race_classes for another race vocabulary)")
    return df
