"""Read and validate `enriched/metadata.jsonl` (one triplet a line) into `Triplet` records.

Every line is checked before training sees it: all fields present with the right types, image
paths relative and inside the folder (core.files.safe_join: no '..', no absolute path), the files
exist, and attributes come from t2i_debias.core.vocab (an age group may be null when the labels
backend gave none; a measured attribute or confidence may be null when nothing was measured). A bad
line raises `MetadataError` naming the file and the 1-based line number. This module imports only
the schema (schema.py), never the generation stack.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from t2i_debias.augment.schema import (
    FILE_FIELDS,
    GENERATED,
    MEASURED_CONFS,
    METADATA,
    METADATA_FIELDS,
    TripletRecord,
    measured_fields,
)
from t2i_debias.core.errors import InputError
from t2i_debias.core.files import safe_join
from t2i_debias.core.tables import read_text
from t2i_debias.core.vocab import AGE_GROUPS, GENDERS, RACES

MEASURED_VOCAB: dict[str, tuple[str, ...]] = {"gender": GENDERS, "race": RACES, "age_group": AGE_GROUPS}
NEW_FIELDS: frozenset[str] = frozenset(f for m in GENERATED for f in measured_fields(m))
TEXT_FIELDS = ("anchor_text", "positive_text", "negative_text", "occupation", "person_id", "generator")


class MetadataError(InputError):
    """A metadata.jsonl line that cannot be used; the message starts with 'FILE:LINE:'."""


@dataclass(frozen=True)
class Triplet(TripletRecord):
    """One validated metadata.jsonl line plus the absolute paths of its three images."""

    anchor_path: Path
    positive_path: Path
    negative_path: Path


def _validate(rec: Any, root: Path, check_files: bool) -> Triplet:
    """The Triplet of one parsed line; raises ValueError saying what is wrong."""
    if not isinstance(rec, dict):
        raise ValueError(f"expected a JSON object, got {type(rec).__name__}")
    missing = [f for f in METADATA_FIELDS if f not in rec]
    if missing and set(missing) <= NEW_FIELDS:
        raise ValueError(f"missing fields {missing}: this enriched/ was written before measured attributes were "
                         "recorded; rebuild it with --force (finetune/prepare_dataset_finetune.py --force)")
    if missing:
        raise ValueError(f"missing fields {missing}")
    extra = sorted(set(rec) - set(METADATA_FIELDS))
    if extra:
        raise ValueError(f"unknown fields {extra}")
    paths = []
    for f in FILE_FIELDS:
        rel = rec[f]
        if not isinstance(rel, str):
            raise ValueError(f"{f} must be a string, got {rel!r}")
        path = safe_join(root, rel)  # raises for absolute paths, '..' and escapes
        if check_files and not path.is_file():
            raise ValueError(f"{f} {rel!r}: no such file in {root}")
        paths.append(path)
    for f in TEXT_FIELDS:
        if not isinstance(rec[f], str) or not rec[f].strip():
            raise ValueError(f"{f} must be a non-empty string, got {rec[f]!r}")
    for m in ("anchor", "positive", "negative"):
        if rec[f"{m}_gender"] not in GENDERS:
            raise ValueError(f"{m}_gender {rec[f'{m}_gender']!r} is not one of {GENDERS}")
        if rec[f"{m}_race"] not in RACES:
            raise ValueError(f"{m}_race {rec[f'{m}_race']!r} is not one of {RACES}")
        age = rec[f"{m}_age_group"]
        if age is not None and age not in AGE_GROUPS:
            raise ValueError(f"{m}_age_group {age!r} is not one of {AGE_GROUPS} or null")
    for f in ("seed", "positive_tries", "negative_tries"):
        v = rec[f]
        if not isinstance(v, int) or isinstance(v, bool) or v < (0 if f == "seed" else 1):
            raise ValueError(f"{f} must be an integer >= {0 if f == 'seed' else 1}, got {v!r}")
    for f in ("positive_agreement", "negative_agreement"):
        if rec[f] is not None and not isinstance(rec[f], bool):
            raise ValueError(f"{f} must be true, false or null, got {rec[f]!r}")
    for m in GENERATED:
        for a, vocab in MEASURED_VOCAB.items():
            v = rec[f"{m}_measured_{a}"]
            if v is not None and v not in vocab:
                raise ValueError(f"{m}_measured_{a} {v!r} is not one of {vocab} or null")
        for c in MEASURED_CONFS:
            v = rec[f"{m}_measured_{c}"]
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0):
                raise ValueError(f"{m}_measured_{c} must be a number in [0, 1] or null, got {v!r}")
            if isinstance(v, int):
                rec = {**rec, f"{m}_measured_{c}": float(v)}
        if not isinstance(rec[f"{m}_verified"], bool):
            raise ValueError(f"{m}_verified must be true or false, got {rec[f'{m}_verified']!r}")
        if rec[f"{m}_verified"] and (rec[f"{m}_measured_gender"] is None or rec[f"{m}_measured_race"] is None):
            raise ValueError(f"{m}_verified is true but nothing was measured ({m}_measured_gender/race null)")
    values = {k: rec[k] for k in METADATA_FIELDS}
    return Triplet(**values, anchor_path=paths[0], positive_path=paths[1], negative_path=paths[2])


def read_metadata(enriched_dir: str | Path, check_files: bool = True) -> list[Triplet]:
    """Every triplet of `<enriched_dir>/metadata.jsonl`, validated; blank lines are allowed."""
    root = Path(enriched_dir)
    path = root / METADATA
    if not path.is_file():
        raise MetadataError(f"{path}: not found (run the enriched stage: finetune/prepare_dataset_finetune.py)")
    out: list[Triplet] = []
    seen: dict[str, int] = {}
    text = read_text(path, MetadataError)  # non-UTF-8 bytes: "FILE:LINE: not UTF-8 text ..."
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            t = _validate(rec, root, check_files)
        except (json.JSONDecodeError, ValueError) as e:
            raise MetadataError(f"{path}:{n}: {e}") from e
        if t.person_id in seen:
            raise MetadataError(f"{path}:{n}: person_id {t.person_id!r} already on line {seen[t.person_id]}")
        seen[t.person_id] = n
        out.append(t)
    return out
