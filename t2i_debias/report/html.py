"""report.html: one self-contained page per run (inline CSS, images as data URIs, no scripts, no links).

It shows whatever the run folder holds (DESIGN.md §6), at a glance: stage status, dataset imbalance,
training curves, bias before and after per occupation, quality, the SOTA table and the OursVsBaseline
figure. A section whose files do not exist yet says "not computed yet" instead of failing, so the report
can be built at any point. Raw JSON stays available in collapsed <details> blocks.
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
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.attributes import NOT_MEASURED
from t2i_debias.csv_cells import unescape_frame
from t2i_debias.report.sota import (
    NO_OURS,
    OURS_COLUMN,
    TOY_NOTE,
    TOY_QUALITY,
    VS_BASE,
    VS_OURS,
    best_values,
    ours_of,
    settings_flag,
    settings_header,
    table_columns,
)
from t2i_debias.runs import MANIFEST, STAGE_DIRS, Stage, atomic_write_text
from t2i_debias.runs import run_stage as _run_stage

log = logging.getLogger(__name__)

REPORT_HTML = "report.html"
FIGURE_NAME = "OursVsBaseline.png"
MODE_ORDER: tuple[str, ...] = ("text", "unet", "both")
ATTRIBUTE_ORDER: tuple[str, ...] = ("gender", "race", "race4", "age_group", "gender_race")
ATTRIBUTE_LABEL = {"gender_race": "gender × race", "age_group": "age group", "race4": "race (4 groups)"}
METRICS: tuple[str, ...] = ("tvd", "pairwise", "kl", "entropy")
# Per-occupation bias metrics compared base vs each model (by_prompt.csv columns); fallback: first numeric ones.
OCCUPATION_METRICS: tuple[str, ...] = ("gender_tvd", "race_tvd")
# Headline columns of analysis/by_occupation.csv (the file has ~70 columns).
DATASET_OCC_COLUMNS: tuple[str, ...] = ("occupation", "n_persons", "n_ok", "face_rate", "p_gender=woman",
                                        "gender_tvd", "race_tvd", "race4_tvd", "age_group_tvd", "gender_race_tvd")
QUALITY_COLUMNS: tuple[str, ...] = ("fid", "kid", "kid_std", "clip_t", "clip_i", "n_images")
MAX_TABLE_ROWS = 80
DIGITS = 3  # significant digits of every number on the page

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0 auto;max-width:1200px;
padding:1em 2em;color:#222;line-height:1.4}
h1{border-bottom:2px solid #444;padding-bottom:.2em}h2{margin-top:1.8em;border-bottom:1px solid #bbb}
h3{margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.4em 0;font-size:13px}th,td{border:1px solid #ccc;padding:2px 7px;
text-align:right;vertical-align:top}th{background:#f0f0f0}td.k,th.k{text-align:left}
tr:nth-child(even) td{background:#fafafa}tr.mean td{font-weight:600;border-top:2px solid #999}
.missing{color:#8a6d3b;background:#fcf8e3;border:1px solid #faebcc;padding:.5em 1em;display:inline-block}
.better{color:#1a7f37;font-weight:600}.worse{color:#b42318;font-weight:600}
.d{font-size:11px;display:block;color:#777}.d.better{color:#1a7f37;font-weight:600}.d.worse{color:#b42318;font-weight:600}
.ci{font-size:11px;color:#666;white-space:nowrap;margin-left:.3em}.cib{display:block;margin-left:0}
.zero{color:#aaa}.props{text-align:left;max-width:520px}
img{max-width:100%;border:1px solid #ddd;margin:.3em 0}figure{margin:.3em .3em .3em 0;display:inline-block;
vertical-align:top}figcaption{font-size:12px;color:#555}pre{background:#f6f6f6;padding:.6em;overflow:auto;max-height:480px;
font-size:12px}details{margin:.5em 0}summary{cursor:pointer;color:#555}.note{font-size:12px;color:#555}
nav a{margin-right:1em}.tw{overflow-x:auto;max-width:100%}code{background:#f3f3f3;padding:0 .2em;font-size:12px}
.row{display:flex;flex-wrap:wrap;gap:.5em;align-items:flex-start}
"""


# ----------------------------------------------------------------------------- numbers and small HTML helpers
def _num(v: Any) -> float | None:
    """A finite float of a number-like value, else None (NaN, None, text, bool)."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def fmt(v: Any, digits: int = DIGITS) -> str:
    """A value for the page: numbers to `digits` significant digits (never "-0"), None/NaN as an em dash."""
    if v is None:
        return "—"
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if abs(v) < 1e-12:
            return "0"
        if v.is_integer() and abs(v) < 1e6:
            return str(int(v))
        if abs(v) >= 1000:
            return f"{v:.0f}"
        return f"{v:.{digits}g}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(fmt(x, digits) for x in v) + "]"
    return str(v)


def fmt_delta(d: Any) -> str:
    """A signed difference ("+0.125", "-0.375", "0")."""
    x = _num(d)
    if x is None:
        return "—"
    return "0" if abs(x) < 1e-12 else ("+" if x > 0 else "-") + fmt(abs(x))


def esc(x: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(x), quote=True)


def missing(what: str) -> str:
    """The placeholder of a section whose inputs do not exist yet."""
    return f'<p class="missing">not computed yet: {esc(what)}</p>'


def error(msg: str) -> str:
    """A visible error line (unreadable input), instead of a crash or a silent gap."""
    return f'<p class="missing">{esc(msg)}</p>'


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


def html_table(head: Sequence[str], rows: Iterable[Sequence[str]], row_classes: Sequence[str] | None = None,
               left: int = 1) -> str:
    """A table from pre-rendered cells: `head` is plain text (escaped here), each row a list of `<td>` strings;
    the first `left` columns are text (left-aligned)."""
    h = "".join(f'<th class="{"k" if i < left else ""}">{esc(c)}</th>' for i, c in enumerate(head))
    rc = list(row_classes or [])
    b = "".join(f'<tr class="{rc[i] if i < len(rc) else ""}">{"".join(r)}</tr>' for i, r in enumerate(rows))
    return f'<div class="tw"><table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table></div>'


def _td_key(text: Any) -> str:
    return f'<td class="k">{esc(text)}</td>'


def _delta_class(metric: str, delta: Any) -> str | None:
    """'better' when a bias metric fell (or entropy / face rate / CLIP rose), 'worse' for the opposite."""
    d = _num(delta)
    if d is None or abs(d) < 1e-12:
        return None
    up_is_good = any(k in metric for k in ("entropy", "face_rate", "clip"))
    return "better" if (d > 0) == up_is_good else "worse"


def value_cell(v: Any, metric: str = "", base: Any = None, ci: Any = None, bold: bool = False,
               ci_below: bool = False, extra: str = "") -> str:
    """A number cell; with `ci` its interval; `extra` (HTML) below it; with `base` the difference to it below
    (green = less biased).

    A difference too small to show at DIGITS significant digits (the two values print the same) is 0.
    """
    out = f"<b>{esc(fmt(v))}</b>" if bold else esc(fmt(v))
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and any(_num(c) is not None for c in ci):
        out += f' <span class="ci{" cib" if ci_below else ""}">[{esc(fmt(ci[0]))}, {esc(fmt(ci[1]))}]</span>'
    out += extra
    x, b = _num(v), _num(base)
    if x is not None and b is not None:
        d = 0.0 if fmt(x) == fmt(b) else x - b
        cls = _delta_class(metric, d) or ""
        out += f' <span class="d {cls}">Δ {esc(fmt_delta(d))}</span>'
    return f"<td>{out}</td>"


def floor_span(floor: Any, excess: Any) -> str:
    """'floor F · excess ±E' below a bias value (nothing when no floor is known)."""
    if _num(floor) is None:
        return ""
    e = f" · excess {esc(fmt_delta(excess))}" if _num(excess) is not None else ""
    return f' <span class="d fl">floor {esc(fmt(floor))}{e}</span>'


def paired_span(pm: dict[str, Any] | None, label: str = "Δ") -> str:
    """The paired difference to the base (or to the model `label` names): 'Δ d [lo, hi] p=…', green/red with ✓/✗
    only when its CI excludes 0."""
    if not isinstance(pm, dict) or _num(pm.get("diff")) is None:
        return ""
    ci = pm.get("ci")
    lo_hi = f" [{esc(fmt(ci[0]))}, {esc(fmt(ci[1]))}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else ""
    p = f" p={esc(fmt(pm.get('p')))}" if _num(pm.get("p")) is not None else ""
    cls, mark = {"less biased": ("better", " ✓"), "more biased": ("worse", " ✗")}.get(str(pm.get("verdict")), ("", ""))
    return f' <span class="d {cls}">{esc(label)} {esc(fmt_delta(pm["diff"]))}{lo_hi}{p}{mark}</span>'


def bias_cell(blk: dict[str, Any] | None, m: str, base_blk: dict[str, Any] | None = None,
              paired: dict[str, Any] | None = None) -> str:
    """An aggregate bias value: its CI, noise floor and excess, and its difference to the base: the paired
    one (coloured only when significant) when the summary has it, else the plain difference."""
    blk = blk or {}

    def part(b: dict[str, Any] | None, key: str) -> Any:
        d = (b or {}).get(key)
        return d.get(m) if isinstance(d, dict) else None

    extra = floor_span(part(blk, "floor"), part(blk, "excess"))
    pm = paired.get(m) if isinstance(paired, dict) else None
    if pm:
        return value_cell(part(blk, "aggregate"), m, ci=part(blk, "ci"), extra=extra + paired_span(pm))
    return value_cell(part(blk, "aggregate"), m, part(base_blk, "aggregate") if base_blk else None,
                      ci=part(blk, "ci"), extra=extra)


def details(summary: str, body_html: str) -> str:
    """A collapsed block (raw files, long tables)."""
    return f"<details><summary>{esc(summary)}</summary>{body_html}</details>"


def _clean_json(obj: Any) -> Any:
    """JSON with -0.0 turned into 0.0 (so the raw dumps show no "-0")."""
    if isinstance(obj, dict):
        return {k: _clean_json(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean_json(v) for v in obj]
    if isinstance(obj, float) and obj == 0.0:
        return 0.0
    return obj


def raw_json(label: str, obj: Any) -> str:
    """A JSON value, pretty-printed inside a collapsed <details>."""
    return details(label, f"<pre>{esc(json.dumps(_clean_json(obj), indent=1, ensure_ascii=False))}</pre>")


def read_json(path: Path) -> tuple[Any, str | None]:
    """(parsed JSON, None) or (None, error message naming the file)."""
    try:
        return json.loads(path.read_text(encoding="utf-8")), None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        return None, f"{path}: unreadable JSON ({e})"


def read_csv(path: Path) -> tuple[pd.DataFrame | None, str | None]:
    """(DataFrame, None) or (None, error message naming the file)."""
    try:
        return unescape_frame(pd.read_csv(path)), None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        return None, f"{path}: unreadable CSV ({e})"


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


def _subdirs(d: Path) -> list[str]:
    """Names of the sub-folders of d (hidden and temporary ones left out), in model order."""
    if not d.is_dir():
        return []
    return _model_order(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _attr_label(attr: str) -> str:
    return ATTRIBUTE_LABEL.get(attr, attr)


def _attr_order(names: Iterable[str]) -> list[str]:
    rank = {a: i for i, a in enumerate(ATTRIBUTE_ORDER)}
    return sorted(names, key=lambda a: (rank.get(a, len(rank)), a))


# ----------------------------------------------------------------------------- run overview
def stage_status(run_dir: Path, folder: str) -> dict[str, Any]:
    """Status of one stage folder from its `_manifest.json` and those one level down (models/<mode>/, ...).

    A stage written per sub-folder (models, generated, bias) is complete when every sub-folder has its
    manifest; the wall time is the sum over all manifests found, `finished` the latest of them.
    """
    d = run_dir / folder
    found: dict[str, dict[str, Any]] = {}
    bad: list[str] = []
    subs = _subdirs(d)
    for s in [".", *subs]:
        p = d / s / MANIFEST
        if p.is_file():
            m, _err = read_json(p)
            if isinstance(m, dict):
                found[s] = m
            else:
                bad.append(s)
    walls = [_num(m.get("wall_time_s")) for m in found.values()]
    wall = sum(w for w in walls if w is not None) if any(w is not None for w in walls) else None
    finished = max((str(m.get("finished_at", "")) for m in found.values()), default="")
    done = [s for s in subs if s in found]
    if "." in found:
        status = "complete" + (f" (+ {', '.join(done)})" if done else "")
    elif done:
        todo = [s for s in subs if s not in found]
        status = (f"complete ({len(done)}/{len(subs)}: {', '.join(done)})" if not todo else
                  f"partial ({len(done)}/{len(subs)}: {', '.join(done)}; not finished: {', '.join(todo)})")
    elif bad:
        status = "unreadable manifest"
    elif d.is_dir() and any(d.iterdir()):
        status = "incomplete (files but no manifest)"
    else:
        status = "not run"
    if bad and found:
        status += f"; unreadable manifest: {', '.join('top' if b == '.' else b for b in bad)}"
    return {"status": status, "finished": finished, "wall_time_s": wall}


def section_overview(run_dir: Path) -> str:
    """Run name, stage status from manifests (sub-folders aggregated), and the resolved config."""
    rows = []
    for stage, folder in STAGE_DIRS.items():
        if stage == "report":
            rows.append([_td_key(stage), _td_key("this page"), "<td></td>", "<td>—</td>"])
            continue
        st = stage_status(run_dir, folder)
        rows.append([_td_key(stage), _td_key(st["status"]), _td_key(st["finished"]),
                     f"<td>{esc(fmt(st['wall_time_s']))}</td>"])
    out = [html_table(["stage", "status", "finished", "wall time (s)"], rows, left=3)]
    cfg = run_dir / "config.toml"
    if cfg.is_file():
        out.append(details("config.toml", f"<pre>{esc(cfg.read_text(encoding='utf-8'))}</pre>"))
    return "".join(out)


# ----------------------------------------------------------------------------- dataset
def _proportions_html(props: dict[str, Any], classes: Sequence[str] | None) -> str:
    """'man 0.417 · woman 0.583' in the class order of the summary; zero shares greyed."""
    names = [c for c in (classes or []) if c in props] + [c for c in props if c not in (classes or [])]
    parts = []
    for c in names:
        v = _num(props[c])
        cls = ' class="zero"' if v is not None and abs(v) < 1e-12 else ""
        parts.append(f"<span{cls}>{esc(c)}&nbsp;{esc(fmt(props[c]))}</span>")
    return " · ".join(parts)


def not_measured(s: dict[str, Any]) -> set[str]:
    """Attributes a summary.json (analysis or bias) says its labels backend does not measure."""
    listed = s.get("not_measured")
    out = {str(a) for a in listed} if isinstance(listed, list) else set()
    overall = s.get("overall") if isinstance(s.get("overall"), dict) else {}
    attrs = overall.get("attributes") if isinstance(overall.get("attributes"), dict) else {}
    return out | {a for a, b in attrs.items() if isinstance(b, dict) and b.get("measured") is False}


def dataset_summary(s: dict[str, Any]) -> str:
    """analysis/summary.json at a glance: counts, then per attribute its overall proportions and 4 metrics."""
    out = []
    overall = s.get("overall") if isinstance(s.get("overall"), dict) else {}
    facts = [(k, s.get(k, overall.get(k))) for k in ("n_persons", "n_occupations")]
    facts += [(k, overall.get(k)) for k in ("n_ok", "face_rate")]
    line = ", ".join(f"{esc(k)} <b>{esc(fmt(v))}</b>" for k, v in facts if v is not None)
    if isinstance(s.get("status_counts"), dict):
        line += "; labelling status: " + ", ".join(f"{esc(k)} <b>{esc(fmt(v))}</b>"
                                                   for k, v in s["status_counts"].items())
    if line:
        out.append(f"<p>{line}</p>")
    attrs = overall.get("attributes") if isinstance(overall.get("attributes"), dict) else {}
    classes = s.get("classes") if isinstance(s.get("classes"), dict) else {}
    rows = []
    unmeasured = not_measured(s)
    for a in _attr_order(attrs):
        blk = attrs[a] if isinstance(attrs[a], dict) else {}
        if a in unmeasured:  # a placeholder label is no bias: no numbers at all
            rows.append([_td_key(_attr_label(a)),
                         f'<td colspan="{len(METRICS) + 2}" class="note">{NOT_MEASURED} by the labels backend</td>'])
            continue
        met = blk.get("metrics") if isinstance(blk.get("metrics"), dict) else {}
        counts = blk.get("counts") if isinstance(blk.get("counts"), dict) else {}
        n = sum(x for x in (_num(v) for v in counts.values()) if x is not None) if counts else None
        props = blk.get("proportions") if isinstance(blk.get("proportions"), dict) else {}
        rows.append([_td_key(_attr_label(a)), f"<td>{esc(fmt(int(n) if n is not None else None))}</td>",
                     *(f"<td>{esc(fmt(met.get(m)))}</td>" for m in METRICS),
                     f'<td class="props">{_proportions_html(props, classes.get(a))}</td>'])
    if rows:
        out.append(html_table(["attribute", "n", *METRICS, "overall proportions"], rows))
        out.append('<p class="note">Imbalance (DESIGN.md §3): tvd, pairwise and kl are 0 when balanced; '
                   "entropy is 1 when balanced. Greyed classes have no one.</p>")
    else:
        out.append(error("analysis/summary.json has no overall.attributes"))
    return "".join(out)


def section_dataset(run_dir: Path) -> str:
    """Dataset imbalance: analysis/summary.json at a glance, headline columns of by_occupation.csv, plots."""
    out = []
    adir = run_dir / "analysis"
    labels = run_dir / "labels" / "labels.csv"
    if not adir.is_dir():
        if labels.is_file():
            df, err = read_csv(labels)
            if err:
                out.append(error(err))
            elif "status" in df.columns:
                counts = df["status"].fillna("").value_counts()
                out.append("<p>labels/labels.csv: " + ", ".join(f"{esc(k)} <b>{v}</b>" for k, v in counts.items())
                           + "</p>")
        return "".join(out) + missing("analysis/ (dataset_analysis stage)")
    summary = adir / "summary.json"
    unmeasured: set[str] = set()
    if summary.is_file():
        s, err = read_json(summary)
        if err:
            out.append(error(err))
        elif isinstance(s, dict):
            unmeasured = not_measured(s)
            out.append("<h3>Overall (analysis/summary.json)</h3>" + dataset_summary(s)
                       + raw_json("raw analysis/summary.json", s))
        else:
            out.append(error(f"{summary}: expected a JSON object"))
    else:
        out.append(missing("analysis/summary.json"))
    by_occ = adir / "by_occupation.csv"
    if by_occ.is_file():
        df, err = read_csv(by_occ)
        if err:
            out.append(error(err))
        else:
            cols = [c for c in DATASET_OCC_COLUMNS if c in df.columns]
            if len(cols) < 3:  # unknown layout: show it as it is
                cols = list(df.columns)
            df = df.copy()
            for c in cols:
                if any(c.startswith(f"{a}_") or c.startswith(f"n_{a}=") or c.startswith(f"p_{a}=") for a in unmeasured):
                    df[c] = NOT_MEASURED
            out.append("<h3>Per occupation (analysis/by_occupation.csv)</h3>" + table(df[cols])
                       + (f'<p class="note">{len(df.columns) - len(cols)} more columns (counts and shares per '
                          "class, other metrics) in the file.</p>" if len(cols) < len(df.columns) else ""))
    else:
        out.append(missing("analysis/by_occupation.csv"))
    out.append(_plots(sorted(adir.glob("*.png")), adir, "analysis"))
    return "".join(out)


# ----------------------------------------------------------------------------- counterfactual triplets
def section_counterfactuals(run_dir: Path) -> str:
    """enriched/: planned = written + rejected + skipped, the per-occupation balance with its warnings, fidelity."""
    edir = run_dir / "enriched"
    if not edir.is_dir():
        return missing("enriched/ (prepare_dataset_finetune stage)")
    out = []
    man, err = read_json(edir / MANIFEST) if (edir / MANIFEST).is_file() else ({}, None)
    extra = man.get("extra", {}) if isinstance(man, dict) else {}
    if err:
        out.append(error(err))
    elif "n_planned" in extra:
        out.append("<p>Triplets planned <b>{}</b> = written <b>{}</b> + rejected (a member not verified) <b>{}</b>"
                   " + skipped (anchor image missing or unreadable) <b>{}</b>.</p>".format(
                       *(esc(extra.get(k)) for k in ("n_planned", "n_triplets", "n_rejected", "n_skipped"))))
    balance = edir / "balance.csv"
    if balance.is_file():
        df, err = read_csv(balance)
        if err:
            out.append(error(err))
        else:
            df["warning"] = df["warning"].fillna("") if "warning" in df.columns else ""
            warned = df[df["warning"] != ""]
            if len(warned):
                items = "".join(f"<li><b>{esc(r.occupation)}</b>: {esc(r.warning)}</li>" for r in warned.itertuples())
                out.append(f'<p class="worse">{len(warned)} occupation(s) the data could not balance or mostly '
                           f"lost:</p><ul>{items}</ul>")
            classes = pd.DataFrame({"warning": ["worse" if w else "" for w in df["warning"]],
                                    "pool_male_share": ["" if b else "worse" for b in df.get("balanced", [])]})
            out.append("<h3>Balance per occupation (enriched/balance.csv)</h3>"
                       '<p class="note">Pool = anchors of the written triplets + their verified positives: what '
                       "training sees.</p>" + table(df, classes=classes))
    else:
        out.append(missing("enriched/balance.csv"))
    fidelity = edir / "fidelity.csv"
    if fidelity.is_file():
        df, err = read_csv(fidelity)
        out.append(error(err) if err else "<h3>Counterfactual fidelity (enriched/fidelity.csv)</h3>"
                   '<p class="note">Per occupation, member and requested (gender, race): how many images were '
                   "asked for, verified by the classifier, written and rejected, and the tries used.</p>"
                   + table(df))
    else:
        out.append(missing("enriched/fidelity.csv"))
    return "".join(out)


# ----------------------------------------------------------------------------- training
def _plot_log(df: pd.DataFrame, title: str) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3))
    x = df["step"] if "step" in df.columns else pd.Series(range(len(df)))
    for c in df.columns:
        if c not in ("step", "lr") and pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any():
            ax.plot(x, df[c], label=c, lw=2 if c == "loss" else 1)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return png_of(fig)


def section_training(run_dir: Path) -> str:
    """Training curves per mode side by side (loss.png, else plotted from training_log.csv) and one table."""
    mdir = run_dir / "models"
    modes = _subdirs(mdir)
    if not modes:
        return missing("models/ (finetune stage)")
    figs, errs, logs = [], [], {}
    for mode in modes:
        d = mdir / mode
        logf, png = d / "training_log.csv", d / "loss.png"
        df, err = read_csv(logf) if logf.is_file() else (None, None)
        if err:
            errs.append(error(err))
        elif df is not None and not df.empty:
            logs[mode] = df
        if png.is_file():
            figs.append(img_tag(png, f"loss {mode}", f"{mode}: models/{mode}/loss.png", width=355))
        elif mode in logs:
            figs.append(img_tag(_plot_log(logs[mode], mode), f"loss {mode}",
                                f"{mode}: plotted from models/{mode}/training_log.csv", width=355))
    out = errs + (['<div class="row">' + "".join(figs) + "</div>"] if figs else [])
    if logs:
        comps = [c for c in dict.fromkeys(c for df in logs.values() for c in df.columns)
                 if c not in ("step", "loss", "lr") and any(c in df.columns and pd.api.types.is_numeric_dtype(df[c])
                                                             and df[c].notna().any() for df in logs.values())]
        rows = []
        for mode, df in logs.items():
            last = df.iloc[-1]
            loss = pd.to_numeric(df["loss"], errors="coerce") if "loss" in df.columns else None
            row = [_td_key(mode), f"<td>{esc(fmt(last.get('step', len(df))))}</td>",
                   f"<td>{esc(fmt(loss.iloc[0] if loss is not None else None))}</td>",
                   f"<td>{esc(fmt(loss.iloc[-1] if loss is not None else None))}</td>"]
            row += [f"<td>{esc(fmt(last.get(c)))}</td>" for c in comps]
            row.append(f"<td>{esc(fmt(last.get('lr')))}</td>")
            rows.append(row)
        out.append(html_table(["mode", "steps", "first loss", "last loss", *(f"last {c}" for c in comps), "lr"],
                              rows))
    no_data = [m for m in modes if m not in logs and not (mdir / m / "loss.png").is_file()]
    out.extend(missing(f"models/{m}/training_log.csv") for m in no_data)
    return "".join(out)


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
        rows.append([_td_key(label)] + cells)
        rcls.append(cls)
    return html_table(["occupation", *models], rows, rcls)


def rates_table(frames: dict[str, pd.DataFrame]) -> str:
    """Per occupation and model: the face-found rate and beside it the ambiguous rate (both out of all images)."""
    face = _by_occupation(frames, "face_rate")
    if face.empty:
        return ""
    amb = _by_occupation(frames, "ambiguous_rate").reindex(index=face.index, columns=face.columns)
    models = list(face.columns)
    rows = [[_td_key(o)] + [c for m in models for c in (value_cell(face.loc[o, m], "face_rate"),
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
    plt = _plt()
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
    """summary["attributes"] of a bias summary.json (older flat layout: attribute blocks at top level)."""
    attrs = summary.get("attributes")
    if isinstance(attrs, dict):
        return {k: v for k, v in attrs.items() if isinstance(v, dict)}
    return {k: v for k, v in summary.items() if isinstance(v, dict) and "aggregate" in v}


def bias_overview(summaries: dict[str, dict[str, Any]]) -> str:
    """One row per model: images, face rate, tvd (with CI) per attribute, Δ to base; other metrics collapsed."""
    attrs = _attr_order(dict.fromkeys(a for s in summaries.values() for a in _attributes_of(s)))
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
        row = [_td_key(model), f"<td>{esc(fmt(s.get('n_prompts')))}</td>", f"<td>{esc(fmt(s.get('n_images')))}</td>",
               f"<td>{esc(fmt(s.get('n_faces')))}</td>",
               value_cell(s.get("face_rate"), "face_rate", ref.get("face_rate") if ref else None),
               f"<td>{esc(fmt(s.get('ambiguous_rate')))}</td>"]
        row += [bias_cell(at.get(a), "tvd", base_attrs.get(a) if ref else None, paired_of(s, a) if ref else None)
                for a in attrs]
        rows.append(row)
    out = [html_table(["model", "prompts", "images", "faces", "face rate", "ambiguous rate",
                       *(f"{_attr_label(a)} tvd" for a in attrs)], rows)]
    out.append('<p class="note">floor = the value a perfectly balanced model shows with as many labelled images '
               "(sampling noise); excess = value − floor. Δ = model − base on the same (prompt, seed) pairs with "
               "its paired 95% bootstrap CI and p-value; ✓ / ✗ (green / red) only where that CI excludes 0.</p>")
    out.append(generation_table(summaries))
    # every aggregate metric, one row per attribute.metric, collapsed
    full = []
    for a in attrs:
        for m in METRICS:
            vals = [agg(_attributes_of(s), a, m) for s in summaries.values()]
            if all(v is None for v in vals):
                continue
            full.append([_td_key(f"{_attr_label(a)} {m}")] + [
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
        rows.append([_td_key(m)] + [f'<td class="{"worse" if g.get(k) != first.get(k) else ""}">{esc(fmt(g.get(k)))}</td>'
                                    for k in GENERATION_KEYS])
    same = all(all(g.get(k) == first.get(k) for k in GENERATION_KEYS) for g in gens.values())
    note = ("same for every model" if same else "<span class=\"worse\">differs between models (red): their bias "
            "numbers are not comparable</span>")
    return (f"<h3>Generation settings</h3>{html_table(['model', *(k.replace('_', ' ') for k in GENERATION_KEYS)], rows)}"
            f'<p class="note">Settings the bias numbers were measured under: {note}.</p>')


def stale_models(run_dir: Path) -> dict[str, str]:
    """bias/stale.json: model folders the run's config no longer trains -> why (left out of every section)."""
    from t2i_debias.metrics.summary import STALE

    path = run_dir / "bias" / STALE
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


def section_bias(run_dir: Path) -> str:
    """Bias before/after: a model overview from summary.json, then base vs each model per occupation."""
    bdir = run_dir / "bias"
    stale = stale_models(run_dir)
    models = [m for m in _subdirs(bdir) if m not in stale]
    if not models:
        return missing("bias/ (evaluation stage)")
    out = [stale_note(stale)]
    summaries = {}
    for m in models:
        p = bdir / m / "summary.json"
        if p.is_file():
            s, err = read_json(p)
            if err:
                out.append(error(err))
            else:
                summaries[m] = s if isinstance(s, dict) else {"value": s}
    out.append('<p class="note">Bias metrics of DESIGN.md §3, lower = less biased; Δ = model − base; '
               '<span class="better">green</span> = less biased (or more faces found), '
               '<span class="worse">red</span> = more. 95% bootstrap CI in brackets. In the per-model table Δ is '
               "the paired difference (same prompts and seeds), coloured only where its 95% CI excludes 0; per "
               "occupation it is the plain difference of the two values.</p>")
    if summaries:
        out.append("<h3>Per model (bias/&lt;model&gt;/summary.json)</h3>" + bias_overview(summaries))
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


# ----------------------------------------------------------------------------- quality
def section_quality(run_dir: Path) -> str:
    """quality/<model>.json side by side: FID, KID, CLIP-T, CLIP-I; settings shared by all models as a note."""
    qdir = run_dir / "quality"
    stale = stale_models(run_dir)
    files = {p.stem: p for p in qdir.glob("*.json")
             if not p.name.startswith(("_", ".")) and p.stem not in stale} if qdir.is_dir() else {}
    if not files:
        return missing("quality/<model>.json (quality_evaluation stage)")
    recs, errs = {}, [stale_note(stale)]
    for m in _model_order(files):
        q, err = read_json(files[m])
        if err:
            errs.append(error(err))
        elif isinstance(q, dict):
            recs[m] = q
        else:
            errs.append(error(f"{files[m]}: expected a JSON object"))
    out = "".join(errs)
    if not recs:
        return out
    cols = [c for c in QUALITY_COLUMNS if any(c in q for q in recs.values())]
    base = recs.get("base")
    rows = []
    for m, q in recs.items():
        row = [_td_key(m)]
        for c in cols:
            if c in ("fid", "kid", "clip_t", "clip_i") and base is not None and m != "base":
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


# ----------------------------------------------------------------------------- SOTA
_MD_SEP = re.compile(r"^\s*\|?\s*:?-{3,}")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_CODE = re.compile(r"`([^`]+)`")
_CI = re.compile(r"^(.*?)\s*(\[[^\]]*\])$")


def _inline(s: str) -> str:
    """Escaped markdown inline text with **bold** and `code`."""
    return _CODE.sub(r"<code>\1</code>", _BOLD.sub(r"<b>\1</b>", esc(s)))


def markdown_table(md: str) -> str:
    """A markdown document with pipe tables (as sota/comparison.md) to HTML; a "[lo, hi]" CI goes below its value."""
    out: list[str] = []
    rows: list[list[str]] = []
    items: list[str] = []

    def cell(c: str) -> str:
        m = _CI.match(c)
        return f'{_inline(m.group(1))} <span class="ci">{esc(m.group(2))}</span>' if m and m.group(1) else _inline(c)

    def flush() -> None:
        if rows:
            head, *body = rows
            h = "".join(f'<th class="{"k" if i == 0 else ""}">{_inline(c)}</th>' for i, c in enumerate(head))
            b = "".join("<tr>" + "".join(f'<td class="{"k" if i == 0 else ""}">{cell(c)}</td>'
                                         for i, c in enumerate(r)) + "</tr>" for r in body)
            out.append(f'<div class="tw"><table><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table></div>')
            rows.clear()
        if items:
            out.append("<ul>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>")
            items.clear()

    for line in md.splitlines():
        s = line.strip()
        if s.startswith("|"):
            if _MD_SEP.match(s):
                continue
            rows.append([c.strip() for c in s.strip("|").split("|")])
            continue
        if s.startswith(("- ", "* ")):
            if rows:
                flush()
            items.append(_inline(s[2:]))
            continue
        flush()
        if s.startswith("#"):
            out.append(f"<h4>{_inline(s.lstrip('#').strip())}</h4>")
        elif s:
            out.append("<p>" + _inline(s) + "</p>")
    flush()
    return "".join(out)


def sota_table(df: pd.DataFrame) -> str:
    """sota/comparison.csv as method × metric (the columns of comparison.md), CI below each value, the best
    value per column in bold (as printed; none when every method ties), and why a method did not run."""
    if "method" not in df.columns:
        return table(df)
    status = df["status"].fillna("ok").astype(str) if "status" in df.columns else pd.Series("ok", index=df.index)
    ran = df[status == "ok"]
    cols = [c for c in table_columns(df) if c in df.columns and pd.to_numeric(df[c], errors="coerce").notna().any()]
    best = best_values(ran, cols)
    tied = set()
    for c in cols:
        vals = [_num(v) for m, v in zip(ran["method"], ran[c], strict=True) if not (c == "clip_i" and m == "base")]
        vals = [v for v in vals if v is not None]
        if c in best and vals and all(fmt(v) == fmt(best[c]) for v in vals):
            tied.add(c)
    mixed = "settings" in df.columns and (df["settings"].map(settings_flag) != "").any()
    ours = ours_of(df)

    def paired(r: Any, c: str, suffixes: dict[str, str], against: str) -> str:
        """The span of row r's paired Δ of column c against `against` (nothing for that model itself)."""
        if c + suffixes["diff"] not in df.columns or r["method"] == against:
            return ""
        pm = {k: r.get(c + suffixes[k]) for k in ("diff", "p", "verdict")}
        return paired_span({**pm, "ci": [r.get(c + suffixes["lo"]), r.get(c + suffixes["hi"])]},
                           "Δ" if against == "base" else f"Δ vs {against}")

    rows = []
    for i, r in df.iterrows():
        row = [_td_key(r["method"])] + ([_td_key(r.get("kind", ""))] if "kind" in df.columns else [])
        if status[i] != "ok":
            rows.append(row + ['<td class="zero">n/a</td>'] * (len(cols) + mixed))
            continue
        for c in cols:
            v = _num(r.get(c))
            is_best = (v is not None and c in best and c not in tied and not (c == "clip_i" and r["method"] == "base")
                       and fmt(v) == fmt(best[c]))
            ci = [r.get(f"{c}_lo"), r.get(f"{c}_hi")] if f"{c}_lo" in df.columns else None
            extra = floor_span(r.get(f"{c}_floor"), r.get(f"{c}_excess")) if f"{c}_floor" in df.columns else ""
            extra += paired(r, c, VS_BASE, "base") + (paired(r, c, VS_OURS, ours) if ours else "")
            row.append(value_cell(v, c, ci=ci, bold=is_best, ci_below=True, extra=extra))
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
    note = ("Bias: lower is better (entropy, CLIP, face rate: higher); 95% bootstrap CI below each value, then the "
            "noise floor and excess, then Δ = method − base (paired 95% CI, p; ✓ / ✗ only where the CI excludes "
            "0)" + (f", then Δ vs {esc(ours)} = method − ours ({esc(ours)}), paired the same way" if ours else "")
            + "; <b>bold</b> = best of the column")
    if tied:
        note += f" (no bold where all methods tie: {esc(', '.join(sorted(tied)))})"
    out.append(f'<p class="note">{note}.</p>')
    if OURS_COLUMN in df.columns and ours is None:
        out.append(f'<p class="note">{esc(NO_OURS)}</p>')
    if set(TOY_QUALITY) & set(cols):
        out.append(f'<p class="note">{esc(TOY_NOTE)}</p>')
    not_run = [(r["method"], status[i]) for i, r in df.iterrows() if status[i] != "ok"]
    if not_run:
        out.append("<p>Not run:</p><ul>" + "".join(f"<li><b>{esc(m)}</b>: {esc(s)}</li>" for m, s in not_run)
                   + "</ul>")
    return "".join(out)


def _plots(paths: Sequence[Path], root: Path, prefix: str) -> str:
    """Plots side by side at half width; a very wide one (aspect > 3) gets the full width."""
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            w, h = im.size
        out.append(img_tag(p, p.stem, f"{prefix}/{p.relative_to(root)}", width=None if w > 3 * h else 520))
    return '<div class="row">' + "".join(out) + "</div>" if out else ""


def section_sota(run_dir: Path) -> str:
    """sota/comparison.csv as a table (else comparison.md as written) and the comparison plots."""
    sdir = run_dir / "sota"
    md, csv = sdir / "comparison.md", sdir / "comparison.csv"
    out, err = "", None
    if csv.is_file():
        df, err = read_csv(csv)
        out = error(err) if err else sota_table(df)
    if (err or not csv.is_file()) and md.is_file():
        out += markdown_table(md.read_text(encoding="utf-8"))
    if not out:
        return missing("sota/comparison.csv (sota_evaluation stage)")
    pngs = sorted(sdir.glob("*.png")) + sorted(sdir.glob("plots/*.png"))
    return out + _plots(pngs, sdir, "sota")


SWEEP_ATTRIBUTES: tuple[str, ...] = ("gender", "race")


def section_sweep(run_dir: Path) -> str:
    """Bias against guidance scale per model (sweep/sweep.csv and its plot): tvd with CI, floor, excess and
    the paired Δ to the base at the same scale."""
    from t2i_debias.plots import SWEEP_CSV, SWEEP_DIR, SWEEP_PLOT

    path = run_dir / SWEEP_DIR / SWEEP_CSV
    if not path.is_file():
        return missing("sweep/sweep.csv (optional stage: set [bias] guidance_sweep, e.g. [1.0, 4.0, 7.5])")
    df, err = read_csv(path)
    if err:
        return error(err)
    d = df[(df["metric"] == "tvd") & df["attribute"].isin(SWEEP_ATTRIBUTES)]
    attrs = [a for a in SWEEP_ATTRIBUTES if (d["attribute"] == a).any()]
    rows = []
    for (model, scale), g in d.groupby(["model", "guidance_scale"], sort=False):
        row = [_td_key(model), f"<td>{esc(fmt(float(scale)))}</td>"]
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
    out = [html_table(["model", "guidance", *(f"{_attr_label(a)} tvd" for a in attrs), "face rate",
                       "ambiguous rate", "images / prompt"], rows, left=1)]
    out.append('<p class="note">Every model generated again at each guidance scale on the same prompts and seeds '
               "(sweep/generated/), measured by the bias stage's code; Δ = model − base at the same scale, paired. "
               "Classifier-free guidance sharpens whatever imbalance is left: a method that only debiases at "
               "guidance 1 shows it here.</p>")
    png = run_dir / SWEEP_DIR / SWEEP_PLOT
    if png.is_file():
        out.append(img_tag(png, "bias against guidance scale", f"sweep/{SWEEP_PLOT}", width=760))
    return "".join(out)


def section_figure(figure: Path | None) -> str:
    """The OursVsBaseline figure."""
    if figure is None or not figure.is_file():
        return missing("OursVsBaseline figure (needs generated/ and bias/ of base and a debiased model)")
    return img_tag(figure, "Ours vs baseline", "Same seeds in both rows; bars: predicted gender, race", width=900)


SECTIONS: tuple[tuple[str, str], ...] = (
    ("overview", "Run"),
    ("dataset", "Dataset imbalance"),
    ("counterfactuals", "Counterfactual triplets"),
    ("training", "Training curves"),
    ("bias", "Bias before / after"),
    ("sweep", "Bias against guidance scale"),
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
        "counterfactuals": lambda: section_counterfactuals(run_dir),
        "training": lambda: section_training(run_dir),
        "bias": lambda: section_bias(run_dir),
        "sweep": lambda: section_sweep(run_dir),
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
    """The small files the report reads; the stage reruns when any of them appears or changes.

    Stage manifests count too (the Run table shows them), except the report's own.
    """
    pats = ["config.toml", "labels/labels.csv", "analysis/*", "enriched/balance.csv", "enriched/fidelity.csv", "models/*/training_log.csv", "models/*/loss.png",
            "bias/stale.json", "bias/*/summary.json", "bias/*/by_prompt.csv", "bias/*/predictions.csv", "quality/*.json",
            "sota/*", "sota/plots/*", "sweep/sweep.csv", "sweep/*.png", "generated/*/metadata.csv", f"*/{MANIFEST}", f"*/*/{MANIFEST}"]
    report_dir = run_dir / STAGE_DIRS["report"]
    found = {p for pat in pats for p in run_dir.glob(pat) if p.is_file() and report_dir not in p.parents}
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
