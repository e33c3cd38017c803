"""The report's kit: its CSS, number formatting, the small HTML builders and the readers every section uses.

One `_num` (a finite float or None) and one `fmt` (DIGITS significant digits, never "-0") for the whole page;
which way a difference is better (`_delta_class`) is the metric's declared direction (`metrics.columns`).
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.core.csv_cells import unescape_frame
from t2i_debias.core.options import MODES
from t2i_debias.core.vocab import MEASURABLE
from t2i_debias.metrics.columns import higher_is_better

ATTRIBUTE_ORDER: tuple[str, ...] = (*MEASURABLE[:2], "race4", *MEASURABLE[2:], "gender_race")
ATTRIBUTE_LABEL = {"gender_race": "gender × race", "age_group": "age group", "race4": "race (4 groups)"}
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


def td_key(text: Any) -> str:
    """A left-aligned text cell."""
    return f'<td class="k">{esc(text)}</td>'


def _delta_class(metric: str, delta: Any) -> str | None:
    """'better' when `metric` moved its declared good way (`higher_is_better`), 'worse' for the opposite."""
    d = _num(delta)
    if d is None or abs(d) < 1e-12:
        return None
    return "better" if (d > 0) == higher_is_better(metric) else "worse"


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


def pyplot() -> Any:
    """matplotlib.pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def model_order(names: Iterable[str]) -> list[str]:
    """base first, then the trained modes in order, then the rest alphabetically."""
    rank = {"base": -1, **{m: i for i, m in enumerate(MODES)}}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def subdirs(d: Path) -> list[str]:
    """Names of the sub-folders of d (hidden and temporary ones left out), in model order."""
    if not d.is_dir():
        return []
    return model_order(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def attr_label(attr: str) -> str:
    """How an attribute is named on the page ("gender × race")."""
    return ATTRIBUTE_LABEL.get(attr, attr)


def attr_order(names: Iterable[str]) -> list[str]:
    """Attributes in ATTRIBUTE_ORDER, unknown ones after it alphabetically."""
    rank = {a: i for i, a in enumerate(ATTRIBUTE_ORDER)}
    return sorted(names, key=lambda a: (rank.get(a, len(rank)), a))


def plots_row(paths: Sequence[Path], root: Path, prefix: str) -> str:
    """Plots side by side at half width; a very wide one (aspect > 3) gets the full width."""
    from PIL import Image

    out = []
    for p in paths:
        with Image.open(p) as im:
            w, h = im.size
        out.append(img_tag(p, p.stem, f"{prefix}/{p.relative_to(root)}", width=None if w > 3 * h else 520))
    return '<div class="row">' + "".join(out) + "</div>" if out else ""

