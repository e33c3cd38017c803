"""The OursVsBaseline figure: base-model vs debiased images on the same seeds, with predicted attributes.

For k occupations it draws two rows each (base, ours), the occupation at the left, and under every
image two small colour bars: predicted perceived gender and race (grey = no face found). Same seeds
in both rows, so the pair shows what the debiasing changed on the same noise.
"""

from __future__ import annotations

import io
import logging
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from t2i_debias.core.config import MODES
from t2i_debias.core.csv_cells import unescape_frame
from t2i_debias.core.files import atomic_write_bytes, safe_join
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.vocab import GENDERS, RACES

log = logging.getLogger(__name__)

# Colour-blind-safe palettes (Paul Tol), chosen to avoid pink/blue gender stereotypes.
GENDER_COLORS: dict[str, str] = {"man": "#DDAA33", "woman": "#004488"}
RACE_COLORS: dict[str, str] = {
    "asian": "#EE7733",
    "indian": "#0077BB",
    "black": "#33BBEE",
    "white": "#EE3377",
    "middle eastern": "#CC3311",
    "latino hispanic": "#009988",
}
NO_FACE = "#CCCCCC"

Pred = Mapping[str, Any] | None


def _color(value: Any, palette: Mapping[str, str]) -> str:
    return palette.get(str(value), NO_FACE) if isinstance(value, str) else NO_FACE


def _grid_size(base_images: Sequence[Sequence[Image.Image]], ours_images: Sequence[Sequence[Image.Image]],
               occupations: Sequence[str], base_preds: Sequence[Sequence[Pred]],
               ours_preds: Sequence[Sequence[Pred]]) -> tuple[int, int]:
    """(occupations k, images per row n) of the figure; ValueError when the rows do not fit together."""
    k = len(occupations)
    if k == 0:
        raise ValueError("ours_vs_baseline: no occupations to show")
    for name, seq in (("base_images", base_images), ("ours_images", ours_images),
                      ("base_preds", base_preds), ("ours_preds", ours_preds)):
        if len(seq) != k:
            raise ValueError(f"ours_vs_baseline: {name} has {len(seq)} rows, expected {k} (one per occupation)")
    n = max(len(r) for r in list(base_images) + list(ours_images))
    if n == 0:
        raise ValueError("ours_vs_baseline: no images")
    for i in range(k):
        if len(base_images[i]) != len(ours_images[i]):
            raise ValueError(f"ours_vs_baseline: occupation {occupations[i]!r} has {len(base_images[i])} base "
                             f"and {len(ours_images[i])} ours images; the rows must share seeds")
        if len(base_preds[i]) != len(base_images[i]) or len(ours_preds[i]) != len(ours_images[i]):
            raise ValueError(f"ours_vs_baseline: occupation {occupations[i]!r}: one prediction per image needed")
    return k, n


def _draw_image(ax: Any, image: Image.Image, pred: Pred, bar_h: float = 0.09, gap: float = 0.025) -> None:
    """One image and under it its two bars: predicted gender, then race (grey = no face)."""
    from matplotlib.patches import Rectangle

    ax.imshow(image.convert("RGB"))
    pred = pred or {}
    for b, (key, palette) in enumerate((("gender", GENDER_COLORS), ("race", RACE_COLORS))):
        ax.add_patch(Rectangle((0, -gap - (b + 1) * bar_h - b * gap / 2), 1, bar_h,
                               transform=ax.transAxes, clip_on=False, lw=0,
                               facecolor=_color(pred.get(key), palette)))


def _legends(fig: Any) -> None:
    """The two colour legends at the bottom: gender (upper bar) left, race (lower bar) right."""
    from matplotlib.patches import Patch

    none = Patch(facecolor=NO_FACE, label="no face")
    g_handles = [Patch(facecolor=c, label=g) for g, c in GENDER_COLORS.items() if g in GENDERS] + [none]
    r_handles = [Patch(facecolor=c, label=r) for r, c in RACE_COLORS.items() if r in RACES]
    fig.legend(handles=g_handles, loc="lower left", ncol=1, fontsize=7, frameon=False,
               title="gender (upper bar)", title_fontsize=7, bbox_to_anchor=(0.01, 0.0))
    fig.legend(handles=r_handles, loc="lower right", ncol=3, fontsize=7, frameon=False,
               title="race (lower bar)", title_fontsize=7, bbox_to_anchor=(0.99, 0.0))


def ours_vs_baseline(base_images: Sequence[Sequence[Image.Image]], ours_images: Sequence[Sequence[Image.Image]],
                     occupations: Sequence[str], base_preds: Sequence[Sequence[Pred]],
                     ours_preds: Sequence[Sequence[Pred]], out_path: str | Path,
                     base_label: str = "base", ours_label: str = "ours", seeds: Sequence[int] | None = None,
                     cell_inches: float = 1.3, dpi: int = 150) -> Path:
    """Write the figure as a PNG: per occupation one row of base images and one of ours (same seeds).

    `*_images[i][j]` is image j of occupation i; `*_preds[i][j]` is a dict with `gender` and `race`
    (None or missing keys = no face). Returns `out_path`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k, n = _grid_size(base_images, ours_images, occupations, base_preds, ours_preds)

    label_w, legend_h = 1.6, 0.9
    row_h = cell_inches * 1.32  # image + two bars + gap
    fig_w = label_w + n * cell_inches * 1.05
    fig_h = k * 2 * row_h + k * 0.15 + legend_h + (0.3 if seeds is not None else 0)
    fig = plt.figure(figsize=(fig_w, fig_h), dpi=dpi)
    top = 1 - (0.3 / fig_h if seeds is not None else 0.05 / fig_h)
    gs = fig.add_gridspec(2 * k, n, left=label_w / fig_w, right=0.99, top=top, bottom=legend_h / fig_h,
                          hspace=0.42, wspace=0.06)
    for i, occ in enumerate(occupations):
        for r, (images, preds, row_label) in enumerate(((base_images[i], base_preds[i], base_label),
                                                        (ours_images[i], ours_preds[i], ours_label))):
            for j in range(n):
                ax = fig.add_subplot(gs[2 * i + r, j])
                ax.set_xticks([])
                ax.set_yticks([])
                for s in ax.spines.values():
                    s.set_visible(False)
                if j >= len(images):
                    ax.axis("off")
                    continue
                _draw_image(ax, images[j], preds[j])
                if j == 0:
                    ax.set_ylabel(row_label, fontsize=8, rotation=0, ha="right", va="center", labelpad=4)
                if seeds is not None and i == 0 and r == 0 and j < len(seeds):
                    ax.set_title(f"seed {seeds[j]}", fontsize=7)
        # occupation name at the left, centred on its pair of rows
        a0 = fig.axes[-(2 * n)]
        a1 = fig.axes[-n]
        y = (a0.get_position().y1 + a1.get_position().y0) / 2
        fig.text(0.01, y, textwrap.fill(occ, 14), ha="left", va="center", fontsize=10, weight="bold")
        if i > 0:  # a thin rule between occupations
            y_sep = (fig.axes[-(2 * n) - 1].get_position().y0 + a0.get_position().y1) / 2
            fig.add_artist(plt.Line2D([0.01, 0.99], [y_sep, y_sep], color="#999999", lw=0.6))

    _legends(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return atomic_write_bytes(out_path, buf.getvalue())


# ----------------------------------------------------------------------------- from a run folder
def pick_ours(run_dir: str | Path, base: str = "base") -> str | None:
    """The model shown as "ours": the last trained mode generated (both > unet > text), else any non-base."""
    lay = RunLayout(run_dir)
    gen = lay.generated
    names = sorted(d.name for d in gen.iterdir() if lay.generated_metadata(d.name).is_file()) if gen.is_dir() else []
    for mode in reversed(MODES):
        if mode in names and mode != base:
            return mode
    others = [n for n in names if n != base]
    return others[-1] if others else None


def _read_model(run_dir: Path, model: str) -> pd.DataFrame:
    """metadata.csv of a generated model joined with its predictions (gender/race; NaN when missing)."""
    lay = RunLayout(run_dir)
    meta_path = lay.generated_metadata(model)
    if not meta_path.is_file():
        raise FileNotFoundError(f"{meta_path}: no generated images for model {model!r}")
    meta = unescape_frame(pd.read_csv(meta_path, dtype={"prompt_id": str, "file": str, "occupation": str}))
    for col in ("prompt_id", "occupation", "seed", "file"):
        if col not in meta.columns:
            raise ValueError(f"{meta_path}: missing column {col!r}")
    pred_path = lay.bias_predictions(model)
    if pred_path.is_file():
        pred = unescape_frame(pd.read_csv(pred_path, dtype={"prompt_id": str}))
        keep = [c for c in ("prompt_id", "seed", "status", "gender", "race") if c in pred.columns]
        pred = pred[keep].drop_duplicates(["prompt_id", "seed"])
        meta = meta.merge(pred, on=["prompt_id", "seed"], how="left")
    else:
        log.warning("%s missing: the figure's attribute bars for %s show 'no face'", pred_path, model)
    for col in ("status", "gender", "race"):
        if col not in meta.columns:
            meta[col] = None
    return meta


def _pred(row: pd.Series) -> dict[str, Any] | None:
    if row.get("status") != "ok":
        return None
    return {k: (row[k] if isinstance(row[k], str) else None) for k in ("gender", "race")}


def figure_from_run(run_dir: str | Path, out_path: str | Path, base: str = "base", ours: str = "",
                    occupations: Sequence[str] = (), n_images: int = 4, k_default: int = 4) -> Path:
    """Build the figure from `generated/<model>/metadata.csv` and `bias/<model>/predictions.csv`.

    Shows the first prompt of each occupation (the given ones, else the first `k_default` shared by
    both models) and the first `n_images` seeds that both models generated.
    """
    run_dir = Path(run_dir)
    lay = RunLayout(run_dir)
    ours = ours or pick_ours(run_dir, base) or ""
    if not ours:
        raise FileNotFoundError(f"{lay.generated}: no debiased model to compare with {base!r}")
    b, o = _read_model(run_dir, base), _read_model(run_dir, ours)
    shared = [occ for occ in dict.fromkeys(b["occupation"]) if occ in set(o["occupation"])]
    if occupations:
        missing = [occ for occ in occupations if occ not in shared]
        if missing:
            raise ValueError(f"figure occupations {missing} are not generated by both {base!r} and {ours!r}")
        chosen = list(occupations)
    else:
        chosen = shared[:k_default]
    if not chosen:
        raise ValueError(f"{run_dir}: models {base!r} and {ours!r} share no occupation")

    rows: dict[str, list] = {"bi": [], "oi": [], "bp": [], "op": []}
    seeds_shown: list[int] = []
    for occ in chosen:
        pid = b.loc[b["occupation"] == occ, "prompt_id"].iloc[0]
        bb = b[b["prompt_id"] == pid].set_index("seed")
        oo = o[o["prompt_id"] == pid].set_index("seed")
        seeds = sorted(set(bb.index) & set(oo.index))[:n_images]
        if not seeds:
            raise ValueError(f"prompt {pid!r} ({occ}): no seed generated by both {base!r} and {ours!r}")
        seeds_shown = seeds_shown or [int(s) for s in seeds]
        for key, df, model in (("b", bb, base), ("o", oo, ours)):
            images, preds = [], []
            for s in seeds:
                row = df.loc[s]
                with Image.open(safe_join(lay.generated_model(model), str(row["file"]))) as im:
                    images.append(im.convert("RGB"))
                preds.append(_pred(row))
            rows[key + "i"].append(images)
            rows[key + "p"].append(preds)
    return ours_vs_baseline(rows["bi"], rows["oi"], chosen, rows["bp"], rows["op"], out_path,
                            base_label=base, ours_label=ours, seeds=seeds_shown)
