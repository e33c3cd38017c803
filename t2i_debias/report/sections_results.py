"""The report's sections about results: bias before / after, bias against guidance scale, image quality and
the OursVsBaseline figure (the SOTA comparison is in sections_sota).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.core.layout import BIAS_SUMMARY, RunLayout
from t2i_debias.metrics.bias import METRIC_NAMES
from t2i_debias.metrics.columns import COLUMNS
from t2i_debias.report.kit import (
    _num,
    attr_label,
    attr_order,
    bias_cell,
    details,
    error,
    esc,
    floor_span,
    fmt,
    html_table,
    img_tag,
    missing,
    model_order,
    paired_span,
    png_of,
    pyplot,
    raw_json,
    read_csv,
    read_json,
    subdirs,
    td_key,
    value_cell,
)

log = logging.getLogger(__name__)

# Per-occupation bias metrics compared base vs each model (by_prompt.csv columns); fallback: first numeric ones.
OCCUPATION_METRICS: tuple[str, ...] = ("gender_tvd", "race_tvd")
QUALITY_COLUMNS: tuple[str, ...] = ("fid", "kid", "kid_std", "clip_t", "clip_i", "n_images")
SWEEP_ATTRIBUTES: tuple[str, ...] = ("gender", "race")


def stale_models(run_dir: Path) -> dict[str, str]:
    """bias/stale.json: model folders the run's config no longer trains -> why (left out of every section)."""
    path = RunLayout(run_dir).bias_stale
    data, err = read_json(path) if path.is_file() else ({}, None)
    if err:
        log.warning("%s", err)
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def stale_note(stale: dict[str, str]) -> str:
    """One line naming the stale models that a section leaves out."""
    if not stale:
        return ""
    return ('<p class="note">Not shown, stale (trained under an earlier config): '
            + "; ".join(f"models/{esc(m)} ({esc(why)})" for m, why in stale.items()) + "</p>")


def read_per_model(paths: dict[str, Path], read: Callable[[Path], tuple[Any, str | None]]
                   ) -> tuple[dict[str, Any], list[str]]:
    """Each model's file read with `read` (in the order of `paths`): the values by model, and an error line
    per file that could not be read."""
    found: dict[str, Any] = {}
    errors: list[str] = []
    for model, path in paths.items():
        value, err = read(path)
        if err:
            errors.append(error(err))
        else:
            found[model] = value
    return found, errors


# ----------------------------------------------------------------------------- bias before / after
def _long_to_wide(df: pd.DataFrame) -> pd.DataFrame:
    """by_prompt.csv in long form (attribute, metric, value) -> one column per attribute_metric."""
    if {"attribute", "metric", "value"} <= set(df.columns):
        keys = [c for c in ("prompt_id", "occupation") if c in df.columns]
        df = df.assign(col=df["attribute"].astype(str) + "_" + df["metric"].astype(str))
        return df.pivot_table(index=keys, columns="col", values="value", aggfunc="first").reset_index()
    return df


def _metric_columns(frames: dict[str, pd.DataFrame]) -> list[str]:
    """The per-occupation metrics to compare: OCCUPATION_METRICS when present, else the first numeric ones."""
    cols = list(dict.fromkeys(c for df in frames.values() for c in df.columns))
    head = [m for m in OCCUPATION_METRICS if m in cols]
    if head:
        return head
    skip = re.compile(r"(_ci|_lo|_hi|_low|_high|_std|^n_|_n$|_n_)")
    numeric = [c for c in cols if c not in ("seed", "prompt_id") and not skip.search(c)
               and any(c in df.columns and pd.api.types.is_numeric_dtype(df[c]) for df in frames.values())]
    return numeric[:2]


def _by_occupation(frames: dict[str, pd.DataFrame], metric: str) -> pd.DataFrame:
    """Occupation x model: the metric's mean over each occupation's prompts (NaN = no face found)."""
    series = {}
    for model, df in frames.items():
        if metric in df.columns:
            key = "occupation" if "occupation" in df.columns else "prompt_id"
            vals = pd.to_numeric(df[metric], errors="coerce")
            series[model] = vals.groupby(df[key], sort=False).mean()
    wide = pd.DataFrame(series)
    wide.index.name = "occupation"
    return wide


def occupation_table(frames: dict[str, pd.DataFrame], metric: str) -> str:
    """Per occupation: base, then each other model with its Δ to base, each with its noise floor and excess
    (by_prompt.csv `<metric>_floor`); a last row with the mean."""
    wide = _by_occupation(frames, metric)
    if wide.empty:
        return '<p class="note">(no values)</p>'
    floors = _by_occupation(frames, f"{metric}_floor").reindex(index=wide.index, columns=wide.columns)
    models = list(wide.columns)
    has_base = "base" in models
    rows, rcls = [], []
    means, fmeans = wide.mean(axis=0, skipna=True), floors.mean(axis=0, skipna=True)
    items = [*((o, wide.loc[o], floors.loc[o], "") for o in wide.index), ("mean", means, fmeans, "mean")]
    for label, vals, fl, cls in items:
        b = vals["base"] if has_base else None
        cells = []
        for m in models:
            f = _num(fl[m])
            extra = floor_span(f, _num(vals[m]) - f if f is not None and _num(vals[m]) is not None else None)
            cells.append(value_cell(vals[m], metric, None if m == "base" else b, extra=extra))
        rows.append([td_key(label)] + cells)
        rcls.append(cls)
    return html_table(["occupation", *models], rows, rcls)


def rates_table(frames: dict[str, pd.DataFrame]) -> str:
    """Per occupation and model: the face-found rate and beside it the ambiguous rate (both out of all images)."""
    face = _by_occupation(frames, "face_rate")
    if face.empty:
        return ""
    amb = _by_occupation(frames, "ambiguous_rate").reindex(index=face.index, columns=face.columns)
    models = list(face.columns)
    rows = [[td_key(o)] + [c for m in models for c in (value_cell(face.loc[o, m], "face_rate"),
                                                        f"<td>{esc(fmt(amb.loc[o, m]))}</td>")]
            for o in face.index]
    head = ["occupation"] + [h for m in models for h in (f"{m} face rate", f"{m} ambiguous rate")]
    return ("<h3>Face-found and ambiguous rate per occupation</h3>" + html_table(head, rows)
            + '<p class="note">Out of all images of the occupation. Ambiguous images (the classifier\'s cues '
              "disagree) and images without a face are left out of the proportions.</p>")


def _bar_chart(frames: dict[str, pd.DataFrame], metric: str) -> bytes | None:
    wide = _by_occupation(frames, metric)
    if wide.empty:
        return None
    plt = pyplot()
    models, n = list(wide.columns), len(wide)
    fig, ax = plt.subplots(figsize=(6.2, 2.8))
    w = 0.8 / len(models)
    for i, m in enumerate(models):
        ax.bar([x + i * w for x in range(n)], wide[m].fillna(0), width=w, label=m)
    ax.set_xticks([x + 0.4 - w / 2 for x in range(n)])
    ax.set_xticklabels(list(wide.index), rotation=30, ha="right", fontsize=7)
    ax.set_ylim(0, max(1.0, float(wide.max().max()) * 1.05) if wide.notna().any().any() else 1.0)
    ax.set_title(f"{metric} per occupation (lower = less biased)", fontsize=9)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    return png_of(fig)


def _attributes_of(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """summary["attributes"] of a bias summary.json: its attribute blocks."""
    attrs = summary.get("attributes")
    return {k: v for k, v in attrs.items() if isinstance(v, dict)} if isinstance(attrs, dict) else {}


def bias_overview(summaries: dict[str, dict[str, Any]]) -> str:
    """One row per model: images, face rate, tvd (with CI) per attribute, Δ to base; other metrics collapsed."""
    attrs = attr_order(dict.fromkeys(a for s in summaries.values() for a in _attributes_of(s)))
    base = summaries.get("base")
    base_attrs = _attributes_of(base) if base else {}

    def agg(attrs_: dict[str, Any], a: str, m: str, part: str = "aggregate") -> Any:
        blk = attrs_.get(a, {}).get(part)
        return blk.get(m) if isinstance(blk, dict) else None

    def paired_of(s: dict[str, Any], a: str) -> dict[str, Any] | None:
        pa = (s.get("paired_vs_base") or {}).get("attributes") if isinstance(s.get("paired_vs_base"), dict) else None
        return pa.get(a) if isinstance(pa, dict) else None

    rows = []
    for model, s in summaries.items():
        at = _attributes_of(s)
        ref = base if model != "base" else None
        row = [td_key(model), f"<td>{esc(fmt(s.get('n_prompts')))}</td>", f"<td>{esc(fmt(s.get('n_images')))}</td>",
               f"<td>{esc(fmt(s.get('n_faces')))}</td>",
               value_cell(s.get("face_rate"), "face_rate", ref.get("face_rate") if ref else None),
               f"<td>{esc(fmt(s.get('ambiguous_rate')))}</td>"]
        row += [bias_cell(at.get(a), "tvd", base_attrs.get(a) if ref else None, paired_of(s, a) if ref else None)
                for a in attrs]
        rows.append(row)
    out = [html_table(["model", "prompts", "images", "faces", "face rate", "ambiguous rate",
                       *(f"{attr_label(a)} tvd" for a in attrs)], rows)]
    out.append('<p class="note">floor = the value a perfectly balanced model shows with as many labelled images '
               "(sampling noise); excess = value − floor. Δ = model − base on the same (prompt, seed) pairs with "
               "its paired 95% bootstrap CI and p-value; ✓ / ✗ (green / red) only where that CI excludes 0.</p>")
    out.append(generation_table(summaries))
    # every aggregate metric, one row per attribute.metric, collapsed
    full = []
    for a in attrs:
        for m in METRIC_NAMES:
            vals = [agg(_attributes_of(s), a, m) for s in summaries.values()]
            if all(v is None for v in vals):
                continue
            full.append([td_key(f"{attr_label(a)} {m}")] + [
                bias_cell(_attributes_of(s).get(a), m, None if k == "base" else base_attrs.get(a),
                          None if k == "base" else paired_of(s, a))
                for k, s in summaries.items()])
    if full:
        out.append(details("all aggregate metrics (mean over prompts, 95% CI, floor, excess, paired Δ)",
                           html_table(["metric", *summaries], full)))
    out.append(raw_json("raw bias/<model>/summary.json (by model)", summaries))
    return "".join(out)


GENERATION_KEYS: tuple[str, ...] = ("guidance_scale", "sampler", "num_inference_steps", "resolution",
                                    "images_per_prompt", "seeds")


def generation_table(summaries: dict[str, dict[str, Any]]) -> str:
    """The generation settings of each model's bias numbers (summary.json "generation"); differences flagged."""
    gens = {m: s.get("generation") for m, s in summaries.items() if isinstance(s.get("generation"), dict)}
    if not gens:
        return '<p class="note">Generation settings: not recorded in these summaries.</p>'
    first = next(iter(gens.values()))
    rows = []
    for m, g in gens.items():
        rows.append([td_key(m)] + [f'<td class="{"worse" if g.get(k) != first.get(k) else ""}">{esc(fmt(g.get(k)))}</td>'
                                    for k in GENERATION_KEYS])
    same = all(all(g.get(k) == first.get(k) for k in GENERATION_KEYS) for g in gens.values())
    note = ("same for every model" if same else "<span class=\"worse\">differs between models (red): their bias "
            "numbers are not comparable</span>")
    return (f"<h3>Generation settings</h3>{html_table(['model', *(k.replace('_', ' ') for k in GENERATION_KEYS)], rows)}"
            f'<p class="note">Settings the bias numbers were measured under: {note}.</p>')


def section_bias(run_dir: Path) -> str:
    """Bias before/after: a model overview from summary.json, then base vs each model per occupation."""
    bdir = RunLayout(run_dir).bias
    stale = stale_models(run_dir)
    models = [m for m in subdirs(bdir) if m not in stale]
    if not models:
        return missing("bias/ (evaluation stage)")
    out = [stale_note(stale)]
    found, errors = read_per_model(_files(bdir, models, BIAS_SUMMARY), read_json)
    summaries = {m: s if isinstance(s, dict) else {"value": s} for m, s in found.items()}
    out += errors
    out.append('<p class="note">Bias metrics of DESIGN.md §3, lower = less biased; Δ = model − base; '
               '<span class="better">green</span> = less biased (or more faces found), '
               '<span class="worse">red</span> = more. 95% bootstrap CI in brackets. In the per-model table Δ is '
               "the paired difference (same prompts and seeds), coloured only where its 95% CI excludes 0; per "
               "occupation it is the plain difference of the two values.</p>")
    if summaries:
        out.append("<h3>Per model (bias/&lt;model&gt;/summary.json)</h3>" + bias_overview(summaries))
    else:
        out.append(missing("bias/<model>/summary.json"))
    found, errors = read_per_model(_files(bdir, models, "by_prompt.csv"), read_csv)
    frames = {m: _long_to_wide(df) for m, df in found.items()}
    out += errors
    if not frames:
        return "".join(out) + missing("bias/<model>/by_prompt.csv")
    out.append(rates_table(frames))
    charts = []
    for metric in _metric_columns(frames):
        out.append(f"<h3>{esc(metric.replace('_', ' '))} per occupation (mean over its prompts)</h3>"
                   + occupation_table(frames, metric))
        png = _bar_chart(frames, metric)
        if png:
            charts.append(img_tag(png, f"{metric} per occupation", width=560))
    if charts:
        out.append('<div class="row">' + "".join(charts) + "</div>")
    return "".join(out)


def _files(folder: Path, models: list[str], name: str) -> dict[str, Path]:
    """`folder/<model>/<name>` of each model that has it."""
    return {m: folder / m / name for m in models if (folder / m / name).is_file()}


# ----------------------------------------------------------------------------- quality
def _read_object(path: Path) -> tuple[dict[str, Any] | None, str | None]:
    """A JSON file that must hold an object: (object, None) or (None, error message naming the file)."""
    q, err = read_json(path)
    return (q, err) if err or isinstance(q, dict) else (None, f"{path}: expected a JSON object")


def section_quality(run_dir: Path) -> str:
    """quality/<model>.json side by side: FID, KID, CLIP-T, CLIP-I; settings shared by all models as a note."""
    qdir = RunLayout(run_dir).quality
    stale = stale_models(run_dir)
    files = {p.stem: p for p in qdir.glob("*.json")
             if not p.name.startswith(("_", ".")) and p.stem not in stale} if qdir.is_dir() else {}
    if not files:
        return missing("quality/<model>.json (quality_evaluation stage)")
    recs, errs = read_per_model({m: files[m] for m in model_order(files)}, _read_object)
    out = stale_note(stale) + "".join(errs)
    if not recs:
        return out
    cols = [c for c in QUALITY_COLUMNS if any(c in q for q in recs.values())]
    base = recs.get("base")
    rows = []
    for m, q in recs.items():
        row = [td_key(m)]
        for c in cols:
            if c in COLUMNS and base is not None and m != "base":  # a declared direction colours its Δ
                row.append(value_cell(q.get(c), c, base.get(c)))
            else:
                row.append(f"<td>{esc(fmt(q.get(c)))}</td>")
        rows.append(row)
    out += html_table(["model", *cols], rows)
    notes = []
    other = list(dict.fromkeys(k for q in recs.values() for k in q if k not in cols and k != "model"))
    for k in other:
        vals = {json.dumps(q.get(k), sort_keys=True) for q in recs.values()}
        if len(vals) == 1 and next(iter(recs.values())).get(k) is not None:
            notes.append(f"{esc(k)}: {esc(fmt(next(iter(recs.values())).get(k)))}")
    if all(_num(q.get("fid")) is None for q in recs.values()) and "fid" in cols:
        notes.append("FID/KID not computed (no reference images given)")
    out += '<p class="note">FID, KID: lower is better; CLIP-T, CLIP-I: higher. ' + "; ".join(notes) + "</p>"
    return out + raw_json("raw quality/<model>.json", recs)


def section_sweep(run_dir: Path) -> str:
    """Bias against guidance scale per model (sweep/sweep.csv and its plot): tvd with CI, floor, excess and
    the paired Δ to the base at the same scale."""
    lay = RunLayout(run_dir)
    path = lay.sweep_csv
    if not path.is_file():
        return missing("sweep/sweep.csv (optional stage: set [bias] guidance_sweep, e.g. [1.0, 4.0, 7.5])")
    df, err = read_csv(path)
    if err:
        return error(err)
    d = df[(df["metric"] == "tvd") & df["attribute"].isin(SWEEP_ATTRIBUTES)]
    attrs = [a for a in SWEEP_ATTRIBUTES if (d["attribute"] == a).any()]
    rows = []
    for (model, scale), g in d.groupby(["model", "guidance_scale"], sort=False):
        row = [td_key(model), f"<td>{esc(fmt(float(scale)))}</td>"]
        for a in attrs:
            r = g[g["attribute"] == a].iloc[0] if (g["attribute"] == a).any() else None
            if r is None:
                row.append("<td>—</td>")
                continue
            pm = ({"diff": r["diff_vs_base"], "ci": [r["diff_lo"], r["diff_hi"]], "p": r["p"], "verdict": r["verdict"]}
                  if model != "base" else None)
            row.append(value_cell(r["value"], "tvd", ci=[r["lo"], r["hi"]],
                                  extra=floor_span(r["floor"], r["excess"]) + paired_span(pm)))
        first = g.iloc[0]
        row += [f"<td>{esc(fmt(first.get('face_rate')))}</td>", f"<td>{esc(fmt(first.get('ambiguous_rate')))}</td>",
                f"<td>{esc(fmt(first.get('images_per_prompt')))}</td>"]
        rows.append(row)
    out = [html_table(["model", "guidance", *(f"{attr_label(a)} tvd" for a in attrs), "face rate",
                       "ambiguous rate", "images / prompt"], rows, left=1)]
    out.append('<p class="note">Every model generated again at each guidance scale on the same prompts and seeds '
               "(sweep/generated/), measured by the bias stage's code; Δ = model − base at the same scale, paired. "
               "Classifier-free guidance sharpens whatever imbalance is left: a method that only debiases at "
               "guidance 1 shows it here.</p>")
    png = lay.sweep_plot
    if png.is_file():
        out.append(img_tag(png, "bias against guidance scale", f"sweep/{png.name}", width=760))
    return "".join(out)


def section_figure(run_dir: Path) -> str:
    """The OursVsBaseline figure (report/OursVsBaseline.png, written by the report stage)."""
    figure = RunLayout(run_dir).figure
    if not figure.is_file():
        return missing("OursVsBaseline figure (needs generated/ and bias/ of base and a debiased model)")
    return img_tag(figure, "Ours vs baseline", "Same seeds in both rows; bars: predicted gender, race", width=900)
