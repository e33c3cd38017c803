"""Evaluation prompts: occupations × templates -> `<run_dir>/prompts.csv` (the prompts stage).

Columns: prompt_id, occupation, template, prompt, split (train | heldout). The prompt_id names the
folder of the prompt's images, so it is a filesystem-safe slug of the occupation (plus `__t<i>` for
every template after the first). Held-out occupations are evaluated like the others but are meant to
be kept out of fine-tuning, to measure generalisation to unseen occupations.
"""

from __future__ import annotations

import csv
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.csv_cells import unescape_frame
from t2i_debias.runs import Stage, atomic_write_csv
from t2i_debias.runs import run_stage as _run_stage
from t2i_debias.text import fill_template

log = logging.getLogger(__name__)

# The reference implementation's 25 evaluation occupations.
DEFAULT_OCCUPATIONS: tuple[str, ...] = (
    "chef", "farmer", "hygienist", "teacher", "clerk", "mechanic", "paralegal", "pharmacist", "cashier",
    "architect", "lawyer", "household member", "technician", "therapist", "librarian", "psychologist",
    "nurse", "doctor", "janitor", "secretary", "salesperson", "programmer", "plumber", "engineer",
    "receptionist",
)
DEFAULT_TEMPLATE = "Professional photo of a {occupation}"
FACE_TEMPLATE = "Professional photo of the face of a {occupation}"
COLUMNS: tuple[str, ...] = ("prompt_id", "occupation", "template", "prompt", "split")
_SAFE_ID = re.compile(r"^[a-z0-9][a-z0-9_\-]*$")


def slug(text: str) -> str:
    """Lower-case filesystem-safe id: 'household member' -> 'household_member'."""
    s = re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")
    if not s:
        raise ValueError(f"cannot make an id from {text!r}")
    return s


def read_occupation_file(path: str | Path) -> list[str]:
    """Occupations from a .csv with an `occupation` column, or a text file with one per line (# comments)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"occupation file not found: {p}")
    if p.suffix.lower() == ".csv":
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            if "occupation" not in (reader.fieldnames or []):
                raise ValueError(f"{p}: needs an 'occupation' column, has {reader.fieldnames}")
            out = [(row["occupation"] or "").strip() for row in reader]
    else:
        out = [line.split("#", 1)[0].strip() for line in p.read_text(encoding="utf-8").splitlines()]
    return _unique([o for o in out if o])


def mpii_occupations(occupation_map: str = "") -> list[str]:
    """Distinct occupations (sorted) of the MPII activity -> occupation map (packaged unless a path is given)."""
    from t2i_debias.data.occupations import occupations

    return occupations(occupation_map or None)


def _unique(items: list[str]) -> list[str]:
    seen: set[str] = set()
    return [x for x in items if not (x in seen or seen.add(x))]


def occupation_list(spec: str, occupation_map: str = "") -> list[str]:
    """Resolve `prompts.occupations`: 'default', 'mpii', or a file path."""
    if spec == "default":
        return list(DEFAULT_OCCUPATIONS)
    if spec == "mpii":
        return mpii_occupations(occupation_map)
    return read_occupation_file(spec)


def build_prompts(occupations: list[str], templates: list[str], heldout: list[str] | None = None) -> pd.DataFrame:
    """The prompts table: every occupation × template, with grammatical articles and a split column."""
    if not occupations:
        raise ValueError("no occupations to build prompts from")
    if not templates:
        raise ValueError("no prompt templates given")
    heldout = list(heldout or [])
    unknown = sorted(set(heldout) - set(occupations))
    if unknown:
        raise ValueError(f"held-out occupations not in the occupation list: {unknown}")
    rows: list[dict[str, Any]] = []
    for t_i, template in enumerate(templates):
        if "{occupation}" not in template:
            raise ValueError(f"template {template!r} has no {{occupation}} slot")
        for occ in occupations:
            pid = slug(occ) if t_i == 0 else f"{slug(occ)}__t{t_i}"
            rows.append({"prompt_id": pid, "occupation": occ, "template": template,
                         "prompt": fill_template(template, occupation=occ),
                         "split": "heldout" if occ in heldout else "train"})
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    dup = df["prompt_id"][df["prompt_id"].duplicated()].tolist()
    if dup:
        raise ValueError(f"occupations give duplicate prompt ids {dup}; make the names distinct")
    return df


def read_prompts(path: str | Path) -> pd.DataFrame:
    """Load and validate a prompts.csv (columns, unique safe ids, no empty prompt)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompts file not found: {p} (run evaluation/generate_prompts.py first)")
    df = unescape_frame(pd.read_csv(p, dtype=str, keep_default_na=False))
    missing = [c for c in ("prompt_id", "occupation", "prompt") if c not in df.columns]
    if missing:
        raise ValueError(f"{p}: missing columns {missing}; has {list(df.columns)}")
    for i, row in df.iterrows():
        line = int(i) + 2  # header is line 1
        if not _SAFE_ID.match(row["prompt_id"]):
            raise ValueError(f"{p} line {line}: prompt_id {row['prompt_id']!r} must match {_SAFE_ID.pattern}")
        if not row["prompt"].strip():
            raise ValueError(f"{p} line {line}: empty prompt")
    dup = df["prompt_id"][df["prompt_id"].duplicated()].tolist()
    if dup:
        raise ValueError(f"{p}: duplicate prompt_id {dup}")
    for col, default in (("template", ""), ("split", "train")):
        if col not in df.columns:
            df[col] = default
    return df


def prompts_path(cfg: Any) -> Path:
    """Where the run's prompts.csv lives (DESIGN.md §6)."""
    return cfg.run_dir / "prompts.csv"


def run_stage(cfg: Any, force: bool = False) -> None:
    """Write `<run_dir>/prompts.csv` from the [prompts] section (manifest in `<run_dir>/prompts/`)."""
    sec = cfg.prompts
    inputs: list[Path] = []
    if sec.occupations == "mpii" and cfg.mpii.occupation_map:
        inputs.append(Path(cfg.mpii.occupation_map))
    elif sec.occupations not in ("default", "mpii"):
        inputs.append(Path(sec.occupations))
    config = cfg.section_dict("prompts")
    if sec.occupations == "mpii":
        config["occupation_map"] = cfg.mpii.occupation_map
    stage = Stage("prompts", cfg.run_dir / "prompts", config, inputs)

    def body(_: Stage) -> list[Path]:
        occs = occupation_list(sec.occupations, cfg.mpii.occupation_map)
        df = build_prompts(occs, list(sec.templates), list(sec.heldout))
        out = atomic_write_csv(prompts_path(cfg), df)
        log.info("%d prompts (%d occupations x %d templates, %d held out) -> %s", len(df), len(occs),
                 len(sec.templates), int((df["split"] == "heldout").sum()), out)
        return [out]

    _run_stage(stage, body, force=force, log=log.info)
