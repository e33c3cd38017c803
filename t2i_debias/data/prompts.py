"""Evaluation prompts: occupations × templates -> `<run_dir>/prompts.csv` (the prompts stage writes it).

Columns: prompt_id, occupation, template, prompt, split (train | heldout). The prompt_id names the
folder of the prompt's images, so it is a filesystem-safe slug of the occupation (plus `__t<i>` for
every template after the first); a name without ASCII letters or digits (医生, طبيب) gets `xn_` and its
punycode. Held-out occupations are evaluated like the others but are meant to be kept out of
fine-tuning, to measure generalisation to unseen occupations.

Occupation files (.txt, one name per line, or .csv with an `occupation` column) are UTF-8, with or
without a byte-order mark. In a .txt file `#` starts a comment at the start of a line or after
whitespace, so `C# developer` is a name and `plumber  # trade` is `plumber`. Names are normalised to
Unicode NFC; a name repeated in another spelling (NFD) is merged with a warning naming both rows. NUL,
other control characters and the bidi overrides (U+202A-U+202E, U+2066-U+2069) are errors naming the
file and row. Every prompt must fit the base model's tokenizer: a longer one is an error naming the
occupation, its row and the limit (the tokenizer would cut it silently, and two long occupations would
get the same images).
"""

from __future__ import annotations

import csv
import logging
import re
import unicodedata
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.core.csv_cells import unescape_frame
from t2i_debias.core.errors import InputError
from t2i_debias.core.text import fill_template

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
# A comment in an occupations .txt file: `#` at the start of a line or after whitespace (`C# developer` stays).
_COMMENT = re.compile(r"(^|\s)#.*$", re.S)
# Bidirectional embeddings, overrides and isolates: they make a name display as another one.
_BIDI_CONTROLS = frozenset(chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))


def slug(text: str) -> str:
    """Lower-case filesystem-safe id: 'household member' -> 'household_member'; a name with no ASCII letter
    or digit -> 'xn_' + its punycode ('医生' -> 'xn_ekrq20f')."""
    s = re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")
    if not s and text.strip():
        code = text.strip().lower().encode("punycode").decode("ascii")
        tail = re.sub(r"[^a-z0-9]+", "_", code).strip("_")
        s = "xn_" + tail if tail else ""  # '??' has no letter in any script: no id
    if not s:
        raise InputError(f"occupation {text!r} cannot be used: its id needs ASCII letters or digits "
                         "(write it in Latin letters, or add them beside the name)")
    return s


def clean_occupation(raw: str, where: str) -> str:
    """A name as written in an occupation file, stripped and NFC-normalised; InputError naming `where` for a
    control character (NUL, ...) or a bidi override."""
    name = raw.strip().lstrip("\ufeff").strip()
    for ch in name:
        if ch in _BIDI_CONTROLS or unicodedata.category(ch) == "Cc":
            raise InputError(f"{where}: occupation {name!r} contains the control character U+{ord(ch):04X} "
                             f"({unicodedata.name(ch, 'control')}); remove it from the name")
    return unicodedata.normalize("NFC", name)


def read_occupation_rows(path: str | Path) -> list[tuple[str, str]]:
    """(name, "file line N") for each distinct occupation of a .csv (`occupation` column) or .txt file (one per
    line, # comments), in file order; a spelling that normalises to an earlier name is merged with a warning."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"occupation file not found: {p}")
    raw: list[tuple[str, int]] = []
    try:
        if p.suffix.lower() == ".csv":
            with open(p, newline="", encoding="utf-8-sig") as fh:
                reader = csv.DictReader(fh)
                if "occupation" not in (reader.fieldnames or []):
                    raise InputError(f"{p}: needs an 'occupation' column, has {reader.fieldnames}")
                raw = [((row["occupation"] or ""), reader.line_num) for row in reader]
        else:
            text = p.read_text(encoding="utf-8-sig")
            raw = [(_COMMENT.sub("", line), n) for n, line in enumerate(text.splitlines(), 1)]
    except UnicodeDecodeError as e:
        raise InputError(f"{p}: not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    out: list[tuple[str, str]] = []
    first: dict[str, tuple[str, int]] = {}
    for value, n in raw:
        name = clean_occupation(value, f"{p} line {n}")
        if not name:
            continue
        if name in first:
            spelled, line = first[name]
            if spelled != value.strip():
                log.warning("%s line %d: occupation %r is %r of line %d in another Unicode spelling; merged",
                            p, n, value.strip(), spelled, line)
            continue
        first[name] = (value.strip(), n)
        out.append((name, f"{p} line {n}"))
    return out


def read_occupation_file(path: str | Path) -> list[str]:
    """Occupations from a .csv with an `occupation` column, or a text file with one per line (# comments)."""
    return [name for name, _ in read_occupation_rows(path)]


def mpii_occupations(occupation_map: str = "") -> list[str]:
    """Distinct occupations (sorted) of the MPII activity -> occupation map (packaged unless a path is given)."""
    from t2i_debias.data.occupations import occupations

    return occupations(occupation_map or None)


def occupation_list(spec: str, occupation_map: str = "") -> list[str]:
    """Resolve `prompts.occupations`: 'default', 'mpii', or a file path."""
    return [name for name, _ in occupation_rows(spec, occupation_map)]


def occupation_rows(spec: str, occupation_map: str = "") -> list[tuple[str, str]]:
    """`occupation_list` with where each name comes from (a file and line, or the built-in list), for errors."""
    if spec == "default":
        return [(o, "the default occupation list") for o in DEFAULT_OCCUPATIONS]
    if spec == "mpii":
        src = occupation_map or "the packaged MPII occupation map"
        return [(o, str(src)) for o in mpii_occupations(occupation_map)]
    return read_occupation_rows(spec)


def build_prompts(occupations: list[str], templates: list[str], heldout: list[str] | None = None,
                  where: dict[str, str] | None = None) -> pd.DataFrame:
    """The prompts table: every occupation × template, with grammatical articles and a split column.

    `where` (occupation -> "file line N") names the row in errors about an occupation."""
    if not occupations:
        raise ValueError("no occupations to build prompts from")
    if not templates:
        raise ValueError("no prompt templates given")
    heldout = list(heldout or [])
    # A held-out occupation need not be in the source list: with `occupations = "mpii"` it is one the data
    # lacks (the toy world's pilot and teacher), evaluated to see whether the debiasing carries over.
    occupations = list(occupations) + [h for h in heldout if h not in occupations]
    rows: list[dict[str, Any]] = []
    for t_i, template in enumerate(templates):
        if "{occupation}" not in template:
            raise ValueError(f"template {template!r} has no {{occupation}} slot")
        for occ in occupations:
            try:
                base_id = slug(occ)
            except ValueError:
                src = (where or {}).get(occ, "the occupation list")
                raise InputError(f"{src}: occupation {occ!r} has no letter or digit to name its folder by; "
                                 "give it a name") from None
            pid = base_id if t_i == 0 else f"{base_id}__t{t_i}"
            rows.append({"prompt_id": pid, "occupation": occ, "template": template,
                         "prompt": fill_template(template, occupation=occ),
                         "split": "heldout" if occ in heldout else "train"})
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    dup = df["prompt_id"][df["prompt_id"].duplicated()].tolist()
    if dup:
        names = sorted(set(df.loc[df["prompt_id"].isin(dup), "occupation"]))
        rows = "; ".join(f"{n!r} ({(where or {}).get(n, 'the occupation list')})" for n in names)
        raise InputError(f"occupations give duplicate prompt ids {dup}: {rows}; make the names distinct")
    return df


def base_tokenizers(base: str, name: str) -> list[tuple[str, Any]]:
    """(label, tokenizer) of a resolved base model (`name`: its spec, for the label), one per text encoder (SDXL
    has two); a tokenizer that does not load is left out with a warning (then token limits go unchecked)."""
    from transformers import AutoTokenizer

    out = []
    for sub in ("tokenizer", "tokenizer_2"):
        if Path(base).is_dir() and not (Path(base) / sub).is_dir():
            continue
        try:
            out.append((f"{name} {sub}", AutoTokenizer.from_pretrained(base, subfolder=sub)))
        except (OSError, ValueError) as e:
            if sub == "tokenizer":
                log.warning("prompt lengths not checked: no tokenizer loads from %s (%s)", base, e)
    return out


def check_token_limits(df: pd.DataFrame, tokenizers: list[tuple[str, Any]], where: dict[str, str]) -> None:
    """InputError naming the occupation, its row and the limit when a prompt has more tokens than a tokenizer
    reads (start and end tokens included): the text encoder would see it cut, silently."""
    for label, tok in tokenizers:
        limit = int(getattr(tok, "model_max_length", 0) or 0)
        if not 0 < limit < 100_000:  # "no limit" is a huge sentinel
            continue
        for row in df.itertuples(index=False):
            n = len(tok(row.prompt, truncation=False)["input_ids"])
            if n > limit:
                raise InputError(
                    f"{where.get(row.occupation, 'the occupation list')}: occupation {row.occupation!r} makes the "
                    f"prompt {n} tokens long, over the {limit} that {label} reads (the rest would be cut off, so "
                    f"long occupations would look alike): shorten the name or the template {row.template!r}")


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

