"""report.html: one self-contained page per run (inline CSS, images as data URIs, no scripts, no links).

It shows whatever the run folder holds (DESIGN.md §6): dataset imbalance, training curves, bias before
and after per occupation, quality, the SOTA table and the OursVsBaseline figure. A section whose files
do not exist yet says "not computed yet" instead of failing, so the report can be built at any point.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.runs import MANIFEST, STAGE_DIRS, Stage, atomic_write_text
from t2i_debias.runs import run_stage as _run_stage

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
FIGURE_NAME = "OursVsBaseline.png"
MODE_ORDER: tuple[str, ...] = ("text", "unet", "both")
# Per-occupation bias columns shown first when present (by_prompt.csv); others follow if none match.
HEADLINE_METRICS: tuple[str, ...] = ("gender_tvd", "race_tvd", "race4_tvd", "gender_race_tvd", "face_rate")
MAX_TABLE_ROWS = 80

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:1em 2em;color:#222;line-height:1.4}
h1{border-bottom:2px solid #444;padding-bottom:.2em}h2{margin-top:2em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.6em 0;font-size:13px}th,td{border:1px solid #ccc;padding:3px 7px;
text-align:right}th{background:#f0f0f0}td.k,th.k{text-align:left}tr:nth-child(even) td{background:#fafafa}
.missing{color:#8a6d3b;background:#fcf8e3;border:1px solid #faebcc;padding:.5em 1em;display:inline-block}
.better{color:#1a7f37;font-weight:600}.worse{color:#b42318;font-weight:600}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}figure{margin:.5em 0;display:inline-block;
vertical-align:top}figcaption{font-size:12px;color:#555}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;
font-size:12px}details{margin:.5em 0}.note{font-size:12px;color:#555}nav a{margin-right:1em}
.tw{overflow-x:auto;max-width:100%}
"""


# ----------------------------------------------------------------------------- small HTML helpers
def esc(x: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(x), quote=True)


def fmt(v: Any) -> str:
    """A value for a table cell: floats to 4 significant digits, None/NaN as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        return f"{v:.4g}"
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        return fmt(v.item())
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x) for x in v) + "]"
    return str(v)


def missing(what: str) -> str:
    """The placeholder of a section whose inputs do not exist yet."""
    return f'<p class="missing">not computed yet: {esc(what)}</p>'


def img_tag(src: Path | bytes, alt: str, caption: str | None = None, width: int | None = None) -> str:
    """An <img> with the PNG/JPEG embedded as a base64 data URI."""
    data = src.read_bytes() if isinstance(src, Path) else src
    mime = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
    w = f' style="max-width:{width}px"' if width else ""
    tag = f'<img alt="{esc(alt)}"{w} src="data:{mime};base64,{base64.b64encode(data).decode("ascii")}">'
    return f"<figure>{tag}<figcaption>{esc(caption)}</figcaption></figure>" if caption else tag


def table(df: pd.DataFrame, max_rows: int = MAX_TABLE_ROWS, classes: pd.DataFrame | None = None,
          more_note: str = "in the file") -> str:
    """An HTML table of a DataFrame (escaped, numbers formatted); `classes` gives per-cell CSS classes."""
    if df.empty:
        return '<p class="note">(empty table)</p>'
    text_cols = {c for c in df.columns if not pd.api.types.is_numeric_dtype(df[c])}
    head = "".join(f'<th class="{"k" if i == 0 or c in text_cols else ""}">{esc(c)}</th>'
                   for i, c in enumerate(df.columns))
    body = []
    for r, (_, row) in enumerate(df.head(max_rows).iterrows()):
        cells = []
        for i, (c, v) in enumerate(row.items()):
            cls = ["k"] if i == 0 or isinstance(v, str) else []
            if classes is not None and c in classes.columns and isinstance(classes.iloc[r][c], str):
                cls.append(classes.iloc[r][c])
            cells.append(f'<td class="{" ".join(cls)}">{esc(fmt(v))}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    more = f'<p class="note">… {len(df) - max_rows} more rows {esc(more_note)}</p>' if len(df) > max_rows else ""
    return (f'<div class="tw"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'
            f"{more}")


def flatten(obj: Any, prefix: str = "", max_list: int = 12) -> dict[str, Any]:
    """Nested JSON to {"a.b.c": value}; long lists (e.g. per-prompt rows) are summarised by their length."""
    out: dict[str, Any] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k), max_list))
    elif isinstance(obj, list) and (len(obj) > max_list or any(isinstance(x, (dict, list)) for x in obj)):
        out[prefix] = f"({len(obj)} items)"
    else:
        out[prefix] = obj
    return out


def read_json(path: Path) -> tuple[Any, str | None]:
    """(parsed JSON, None) or (None, error message naming the file)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, json.JSONDecodeError) as e:
        return None, f"{path}: unreadable JSON ({e})"


def read_csv(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """(DataFrame, None) or (None, error message naming the file)."""
    try:
        return pd.read_csv(path), None
    except (OSError, ValueError) as e:
        return None, f"{path}: unreadable CSV ({e})"


def error(msg: str) -> str:
    return f'<p class="missing">{esc(msg)}</p>'


def png_of(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (then closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _model_order(names: Iterable[str]) -> list[str]:
    """base first, then the trained modes in order, then the rest alphabetically."""
    rank = {"base": -1, **{m: i for i, m in enumerate(MODE_ORDER)}}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def rel_rows(summaries: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """Flattened JSON summaries side by side: one row per key, one column per model."""
    flat = {m: flatten(s) for m, s in summaries.items()}
    keys = list(dict.fromkeys(k for f in flat.values() for k in f))
    return pd.DataFrame({"key": keys, **{m: [f.get(k) for k in keys] for m, f in flat.items()}})


# ----------------------------------------------------------------------------- sections
def section_overview(run_dir: Path) -> str:
    """Run name, stage status from manifests, and the resolved config."""
    rows = []
    for stage, folder in STAGE_DIRS.items():
        m, err = read_json(run_dir / folder / MANIFEST) if (run_dir / folder / MANIFEST).exists() else (None, None)
        if stage == "report":
            rows.append({"stage": stage, "status": "this page", "finished": "", "wall time (s)": None})
        elif m is None:
            rows.append({"stage": stage, "status": "unreadable manifest" if err else "not run",
                         "finished": "", "wall time (s)": None})
        else:
            rows.append({"stage": stage, "status": "complete", "finished": m.get("finished_at", ""),
                         "wall time (s)": m.get("wall_time_s")})
    out = [table(pd.DataFrame(rows), max_rows=50)]
    cfg = run_dir / "config.toml"
    if cfg.is_file():
        out.append(f"<details><summary>config.toml</summary><pre>{esc(cfg.read_text(encoding='utf-8'))}</pre>"
                   "</details>")
    return "".join(out)


def section_dataset(run_dir: Path) -> str:
    """Dataset imbalance: labelling status, analysis/summary.json, by_occupation.csv and plots."""
    out = []
    labels = run_dir / "labels" / "labels.csv"
    if labels.is_file():
        df, err = read_csv(labels)
        if err:
            out.append(error(err))
        elif "status" in df.columns:
            counts = df["status"].fillna("").value_counts().rename_axis("status").reset_index(name="people")
            out.append("<h3>Labelling status (labels/labels.csv)</h3>" + table(counts))
    adir = run_dir / "analysis"
    if not adir.is_dir():
        return "".join(out) + missing("analysis/ (dataset_analysis stage)")
    summary = adir / "summary.json"
    if summary.is_file():
        s, err = read_json(summary)
        if isinstance(s, dict):  # per-occupation numbers are shown from by_occupation.csv below
            s = {k: v for k, v in s.items() if k != "by_occupation"}
        out.append("<h3>Summary (analysis/summary.json)</h3>" +
                   (error(err) if err else table(rel_rows({"value": s}) if isinstance(s, dict)
                                                 else pd.DataFrame({"value": [s]}), max_rows=300)))
    else:
        out.append(missing("analysis/summary.json"))
    by_occ = adir / "by_occupation.csv"
    if by_occ.is_file():
        df, err = read_csv(by_occ)
        out.append("<h3>Per occupation (analysis/by_occupation.csv)</h3>" + (error(err) if err else table(df)))
    else:
        out.append(missing("analysis/by_occupation.csv"))
    pngs = sorted(adir.glob("*.png"))
    out.extend(img_tag(p, p.stem, f"analysis/{p.name}", width=560) for p in pngs)
    return "".join(out)


def _plot_log(df: pd.DataFrame, title: str) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    x = df["step"] if "step" in df.columns else pd.Series(range(len(df)))
    for c in df.columns:
        if c != "step" and pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any():
            ax.plot(x, df[c], label=c, lw=2 if c == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png_of(fig)


def section_training(run_dir: Path) -> str:
    """Training curves per mode: models/<mode>/loss.png, else a plot of training_log.csv."""
    mdir = run_dir / "models"
    modes = _model_order(d.name for d in mdir.iterdir() if d.is_dir()) if mdir.is_dir() else []
    if not modes:
        return missing("models/ (finetune stage)")
    out = []
    for mode in modes:
        d = mdir / mode
        logf, png = d / "training_log.csv", d / "loss.png"
        out.append(f"<h3>{esc(mode)}</h3>")
        df, err = read_csv(logf) if logf.is_file() else (None, None)
        if err:
            out.append(error(err))
        if png.is_file():
            out.append(img_tag(png, f"loss {mode}", f"models/{mode}/loss.png", width=640))
        elif df is not None and not df.empty:
            out.append(img_tag(_plot_log(df, mode), f"loss {mode}", f"plotted from models/{mode}/training_log.csv"))
        if df is not None and not df.empty:
            last = df.tail(1).copy()
            out.append(f'<p class="note">{len(df)} logged steps; last row:</p>' + table(last))
        if not png.is_file() and df is None:
            out.append(missing(f"models/{mode}/training_log.csv"))
    return "".join(out)


def _long_to_wide(df: pd.DataFrame) -> pd.DataFrame:
    """by_prompt.csv in long form (attribute, metric, value) -> one column per attribute_metric."""
    if {"attribute", "metric", "value"} <= set(df.columns):
        keys = [c for c in ("prompt_id", "occupation") if c in df.columns]
        df = df.assign(col=df["attribute"].astype(str) + "_" + df["metric"].astype(str))
        return df.pivot_table(index=keys, columns="col", values="value", aggfunc="first").reset_index()
    return df


def _metric_columns(df: pd.DataFrame) -> list[str]:
    numeric = [c for c in df.columns if pd.api.types.is_numeric_dtype(df[c]) and c not in ("seed", "prompt_id")
               and not re.search(r"(_ci|_lo|_hi|_low|_high|_std|^n_|_n$)", c)]
    head = [c for c in HEADLINE_METRICS if c in numeric]
    return head or numeric[:4]


def _delta_class(metric: str, delta: float) -> str | None:
    """'better' when a bias metric fell (or entropy / face rate rose), 'worse' for the opposite."""
    if delta is None or not math.isfinite(delta) or abs(delta) < 1e-12:
        return None
    up_is_good = "entropy" in metric or "face_rate" in metric
    return "better" if (delta > 0) == up_is_good else "worse"


def _occupation_table(frames: dict[str, pd.DataFrame], metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Occupation x model for one metric, with Δ vs base columns and their CSS classes."""
    series = {}
    for model, df in frames.items():
        if metric in df.columns:
            key = "occupation" if "occupation" in df.columns else "prompt_id"
            vals = pd.to_numeric(df[metric], errors="coerce")
            series[model] = vals.groupby(df[key], sort=False).mean()
    wide = pd.DataFrame(series)
    wide.index.name = "occupation"
    wide = wide.reset_index()
    classes = pd.DataFrame(index=wide.index)
    if "base" in series:
        for m in series:
            if m == "base":
                continue
            col = f"Δ {m}"
            wide[col] = wide[m] - wide["base"]
            classes[col] = [_delta_class(metric, d) for d in wide[col]]
    return wide, classes


def _bar_chart(frames: dict[str, pd.DataFrame], metric: str) -> bytes | None:
    wide, _ = _occupation_table(frames, metric)
    models = [m for m in frames if m in wide.columns]
    if wide.empty or not models:
        return None
    plt = _plt()
    n = len(wide)
    fig, ax = plt.subplots(figsize=(min(2 + 0.5 * n * len(models), 14), 3.2))
    w = 0.8 / len(models)
    for i, m in enumerate(models):
        ax.bar([x + i * w for x in range(n)], wide[m], width=w, label=m)
    ax.set_xticks([x + 0.4 - w / 2 for x in range(n)])
    ax.set_xticklabels(wide["occupation"], rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png_of(fig)


def section_bias(run_dir: Path) -> str:
    """Bias before/after: summary.json per model side by side, then per-occupation tables and charts."""
    bdir = run_dir / "bias"
    models = _model_order(d.name for d in bdir.iterdir() if d.is_dir()) if bdir.is_dir() else []
    if not models:
        return missing("bias/ (evaluation stage)")
    out = []
    summaries, errs = {}, []
    for m in models:
        p = bdir / m / "summary.json"
        if p.is_file():
            s, err = read_json(p)
            if err:
                errs.append(err)
            else:
                summaries[m] = s if isinstance(s, dict) else {"value": s}
    out.extend(error(e) for e in errs)
    if summaries:
        out.append("<h3>Summary (bias/&lt;model&gt;/summary.json)</h3>" + table(rel_rows(summaries), max_rows=400))
    else:
        out.append(missing("bias/<model>/summary.json"))
    frames = {}
    for m in models:
        p = bdir / m / "by_prompt.csv"
        if p.is_file():
            df, err = read_csv(p)
            if err:
                out.append(error(err))
            else:
                frames[m] = _long_to_wide(df)
    if not frames:
        return "".join(out) + missing("bias/<model>/by_prompt.csv")
    metrics = list(dict.fromkeys(c for df in frames.values() for c in _metric_columns(df)))
    out.append('<p class="note">Per occupation, mean over its prompts. Δ = model − base; '
               '<span class="better">green</span> = less biased, <span class="worse">red</span> = more.</p>')
    for metric in metrics:
        wide, classes = _occupation_table(frames, metric)
        out.append(f"<h3>{esc(metric)} per occupation</h3>" + table(wide, classes=classes))
        png = _bar_chart(frames, metric)
        if png:
            out.append(img_tag(png, f"{metric} per occupation"))
    return "".join(out)


def section_quality(run_dir: Path) -> str:
    """quality/<model>.json side by side."""
    qdir = run_dir / "quality"
    files = {p.stem: p for p in qdir.glob("*.json")} if qdir.is_dir() else {}
    if not files:
        return missing("quality/<model>.json (quality_evaluation stage)")
    rows, errs = [], []
    for m in _model_order(files):
        q, err = read_json(files[m])
        if err:
            errs.append(error(err))
        elif isinstance(q, dict):
            rows.append({"model": m, **flatten(q)})
    out = "".join(errs)
    if rows:
        df = pd.DataFrame(rows)
        first = [c for c in ("model", "fid", "kid", "kid_std", "clip_t", "clip_i", "n_images") if c in df.columns]
        out += table(df[first + [c for c in df.columns if c not in first]])
    return out


_MD_SEP = re.compile(r"^\s*\|?\s*:?-{3,}")
_BOLD = re.compile(r"\*\*(.+?)\*\*")


def markdown_table(md: str) -> str:
    """A pipe-table markdown document (as sota/comparison.md) to HTML; `**x**` becomes bold."""
    out, rows = [], []

    def flush() -> None:
        if rows:
            head, *body = rows
            h = "".join(f'<th class="{"k" if i == 0 else ""}">{c}</th>' for i, c in enumerate(head))
            b = "".join("<tr>" + "".join(f'<td class="{"k" if i == 0 else ""}">{c}</td>' for i, c in enumerate(r))
                        + "</tr>" for r in body)
            out.append(f"<table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>")
            rows.clear()

    for line in md.splitlines():
        s = line.strip()
        if s.startswith("|"):
            if _MD_SEP.match(s):
                continue
            cells = [esc(c.strip()) for c in s.strip("|").split("|")]
            rows.append([_BOLD.sub(r"<b>\1</b>", c) for c in cells])
            continue
        flush()
        if s.startswith("#"):
            out.append(f"<h4>{esc(s.lstrip('#').strip())}</h4>")
        elif s:
            out.append("<p>" + _BOLD.sub(r"<b>\1</b>", esc(s)) + "</p>")
    flush()
    return "".join(out)


def section_sota(run_dir: Path) -> str:
    """sota/comparison.md (or .csv) and the comparison plots."""
    sdir = run_dir / "sota"
    md, csv = sdir / "comparison.md", sdir / "comparison.csv"
    if md.is_file():
        out = markdown_table(md.read_text(encoding="utf-8"))
    elif csv.is_file():
        df, err = read_csv(csv)
        out = error(err) if err else table(df)
    else:
        return missing("sota/comparison.md (sota_evaluation stage)")
    pngs = sorted(sdir.glob("*.png")) + sorted(sdir.glob("plots/*.png"))
    return out + "".join(img_tag(p, p.stem, f"sota/{p.relative_to(sdir)}", width=560) for p in pngs)


def section_figure(figure: Path | None) -> str:
    """The OursVsBaseline figure."""
    if figure is None or not figure.is_file():
        return missing("OursVsBaseline figure (needs generated/ and bias/ of base and a debiased model)")
    return img_tag(figure, "Ours vs baseline", "Same seeds in both rows; bars: predicted gender, race", width=900)


SECTIONS: tuple[tuple[str, str], ...] = (
    ("overview", "Run"),
    ("dataset", "Dataset imbalance"),
    ("training", "Training curves"),
    ("bias", "Bias before / after"),
    ("quality", "Image quality"),
    ("sota", "State-of-the-art comparison"),
    ("figure", "Ours vs baseline"),
)


def build_report(run_dir: str | Path, figure: Path | None = None, title: str | None = None) -> str:
    """The report page of a run folder as an HTML string."""
    run_dir = Path(run_dir)
    figure = figure if figure is not None else run_dir / "report" / FIGURE_NAME
    makers = {
        "overview": lambda: section_overview(run_dir),
        "dataset": lambda: section_dataset(run_dir),
        "training": lambda: section_training(run_dir),
        "bias": lambda: section_bias(run_dir),
        "quality": lambda: section_quality(run_dir),
        "sota": lambda: section_sota(run_dir),
        "figure": lambda: section_figure(figure),
    }
    title = title or f"t2i_debias report: {run_dir.name}"
    nav = "".join(f'<a href="#{k}">{esc(t)}</a>' for k, t in SECTIONS)
    body = "".join(f'<section id="{k}"><h2>{esc(t)}</h2>{makers[k]()}</section>' for k, t in SECTIONS)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{CSS}</style></head>'
            f"<body><h1>{esc(title)}</h1><p class=\"note\">Generated {esc(time.strftime('%Y-%m-%d %H:%M:%S'))} "
            f"from {esc(run_dir)}.</p><nav>{nav}</nav>{body}</body></html>\n")


def write_report(run_dir: str | Path, out_path: str | Path | None = None, figure: Path | None = None) -> Path:
    """Write `<run_dir>/report.html` (or `out_path`) atomically."""
    run_dir = Path(run_dir)
    return atomic_write_text(out_path or run_dir / REPORT_HTML, build_report(run_dir, figure))


# ----------------------------------------------------------------------------- stage
def report_inputs(run_dir: Path) -> list[Path]:
    """The small files the report reads; the stage reruns when any of them appears or changes."""
    pats = ["config.toml", "labels/labels.csv", "analysis/*", "models/*/training_log.csv", "models/*/loss.png",
            "bias/*/summary.json", "bias/*/by_prompt.csv", "bias/*/predictions.csv", "quality/*.json",
            "sota/*", "sota/plots/*", "generated/*/metadata.csv"]
    found = {p for pat in pats for p in run_dir.glob(pat) if p.is_file()}
    return sorted(found)


def make_figure(cfg: Any, out_path: Path) -> Path | None:
    """Build the OursVsBaseline figure of the run, or log why it cannot be built yet and return None."""
    from t2i_debias.report.figure import figure_from_run

    r = cfg.report
    try:
        return figure_from_run(cfg.run_dir, out_path, base=r.figure_base, ours=r.figure_ours,
                               occupations=r.figure_occupations, n_images=r.figure_images)
    except (FileNotFoundError, ValueError) as e:
        log.info("OursVsBaseline figure not built: %s", e)
        return None


def run_stage(cfg: Any, force: bool = False) -> None:
    """Write `<run_dir>/report.html` (and `report/OursVsBaseline.png` when the data exist)."""
    run_dir = Path(cfg.run_dir)
    folder = run_dir / STAGE_DIRS["report"]
    stage = Stage("report", folder, cfg.section_dict("report"), report_inputs(run_dir))

    def body(st: Stage) -> tuple[list[Path], dict[str, Any]]:
        fig = make_figure(cfg, folder / FIGURE_NAME)
        if fig is None:
            (folder / FIGURE_NAME).unlink(missing_ok=True)  # never show a stale figure
        out = write_report(run_dir, figure=fig or folder / FIGURE_NAME)
        return [out] + ([fig] if fig else []), {"figure": bool(fig)}

    _run_stage(stage, body, force=force, log=log.info)
