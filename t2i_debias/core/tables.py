"""Read a text or CSV input file so that every failure names the file, and the line where there is one.

Non-UTF-8 bytes, a malformed CSV, missing columns and duplicate ids each raise an `InputError`
("FILE:LINE: what is wrong; how to fix it"), never a bare UnicodeDecodeError or KeyError.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from t2i_debias.core.csv_cells import unescape_frame
from t2i_debias.core.errors import InputError, MissingInputError


def read_text(path: str | os.PathLike, error: type[InputError] = InputError) -> str:
    """The file's text; bytes that are not UTF-8 raise `error` naming the file, line and column."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError as e:
        raise MissingInputError(f"{p}: no such file") from e
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise error(f"{p}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x} at column {col}); "
                    "save the file as UTF-8") from None


def read_csv(path: str | os.PathLike, required: Sequence[str] = (), unique: str | None = None,
             dtype: Any = str, error: type[InputError] = InputError) -> Any:
    """A CSV as a DataFrame (empty cells as ''), checked for encoding, shape, `required` columns and
    duplicate values of `unique`; each problem raises `error` naming the file (and line)."""
    import pandas as pd

    p = Path(path)
    text = read_text(p, error)
    try:
        df = pd.read_csv(io.StringIO(text), dtype=dtype, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise error(f"{p}: empty file; expected a header with columns {list(required)}") from None
    except pd.errors.ParserError as e:
        raise error(f"{p}: not a valid CSV file: {e}") from None
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise error(f"{p}: missing column(s) {missing}; expected at least {list(required)} "
                    f"(found {list(df.columns)})")
    if unique is not None and unique in df.columns:
        first: dict[str, int] = {}
        for i, v in enumerate(df[unique].astype(str)):
            if v in first:
                raise error(f"{p}:{i + 2}: duplicate {unique} {v!r} (first on line {first[v]})")
            first[v] = i + 2
    return unescape_frame(df)
