"""The report's sections about how the run went: stage status, dataset imbalance, counterfactual triplets,
training curves. Each reads its files from the run folder and says "not computed yet" when they are missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from t2i_debias.augment.schema import BALANCE, FIDELITY
from t2i_debias.core.files import MANIFEST
from t2i_debias.core.layout import STAGE_DIRS, RunLayout
from t2i_debias.core.vocab import NOT_MEASURED
from t2i_debias.metrics.bias import METRIC_NAMES
from t2i_debias.report.kit import (
    _num,
    attr_label,
    attr_order,
    details,
    error,
    esc,
    fmt,
    html_table,
    img_tag,
    missing,
    plots_row,
    png_of,
    pyplot,
    raw_json,
    read_csv,
    read_json,
    subdirs,
    table,
    td_key,
)

# Headline columns of analysis/by_occupation.csv (the file has ~70 columns).
DATASET_OCC_COLUMNS: tuple[str, ...] = ("occupation", "n_persons", "n_ok", "face_rate", "p_gender=woman",
                                        "gender_tvd", "race_tvd", "race4_tvd", "age_group_tvd", "gender_race_tvd")


# ----------------------------------------------------------------------------- run overview
def stage_status(run_dir: Path, folder: str) -> dict[str, Any]:
    """Status of one stage folder from its `_manifest.json` and those one level down (models/<mode>/, ...).

    A stage written per sub-folder (models, generated, bias) is complete when every sub-folder has its
    manifest; the wall time is the sum over all manifests found, `finished` the latest of them.
    """
    d = run_dir / folder
    found: dict[str, dict[str, Any]] = {}
    bad: list[str] = []
    subs = subdirs(d)
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
            rows.append([td_key(stage), td_key("this page"), "<td></td>", "<td>—</td>"])
            continue
        st = stage_status(run_dir, folder)
        rows.append([td_key(stage), td_key(st["status"]), td_key(st["finished"]),
                     f"<td>{esc(fmt(st['wall_time_s']))}</td>"])
    out = [html_table(["stage", "status", "finished", "wall time (s)"], rows, left=3)]
    cfg = RunLayout(run_dir).config_toml
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
    for a in attr_order(attrs):
        blk = attrs[a] if isinstance(attrs[a], dict) else {}
        if a in unmeasured:  # a placeholder label is no bias: no numbers at all
            rows.append([td_key(attr_label(a)),
                         f'<td colspan="{len(METRIC_NAMES) + 2}" class="note">{NOT_MEASURED} by the labels backend</td>'])
            continue
        met = blk.get("metrics") if isinstance(blk.get("metrics"), dict) else {}
        counts = blk.get("counts") if isinstance(blk.get("counts"), dict) else {}
        n = sum(x for x in (_num(v) for v in counts.values()) if x is not None) if counts else None
        props = blk.get("proportions") if isinstance(blk.get("proportions"), dict) else {}
        rows.append([td_key(attr_label(a)), f"<td>{esc(fmt(int(n) if n is not None else None))}</td>",
                     *(f"<td>{esc(fmt(met.get(m)))}</td>" for m in METRIC_NAMES),
                     f'<td class="props">{_proportions_html(props, classes.get(a))}</td>'])
    if rows:
        out.append(html_table(["attribute", "n", *METRIC_NAMES, "overall proportions"], rows))
        out.append('<p class="note">Imbalance (DESIGN.md §3): tvd, pairwise and kl are 0 when balanced; '
                   "entropy is 1 when balanced. Greyed classes have no one.</p>")
    else:
        out.append(error("analysis/summary.json has no overall.attributes"))
    return "".join(out)


def section_dataset(run_dir: Path) -> str:
    """Dataset imbalance: analysis/summary.json at a glance, headline columns of by_occupation.csv, plots."""
    out = []
    lay = RunLayout(run_dir)
    adir, labels = lay.analysis, lay.labels_csv
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
    out.append(plots_row(sorted(adir.glob("*.png")), adir, "analysis"))
    return "".join(out)


# ----------------------------------------------------------------------------- counterfactual triplets
def section_counterfactuals(run_dir: Path) -> str:
    """enriched/: planned = written + rejected + skipped, the per-occupation balance with its warnings, fidelity."""
    edir = RunLayout(run_dir).enriched
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
    balance = edir / BALANCE
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
    fidelity = edir / FIDELITY
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
    plt = pyplot()
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
    mdir = RunLayout(run_dir).models
    modes = subdirs(mdir)
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
            row = [td_key(mode), f"<td>{esc(fmt(last.get('step', len(df))))}</td>",
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


