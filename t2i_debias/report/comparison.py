"""The SOTA comparison table (DESIGN.md §5), rendered from the bias and quality files of every row.

- `comparison_rows`: one row per method from bias/<m>/summary.json, quality/<m>.json and the paired
  comparison against ours; `check_settings` flags (or refuses) rows generated with other settings.
- `to_markdown` / `plot`: comparison.md and the bar charts. Which columns they show, which way each is
  better and what note goes with them come from the column registry (`metrics.columns`): whichever
  registered columns the CSV holds, with no world (the toy one) named here.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.core.config import BiasSection
from t2i_debias.core.layout import RunLayout
from t2i_debias.metrics import columns as registry
from t2i_debias.metrics.bias import METRIC_NAMES
from t2i_debias.metrics.columns import TABLE_COLUMNS, TableView
from t2i_debias.metrics.paired import NOT_COMPUTED

ATTRIBUTES: tuple[str, ...] = ("gender", "race", "race4", "gender_race")
QUALITY_METRICS: tuple[str, ...] = ("fid", "kid", "clip_t", "clip_i")


def table_view(df: pd.DataFrame) -> TableView | None:
    """The registered view whose columns hold a number in `df` (the toy world's), else None (the default)."""
    for view in registry.VIEWS.values():
        if any(c in df.columns and df[c].map(as_number).notna().any() for c in view.when):
            return view
    return None


def table_columns(df: pd.DataFrame) -> tuple[str, ...]:
    """The columns comparison.md and report.html show: a registered view's when its columns are there."""
    view = table_view(df)
    return view.columns if view else TABLE_COLUMNS


def view_notes(cols: Sequence[str]) -> list[str]:
    """The notes of the registered views whose own columns are among the shown `cols`."""
    return [v.note for v in registry.VIEWS.values() if set(v.when) & set(cols)]


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


# What a bias number was generated with (bias/<model>/summary.json "generation"); rows must agree.
SETTINGS_KEYS: tuple[str, ...] = ("guidance_scale", "sampler", "num_inference_steps", "resolution",
                                  "images_per_prompt")
SIG_MARK = {"less biased": "✓", "more biased": "✗"}


class MixedSettingsError(ValueError):
    """Rows of one comparison table were generated with different settings."""


def _pair(v: Any) -> tuple[Any, Any]:
    return tuple(v) if isinstance(v, list | tuple) and len(v) == 2 else (None, None)


# Column suffixes (after `<attribute>_<metric>`) of a paired comparison (row − reference): its difference, 95% CI,
# p-value and verdict. Against the base: bias/<model>/summary.json `paired_vs_base`; against ours: `paired_vs_ours`.
VS_BASE: dict[str, str] = {"diff": "_diff", "lo": "_diff_lo", "hi": "_diff_hi", "p": "_p", "verdict": "_verdict"}
VS_OURS: dict[str, str] = {"diff": "_vs_ours", "lo": "_vs_ours_lo", "hi": "_vs_ours_hi", "p": "_vs_ours_p",
                           "verdict": "_vs_ours_verdict"}
OURS_COLUMN = "ours_model"  # comparison.csv: the row every row is paired with as "ours" (empty: none trained)


def paired_cells(c: str, pm: dict[str, Any] | None, suffixes: dict[str, str]) -> dict[str, Any]:
    """Columns `<c><suffix>` of one paired result {diff, ci, p, verdict} of bias column `c` (None: all empty)."""
    pm = pm or {}
    lo, hi = _pair(pm.get("ci"))
    return {c + suffixes["diff"]: pm.get("diff"), c + suffixes["lo"]: lo, c + suffixes["hi"]: hi,
            c + suffixes["p"]: pm.get("p"), c + suffixes["verdict"]: pm.get("verdict")}


def paired_columns(paired: dict[str, Any] | None, suffixes: dict[str, str]) -> dict[str, Any]:
    """Flat columns `<attribute>_<metric><suffix>` from the `attributes` of a paired comparison (None: all empty)."""
    return {k: v for a in ATTRIBUTES for m in METRIC_NAMES
            for k, v in paired_cells(f"{a}_{m}", _get(paired, a, m), suffixes).items()}


def bias_columns(summary: dict[str, Any]) -> dict[str, Any]:
    """Flat columns from a bias/<model>/summary.json: `<attribute>_<metric>` with `_lo`/`_hi` (bootstrap CI),
    `_floor`/`_excess` (noise floor), the VS_BASE columns (paired against the base), the face-found and
    ambiguous rates, and the generation settings."""
    row: dict[str, Any] = {}
    attrs = summary.get("attributes", summary)
    for a in ATTRIBUTES:
        for m in METRIC_NAMES:
            c = f"{a}_{m}"
            row[c] = _get(attrs, a, "aggregate", m)
            row[f"{c}_lo"], row[f"{c}_hi"] = _pair(_get(attrs, a, "ci", m))
            row[f"{c}_floor"], row[f"{c}_excess"] = _get(attrs, a, "floor", m), _get(attrs, a, "excess", m)
            row.update(paired_cells(c, _get(summary, "paired_vs_base", "attributes", a, m), VS_BASE))
    row["face_rate"] = summary.get("face_rate", summary.get("face_found_rate"))
    row["ambiguous_rate"] = summary.get("ambiguous_rate")
    row["n_images"] = summary.get("n_images")
    gen = summary.get("generation") or {}
    for k in SETTINGS_KEYS:
        v = gen.get(k)
        row[k] = json.dumps(v) if isinstance(v, list) else v
    return row


def settings_flag(v: Any) -> str:
    """A row's `settings` cell as text ("" = same settings as the reference row; NaN when read from CSV)."""
    return v if isinstance(v, str) else ""


def _setting(v: Any) -> str:
    """A setting as text for comparing and printing (None: not recorded)."""
    x = as_number(v)
    if x is not None:
        return f"{x:g}"
    return NOT_RECORDED if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def settings_of(row: Any) -> dict[str, str]:
    """The generation settings of one comparison row, as text."""
    return {k: _setting(row.get(k)) for k in SETTINGS_KEYS}


NOT_RECORDED = "not recorded"


def check_settings(df: pd.DataFrame, allow_mixed: bool = False) -> pd.DataFrame:
    """`df` with a `settings` column: "" where a row's generation settings match the base row's (else the
    first row that ran); "differs: ..." where a recorded setting differs, which raises MixedSettingsError
    unless `allow_mixed`; "unverified: ..." where a setting was not recorded (images made before settings
    were stored), which cannot be checked and is flagged, not refused."""
    df = df.copy()
    df["settings"] = ""
    status = df["status"] if "status" in df else pd.Series("ok", index=df.index)
    ran = df[status.fillna("ok") == "ok"]
    if ran.empty:
        return df
    ref_rows = ran[ran["method"] == "base"] if "method" in ran else ran
    ref_row = (ref_rows if len(ref_rows) else ran).iloc[0]
    ref = settings_of(ref_row)
    bad = []
    for i, r in ran.iterrows():
        mine = settings_of(r)
        unknown = [k for k in SETTINGS_KEYS if NOT_RECORDED in (mine[k], ref[k])]
        diff = [f"{k} {mine[k]} (vs {ref[k]})" for k in SETTINGS_KEYS if k not in unknown and mine[k] != ref[k]]
        flag = (["differs: " + "; ".join(diff)] if diff else []) + (
            [f"unverified: {', '.join(unknown)} not recorded"] if unknown else [])
        df.loc[i, "settings"] = " | ".join(flag)
        if diff:
            bad.append(f"{r['method']}: " + "; ".join(diff))
    if bad and not allow_mixed:
        raise MixedSettingsError(
            f"rows generated with other settings than {ref_row['method']} cannot share one table: "
            + " | ".join(bad) + ". Regenerate them with the same [generate] settings, or pass --allow_mixed "
            "([sota] allow_mixed = true) to put them in one table, flagged.")
    return df


def ours_name(names: Sequence[str], kinds: dict[str, str], skipped: dict[str, str]) -> str | None:
    """The row every row is paired with as "ours": the last trained mode that ran (both > unet > text), else None."""
    from t2i_debias.core.options import MODES

    trained = [n for n in names if kinds.get(n) == "ours" and n in MODES and n not in skipped]
    return max(trained, key=MODES.index) if trained else None


def paired_vs_ours(run_dir: Path, summaries: dict[str, dict[str, Any]], ours: str | None, bias: BiasSection,
                   seed: int, race_classes: tuple[str, ...]) -> dict[str, dict[str, Any] | None]:
    """Model -> `metrics.summary.paired_comparison` of (model − ours) for every model of `summaries` but ours (None).

    Paired on the same (prompt, seed) pairs of the bias stage's bias/<model>/predictions.csv of `run_dir` (no
    new images), with the bias stage's bootstrap settings (`bias`, `seed`) and class vocabulary (`race_classes`),
    over the attributes both summaries have. Computed at table time because which model is ours is the
    comparison's choice, not the bias stage's; without ours (no trained mode ran) every verdict is NOT_COMPUTED.
    """
    from t2i_debias.metrics.summary import bias_attributes, paired_comparison, read_predictions

    if ours is None:
        missing = {"against": None, "attributes": {a: {m: {"verdict": NOT_COMPUTED} for m in METRIC_NAMES}
                                                   for a in ATTRIBUTES}}
        return {n: missing for n in summaries}

    def measured(name: str) -> set[str]:
        return set(summaries[name].get("attributes") or {})

    lay, every = RunLayout(run_dir), bias_attributes(race_classes)
    ours_pred = read_predictions(lay.bias_predictions(ours))
    out: dict[str, dict[str, Any] | None] = {}
    for name in summaries:
        if name == ours:
            out[name] = None
            continue
        attrs = {a: c for a, c in every.items() if a in measured(name) & measured(ours)}
        out[name] = paired_comparison(read_predictions(lay.bias_predictions(name)), ours_pred, attrs,
                                      bias.n_bootstrap, seed, bias.ci, bias.paired_resample, against=ours)
    return out


def comparison_rows(run_dir: Path, names: Sequence[str], skipped: dict[str, str], kinds: dict[str, str], *,
                    bias: BiasSection, seed: int, race_classes: tuple[str, ...], base_model: str,
                    base_model_path: str, extra: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per method: status, bias metrics with CIs and paired Δ against the base and ours (OURS_COLUMN),
    quality metrics (+ `extra[name]`, e.g. toy quality), from the bias/ and quality/ folders of `run_dir`.

    `base_model` is the model as the config names it (`toy:base`, a hub id); `base_model_path` where it was loaded.
    `bias`, `seed` and `race_classes` are the bias stage's, for the pairing against ours (`paired_vs_ours`).
    """
    lay = RunLayout(run_dir)
    summaries = {n: json.loads(lay.bias_summary(n).read_text())
                 for n in names if n not in skipped}
    ours = ours_name(names, kinds, skipped)
    vs_ours = paired_vs_ours(run_dir, summaries, ours, bias, seed, race_classes)
    rows = []
    for name in names:
        row: dict[str, Any] = {"method": name, "kind": kinds.get(name, "baseline"), "base_model": base_model,
                               "base_model_path": base_model_path, OURS_COLUMN: ours}
        if name in skipped:
            row["status"] = f"not applicable: {skipped[name]}"
            rows.append(row)
            continue
        row["status"] = "ok"
        quality_path = lay.quality_json(name)
        row.update(bias_columns(summaries[name]))
        row.update(paired_columns(_get(vs_ours[name], "attributes"), VS_OURS))
        q = json.loads(quality_path.read_text()) if quality_path.is_file() else {}
        for m in QUALITY_METRICS:
            row[m] = q.get(m)
        row.update((extra or {}).get(name, {}))
        rows.append(row)
    return pd.DataFrame(rows)


def as_number(v: Any) -> float | None:
    """A cell as a finite float, or None (empty, text, NaN)."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _ran(df: pd.DataFrame) -> pd.DataFrame:
    return df[df.get("status", pd.Series("ok", index=df.index)).fillna("ok") == "ok"]


def best_values(df: pd.DataFrame, columns: Sequence[str], shown: Callable[[float], str] | None = None
                ) -> dict[str, float]:
    """Best value per column (lowest, or highest where the column says so), its own reference row left out
    (CLIP-I of the base is 1). With `shown` (how a value is printed), a column where every row that ran
    prints the same value has no best: the tie rule of comparison.md and report.html."""
    out = {}
    for c in columns:
        ref = registry.self_row(c)
        rows = df[df["method"] != ref] if ref and "method" in df else df
        vals = [v for v in (as_number(x) for x in rows.get(c, [])) if v is not None]
        if vals:
            out[c] = max(vals) if registry.higher_is_better(c) else min(vals)
    if shown is not None:
        ran = _ran(df)
        for c in list(out):
            printed = {shown(v) for m, x in zip(ran["method"], ran[c], strict=True)
                       if (v := as_number(x)) is not None and m != registry.self_row(c)}
            if len(printed) <= 1:
                del out[c]
    return out


def is_best(c: str, method: str, v: float | None, best: dict[str, float],
            same: Callable[[float, float], bool]) -> bool:
    """Whether row `method`'s value `v` of column `c` is marked best: `c` has a best (`best_values`), `v` is
    `same` as it, and the row is not the column's own reference (CLIP-I of the base)."""
    return v is not None and c in best and method != registry.self_row(c) and same(v, best[c])


def settings_header(df: pd.DataFrame) -> str:
    """One sentence with the generation settings of the table's rows (those of the reference row when mixed)."""
    status = df["status"] if "status" in df else pd.Series("ok", index=df.index)
    ran = df[status.fillna("ok") == "ok"]
    if ran.empty or not any(k in df.columns for k in SETTINGS_KEYS):
        return "Generation settings: not recorded."
    flags = ran["settings"].map(settings_flag) if "settings" in ran else pd.Series("", index=ran.index)
    unflagged = ran[flags == ""]
    ref = (unflagged if len(unflagged) else ran).iloc[0]
    st = settings_of(ref)
    text = (f"guidance scale {st['guidance_scale']}, sampler {st['sampler']}, {st['num_inference_steps']} steps, "
            f"resolution {st['resolution']}, {st['images_per_prompt']} images per prompt")
    if flags.str.contains("differs").any():
        return (f"Generation settings: **mixed** (allowed with --allow_mixed): {text} for every row except those "
                "flagged ⚠ in the settings column.")
    if (flags != "").any():
        return (f"Generation settings: {text}; some rows could not be checked (settings not recorded), flagged ⚠ "
                "in the settings column.")
    return f"Generation settings (every row): {text}."


def _bias_cell(r: Any, c: str) -> str:
    """'; floor F, excess E' and the paired mark of one bias value (empty for other columns)."""
    out = ""
    f, e = as_number(r.get(f"{c}_floor")), as_number(r.get(f"{c}_excess"))
    if f is not None:
        out += f"; floor {f:.3f}, excess {e:+.3f}" if e is not None else f"; floor {f:.3f}"
    mark = SIG_MARK.get(str(r.get(f"{c}_verdict")))
    return out + (f" {mark}" if mark else "")


def md_cell(value: Any) -> str:
    """Text for one Markdown table cell: a `|` escaped (it would end the cell), line breaks as spaces."""
    return " ".join(str(value).splitlines()).replace("|", "\\|")


def paired_markdown(df: pd.DataFrame, cols: Sequence[str], suffixes: dict[str, str] = VS_BASE,
                    against: str = "base", title: str = "the base") -> list[str]:
    """Lines of a paired table: per method and bias column, Δ = method − `against` (columns `suffixes`), its
    95% CI and p-value."""
    d_, lo_, hi_, p_, v_ = (suffixes[k] for k in ("diff", "lo", "hi", "p", "verdict"))
    cols = [c for c in cols if c + d_ in df.columns and df[c + d_].map(as_number).notna().any()]
    rows = [r for _, r in df.iterrows() if r.get("status", "ok") == "ok" and r.get("method") != against
            and any(as_number(r.get(c + d_)) is not None for c in cols)]
    if not cols or not rows:
        return []
    lines = ["", f"## Paired comparison against {md_cell(title)}", "",
             f"Δ = method − {md_cell(against)} on the same (prompt, seed) pairs; 95% paired bootstrap CI in brackets; "
             f"two-sided bootstrap p. ✓ = significantly less biased than {md_cell(against)} (the CI excludes 0), ✗ = "
             "significantly more biased; no mark = no significant difference.", "",
             "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            d = as_number(r.get(c + d_))
            if d is None:
                cells.append("–")
                continue
            lo, hi, p = as_number(r.get(c + lo_)), as_number(r.get(c + hi_)), as_number(r.get(c + p_))
            cell = f"{d:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else "")
            cell += f" p={p:.3g}" if p is not None else ""
            mark = SIG_MARK.get(str(r.get(c + v_)))
            cells.append(cell + (f" {mark}" if mark else ""))
        lines.append(f"| {md_cell(r['method'])} | " + " | ".join(cells) + " |")
    return lines


def ours_of(df: pd.DataFrame) -> str | None:
    """The model the table pairs every row with as ours (OURS_COLUMN; None when none was trained or not recorded)."""
    return next((v for v in df.get(OURS_COLUMN, []) if isinstance(v, str) and v), None)


NO_OURS = "Δ against ours: not computed, this run trained no model of ours (no [train] mode ran)."


def ours_markdown(df: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """Lines of the paired table against ours (VS_OURS columns); a note saying so where the run trained none."""
    if OURS_COLUMN not in df.columns:
        return []
    ours = ours_of(df)
    if ours is None:
        return ["", "## Paired comparison against ours", "", NO_OURS]
    return paired_markdown(df, cols, VS_OURS, ours, f"ours ({ours})")


def to_markdown(df: pd.DataFrame, base: str, columns: Sequence[str] | None = None) -> str:
    """Method × metric table, best value per column in bold, CIs in brackets, the base model and the generation
    settings stated; each bias value with its noise floor and excess and ✓/✗ when the paired CI against the
    base excludes 0; then the paired tables against the base and against ours. Columns: `columns`, else `table_columns(df)` (the toy world's
    quality columns when present)."""
    columns = table_columns(df) if columns is None else columns
    cols = [c for c in columns if c in df.columns and df[c].map(as_number).notna().any()]
    best = best_values(df, cols, shown=lambda v: f"{v:.3f}")  # every method tied as printed: no bold
    mixed = "settings" in df.columns and (df["settings"].map(settings_flag) != "").any()
    lines = [f"# SOTA comparison\n\nBase model of every method: `{md_cell(base)}`. Same prompts, seeds, classifier "
             f"and metrics for all rows. {settings_header(df)}\n\n"
             "Bias: lower is better (entropy, CLIP and face rate: higher); 95% bootstrap CI in brackets; floor = "
             "the expected value of a perfectly balanced model with as many labelled images (sampling noise), "
             "excess = value − floor; ✓ / ✗ = significantly less / more biased than the base (paired 95% CI "
             "of the difference excludes 0).\n" + "".join(f"\n{n}\n" for n in view_notes(cols)),
             "| method | " + " | ".join(cols) + (" | settings |" if mixed else " |"),
             "|---|" + "---|" * (len(cols) + mixed)]
    for _, r in df.iterrows():
        flag = [f"⚠ {md_cell(settings_flag(r.get('settings')))}" if settings_flag(r.get("settings")) else "same"] if mixed else []
        if r.get("status", "ok") != "ok":
            lines.append(f"| {md_cell(r['method'])} | " + " | ".join(["n/a"] * len(cols) + (["–"] if mixed else [])) + " |")
            continue
        cells = []
        for c in cols:
            v = as_number(r.get(c))
            if v is None:
                cells.append("–")
                continue
            s = f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
            if is_best(c, r["method"], v, best, lambda a, b: math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)):
                s = f"**{s}**"
            lo, hi = as_number(r.get(f"{c}_lo")), as_number(r.get(f"{c}_hi"))
            if lo is not None and hi is not None:
                s += f" [{lo:.3f}, {hi:.3f}]"
            cells.append(s + _bias_cell(r, c))
        lines.append(f"| {md_cell(r['method'])} | " + " | ".join(cells + flag) + " |")
    lines += paired_markdown(df, cols) + ours_markdown(df, cols)
    notes = [f"- **{md_cell(r['method'])}**: {md_cell(r['status'])}" for _, r in df.iterrows() if r.get("status", "ok") != "ok"]
    if notes:
        lines += ["", "Not run:", *notes]
    return "\n".join(lines) + "\n"
