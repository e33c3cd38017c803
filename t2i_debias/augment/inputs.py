"""The enriched stage's inputs: the labelled people of mpii/persons.csv + labels/labels.csv (DESIGN.md §6).

A person enters the plan when labels.csv says `ok` and names an occupation that is not held out;
every other row is counted by reason. Bad content raises AugmentInputError naming file and line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from t2i_debias.augment.counterfactual import Demographics
from t2i_debias.core.errors import InputError
from t2i_debias.core.tables import read_csv
from t2i_debias.core.vocab import STATUS_OK

_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
PERSONS_COLUMNS = ("person_id", "image", "head_x1", "head_y1", "head_x2", "head_y2", "scale", "objpos_x", "objpos_y")
LABELS_COLUMNS = ("person_id", "occupation", "status", "gender", "race", "age_group")


class AugmentInputError(InputError):
    """persons.csv / labels.csv content that cannot be used; the message names the file and line."""


@dataclass
class Person:
    """One labelled person with an occupation: where their image is and what the labels say."""

    person_id: str
    image: str
    occupation: str
    demographics: Demographics
    head_box: tuple[float, float, float, float] | None
    scale: float | None
    objpos: tuple[float, float] | None


def _floats(row: pd.Series, cols: Sequence[str], where: str) -> tuple[float, ...] | None:
    vals = [str(row[c]).strip() for c in cols]
    if all(v == "" for v in vals):
        return None
    try:
        return tuple(float(v) for v in vals)
    except ValueError as e:
        raise AugmentInputError(f"{where}: bad number in {', '.join(cols)}: {vals}") from e


def _read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    if not path.is_file():
        raise AugmentInputError(f"missing input {path} (run the earlier stages first)")
    return read_csv(path, columns, error=AugmentInputError)  # names the file (and line) for encoding and columns


def load_people(persons_csv: str | Path, labels_csv: str | Path, heldout: Sequence[str] = ()
                ) -> tuple[list[Person], dict[str, int]]:
    """Labelled people with an occupation, in labels.csv order, and counts of rows left out (by reason).

    Occupations in `heldout` (prompts.heldout) are left out, so fine-tuning never sees them and
    generalisation to unseen occupations can be measured.
    """
    held = {" ".join(h.lower().split()) for h in heldout}
    persons_csv, labels_csv = Path(persons_csv), Path(labels_csv)
    persons = _read_csv(persons_csv, PERSONS_COLUMNS)
    labels = _read_csv(labels_csv, LABELS_COLUMNS)
    by_id: dict[str, tuple[int, pd.Series]] = {}
    for i, row in persons.iterrows():
        by_id[row["person_id"]] = (int(i) + 2, row)
    dropped = {"status_not_ok": 0, "no_occupation": 0, "heldout_occupation": 0}
    people: list[Person] = []
    seen: set[str] = set()
    for i, row in labels.iterrows():
        where = f"{labels_csv}:{int(i) + 2}"
        if row["status"] != STATUS_OK:
            dropped["status_not_ok"] += 1
            continue
        occupation = " ".join(row["occupation"].split())
        if not occupation:
            dropped["no_occupation"] += 1
            continue
        if occupation.lower() in held:
            dropped["heldout_occupation"] += 1
            continue
        pid = row["person_id"]
        if not _SAFE_ID.match(pid):
            raise AugmentInputError(f"{where}: person_id {pid!r} is not a safe file name")
        if pid in seen:
            raise AugmentInputError(f"{where}: duplicate person_id {pid!r}")
        seen.add(pid)
        if pid not in by_id:
            raise AugmentInputError(f"{where}: person_id {pid!r} is not in {persons_csv}")
        age = row["age_group"] or None
        try:
            demo = Demographics(row["gender"], row["race"], age)
        except ValueError as e:
            raise AugmentInputError(f"{where}: {e}") from e
        pline, prow = by_id[pid]
        pwhere = f"{persons_csv}:{pline}"
        head = _floats(prow, ("head_x1", "head_y1", "head_x2", "head_y2"), pwhere)
        scale = _floats(prow, ("scale",), pwhere)
        objpos = _floats(prow, ("objpos_x", "objpos_y"), pwhere)
        people.append(Person(pid, prow["image"], occupation, demo, head,  # type: ignore[arg-type]
                             scale[0] if scale and scale[0] > 0 else None, objpos))  # type: ignore[arg-type]
    return people, dropped


__all__ = ["LABELS_COLUMNS", "PERSONS_COLUMNS", "AugmentInputError", "Person", "load_people"]
