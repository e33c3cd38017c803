"""CSV cells a spreadsheet will not run as formulas (OWASP "CSV injection"), and their exact text read back.

Every CSV the project writes goes through `core.files.atomic_write_csv`, which calls `escape_frame`: a text cell
that starts with `=`, `+`, `-`, `@`, a tab or a carriage return (an occupation or model name such as
`=HYPERLINK(...)`) gets a leading single quote. Numbers, and text that is a number (`-0.5`), stay as they
are. A cell that already starts with quotes before such a character gets one more quote, so that
`unescape_frame`, which removes one, gives every cell back exactly.
"""

from __future__ import annotations

from typing import Any

FORMULA_START: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
QUOTE = "'"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _escaped_form(text: str) -> bool:
    """True for quotes followed by a formula start: what `escape_cell` writes (and must quote once more)."""
    rest = text.lstrip(QUOTE)
    return rest != text and rest.startswith(FORMULA_START) and not _is_number(rest)


def escape_cell(value: Any) -> Any:
    """`value`, with a leading quote when it is text a spreadsheet would read as a formula."""
    if not isinstance(value, str) or not value:
        return value
    if (value.startswith(FORMULA_START) and not _is_number(value)) or _escaped_form(value):
        return QUOTE + value
    return value


def unescape_cell(value: Any) -> Any:
    """The text `escape_cell` was given."""
    return value[1:] if isinstance(value, str) and _escaped_form(value) else value


def _map_text(df: Any, fn: Any) -> Any:
    """A copy of DataFrame `df` with `fn` applied to the cells of its text (object/string) columns."""
    from pandas.api.types import is_string_dtype

    text_cols = [c for c in df.columns if df[c].dtype == object or is_string_dtype(df[c].dtype)]
    if not text_cols:
        return df
    out = df.copy()
    for c in text_cols:
        out[c] = df[c].map(fn)
    return out


def escape_frame(df: Any) -> Any:
    """A copy of `df` safe to open in a spreadsheet (`escape_cell` on every text cell)."""
    return _map_text(df, escape_cell)


def unescape_frame(df: Any) -> Any:
    """A CSV read back (`unescape_cell` on every text cell): the cells as they were before writing."""
    return _map_text(df, unescape_cell)
