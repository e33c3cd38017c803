"""persons.csv (DESIGN.md §7): its columns, which persons of the MPII file it holds, and how a row is written.

Every person in the file is accounted for: written to persons.csv or counted under a reason (SKIP_REASONS:
wrong_split, bad_image_name, no_activity, unmapped_activity, not_occupation) in `mpii/load_report.json`
and the stage manifest. A row is a dict keyed by PERSONS_COLUMNS.
"""

from __future__ import annotations

import csv
import io
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

from t2i_debias.core.options import SPLITS
from t2i_debias.data.mpii import MpiiPerson, MpiiRelease
from t2i_debias.data.occupations import OccupationMap

PERSONS_COLUMNS: tuple[str, ...] = (
    "person_id", "image", "image_index", "ridx", "split", "category", "activity", "act_id", "occupation",
    "head_x1", "head_y1", "head_x2", "head_y2", "scale", "objpos_x", "objpos_y", "n_people",
    "single_person", "image_exists",
)
SKIP_REASONS = ("wrong_split", "bad_image_name", "no_activity", "unmapped_activity", "not_occupation")
IMAGE_NAME = re.compile(r"^\d{9}\.jpg$")


class MissingImagesError(FileNotFoundError):
    """Images referenced by persons.csv are missing and `strict` is set."""


def skip_reason(p: MpiiPerson, mapped: bool, occupation: str, split: str, occupations_only: bool
                ) -> str | None:
    """Why person `p` is not written to persons.csv, or None when it is.

    mapped: the activity is in the occupation map; occupation: its occupation ('' if none).
    """
    if split != "all" and p.split != split:
        return "wrong_split"
    if not _safe_name(p.image):
        return "bad_image_name"
    if occupations_only:
        if not p.activity:
            return "no_activity"
        if not mapped:
            return "unmapped_activity"
        if not occupation:
            return "not_occupation"
    return None


def _safe_name(name: str) -> bool:
    return bool(name) and "/" not in name and "\\" not in name and "\0" not in name and name not in (".", "..")


def _fmt(v: Any) -> Any:
    return "" if v is None else v


def person_row(p: MpiiPerson, occupation: str, image_exists: bool) -> dict[str, Any]:
    """One persons.csv row, keyed by PERSONS_COLUMNS (in their order); empty cells for absent values."""
    hb = p.head_box or (None, None, None, None)
    op = p.objpos or (None, None)
    values = (f"{p.image_index}_{p.ridx}", p.image, p.image_index, p.ridx, p.split, p.category, p.activity,
              p.act_id, occupation, *map(_fmt, hb), _fmt(p.scale), *map(_fmt, op), p.n_people,
              int(p.single_person), int(image_exists))
    return dict(zip(PERSONS_COLUMNS, values, strict=True))


def image_listing(images_dir: str | Path) -> set[str]:
    """Names of the files directly inside `images_dir` (empty set when it does not exist)."""
    try:
        with os.scandir(images_dir) as it:
            return {e.name for e in it}
    except FileNotFoundError:
        return set()


def select_persons(release: MpiiRelease, occ_map: OccupationMap, split: str = "train",
                   occupations_only: bool = True, present: set[str] | None = None
                   ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """persons.csv rows and a report in which written + skipped persons add up to the file's total."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    present = present or set()
    rows: list[dict[str, Any]] = []
    reasons: Counter = Counter()
    unmapped: Counter = Counter()
    missing: set[str] = set()
    odd_names: set[str] = set()
    bad_names: list[str] = []  # persons skipped as bad_image_name, named in the report
    lookups: dict[str, tuple[bool, str]] = {}  # activity -> (in the map, occupation)
    for p in release.persons:
        if p.activity not in lookups:
            lookups[p.activity] = ((p.activity in occ_map, occ_map.get(p.activity) or "")
                                   if p.activity else (False, ""))
        mapped, occ = lookups[p.activity]
        reason = skip_reason(p, mapped, occ, split, occupations_only)
        if p.activity and not mapped and reason in (None, "unmapped_activity"):
            unmapped[p.activity] += 1
        if reason is not None:
            reasons[reason] += 1
            if reason == "bad_image_name":
                bad_names.append(f"{p.image_index}_{p.ridx}: {p.image!r}")
            continue
        exists = p.image in present
        if not exists:
            missing.add(p.image)
        if not IMAGE_NAME.match(p.image):
            odd_names.add(p.image)
        rows.append(person_row(p, occ, exists))
    total = len(release.persons)
    assert len(rows) + sum(reasons.values()) == total, "persons not accounted for"
    report = {
        "images_in_file": release.n_images,
        "images_without_people": release.images_without_people,
        "persons_in_file": total,
        "persons_written": len(rows),
        "not_written": {r: reasons.get(r, 0) for r in SKIP_REASONS},
        "images_written": len({r["image"] for r in rows}),
        "missing_images": len(missing),
        "persons_with_missing_image": sum(1 for r in rows if not r["image_exists"]),
        "nonstandard_image_names": sorted(odd_names)[:100],
        "bad_image_names": bad_names[:100],
        "unmapped_activities": dict(unmapped.most_common()),
        "occupations": len({r["occupation"] for r in rows if r["occupation"]}),
        "split": split,
        "occupations_only": occupations_only,
        "parse_stats": dict(release.stats),
        "version": release.version,
    }
    return rows, {**report, "_missing": sorted(missing)}


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    """persons.csv text (header + rows)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, PERSONS_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()
