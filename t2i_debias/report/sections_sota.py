"""The report's state-of-the-art section: sota/comparison.csv rendered as one table, and the comparison plots.

The table is rendered from the CSV (comparison.md is the same table for readers of the folder); its column,
best-value and settings rules, and the toy world's quality columns, come from the SOTA module, imported here
only.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.core.layout import RunLayout
from t2i_debias.report.comparison import (
    NO_OURS,
    OURS_COLUMN,
    VS_BASE,
    VS_OURS,
    best_values,
    is_best,
    ours_of,
    settings_flag,
    settings_header,
    table_columns,
    view_notes,
)
from t2i_debias.report.kit import (
    _num,
    error,
    esc,
    floor_span,
    fmt,
    html_table,
    missing,
    paired_span,
    plots_row,
    read_csv,
    table,
    td_key,
    value_cell,
)

_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")


def _inline(s: str) -> str:
    """Escaped text with markdown's **bold** and `code` (the comparison's settings line is written that way)."""
    return _CODE.sub(r"<code>\1</code>", _BOLD.sub(r"<b>\1</b>", esc(s)))


def _paired(df: pd.DataFrame, r: Any, c: str, suffixes: dict[str, str], against: str) -> str:
    """The span of row r's paired Δ of column c against `against` (nothing for that model itself)."""
    if c + suffixes["diff"] not in df.columns or r["method"] == against:
        return ""
    pm = {k: r.get(c + suffixes[k]) for k in ("diff", "p", "verdict")}
    return paired_span({**pm, "ci": [r.get(c + suffixes["lo"]), r.get(c + suffixes["hi"])]},
                       "Δ" if against == "base" else f"Δ vs {against}")


def _same_printed(a: float, b: float) -> bool:
    """Two values that print the same on the page (the HTML table's tie rule)."""
    return fmt(a) == fmt(b)


def _sota_cells(df: pd.DataFrame, r: Any, cols: list[str], best: dict[str, float], ours: str | None) -> list[str]:
    """The metric cells of a method that ran: value, CI below, floor and excess, paired Δs; the best in bold."""
    cells = []
    for c in cols:
        v = _num(r.get(c))
        ci = [r.get(f"{c}_lo"), r.get(f"{c}_hi")] if f"{c}_lo" in df.columns else None
        extra = floor_span(r.get(f"{c}_floor"), r.get(f"{c}_excess")) if f"{c}_floor" in df.columns else ""
        extra += _paired(df, r, c, VS_BASE, "base") + (_paired(df, r, c, VS_OURS, ours) if ours else "")
        bold = is_best(c, r["method"], v, best, _same_printed)
        cells.append(value_cell(v, c, ci=ci, bold=bold, ci_below=True, extra=extra))
    return cells


def _sota_notes(df: pd.DataFrame, cols: list[str], tied: set[str], ours: str | None, status: pd.Series) -> list[str]:
    """The notes under the SOTA table: how to read it, ties, no ours, the toy columns, methods not run."""
    out = []
    note = ("Bias: lower is better (entropy, CLIP, face rate: higher); 95% bootstrap CI below each value, then the "
            "noise floor and excess, then Δ = method − base (paired 95% CI, p; ✓ / ✗ only where the CI excludes "
            "0)" + (f", then Δ vs {esc(ours)} = method − ours ({esc(ours)}), paired the same way" if ours else "")
            + "; <b>bold</b> = best of the column")
    if tied:
        note += f" (no bold where all methods tie: {esc(', '.join(sorted(tied)))})"
    out.append(f'<p class="note">{note}.</p>')
    if OURS_COLUMN in df.columns and ours is None:
        out.append(f'<p class="note">{esc(NO_OURS)}</p>')
    out += [f'<p class="note">{esc(note)}</p>' for note in view_notes(cols)]  # registered views, e.g. the toy's
    not_run = [(r["method"], status[i]) for i, r in df.iterrows() if status[i] != "ok"]
    if not_run:
        out.append("<p>Not run:</p><ul>" + "".join(f"<li><b>{esc(m)}</b>: {esc(s)}</li>" for m, s in not_run)
                   + "</ul>")
    return out


def sota_table(df: pd.DataFrame) -> str:
    """sota/comparison.csv as method × metric (the columns of comparison.md), CI below each value, the best
    value per column in bold (as printed; none when every method ties), and why a method did not run."""
    if "method" not in df.columns:
        return table(df)
    status = df["status"].fillna("ok").astype(str) if "status" in df.columns else pd.Series("ok", index=df.index)
    ran = df[status == "ok"]
    cols = [c for c in table_columns(df) if c in df.columns and pd.to_numeric(df[c], errors="coerce").notna().any()]
    best = best_values(ran, cols, shown=fmt)  # a column where every method prints the same value has no best
    tied = set(best_values(ran, cols)) - set(best)
    mixed = "settings" in df.columns and (df["settings"].map(settings_flag) != "").any()
    ours = ours_of(df)
    rows = []
    for i, r in df.iterrows():
        row = [td_key(r["method"])] + ([td_key(r.get("kind", ""))] if "kind" in df.columns else [])
        if status[i] != "ok":
            rows.append(row + ['<td class="zero">n/a</td>'] * (len(cols) + mixed))
            continue
        row += _sota_cells(df, r, cols, best, ours)
        if mixed:
            flag = settings_flag(r.get("settings"))
            row.append(f'<td class="k{" worse" if flag else ""}">{esc("⚠ " + flag if flag else "same")}</td>')
        rows.append(row)
    head = (["method"] + (["kind"] if "kind" in df.columns else []) + [c.replace("_", " ") for c in cols]
            + (["settings"] if mixed else []))
    out = []
    if "base_model" in df.columns and ran["base_model"].nunique() == 1:
        out.append(f"<p>Base model of every method: <code>{esc(ran['base_model'].iloc[0])}</code>. Same prompts, "
                   "seeds, classifier and metrics for all rows.</p>")
    out.append(f"<p>{_inline(settings_header(df))}</p>")
    out.append(html_table(head, rows, left=2 if "kind" in df.columns else 1))
    return "".join(out + _sota_notes(df, cols, tied, ours, status))


def section_sota(run_dir: Path) -> str:
    """sota/comparison.csv as a table and the comparison plots."""
    lay = RunLayout(run_dir)
    sdir, csv = lay.sota, lay.comparison_csv
    if not csv.is_file():
        return missing("sota/comparison.csv (sota_evaluation stage)")
    df, err = read_csv(csv)
    pngs = sorted(sdir.glob("*.png")) + sorted(sdir.glob("plots/*.png"))
    return (error(err) if err else sota_table(df)) + plots_row(pngs, sdir, "sota")
