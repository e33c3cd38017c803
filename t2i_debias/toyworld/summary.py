"""The demo's closing table: for every model of a toy run, bias against the known truth and what it kept.

Reads `generated/<model>/metadata.csv` (base, the biased-data control, each trained mode, each SOTA
baseline), classifies the images with the toy classifier, and reports per model: male share and
skin-tone shares per occupation, the share of hybrid figures (hair and clothes disagree: status
`ambiguous`, left out of the shares) per occupation, mean gender / skin-tone tvd over the occupations
of the toy MPII copy (and the change against base), the held-out occupations' mean gender tvd apart,
occupation accuracy, toy-FID (FID on toy-classifier features against the toy data), and, for plain pipeline folders, how often each attribute prompt ("a photo of a woman working as a
doctor") gives the asked gender and skin tone: the lowest over the prompts in the table, every prompt
below it. The pipeline stage "toy_summary" (`t2i_debias.stages.toy_summary`) writes it to
<run_dir>/toy/summary.csv, attribute_prompts.csv and summary.md, and prints it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
from PIL import Image

from t2i_debias.core.config import GenerateSection, LabelsSection
from t2i_debias.core.csv_cells import unescape_frame
from t2i_debias.core.layout import GENERATED_METADATA, RunLayout
from t2i_debias.core.options import MODES
from t2i_debias.toyworld.evaluate import ToyScore, score_predictions
from t2i_debias.toyworld.render import OCCUPATIONS, TOY_RACES

log = logging.getLogger(__name__)

ORDER = ("base", "control", *MODES)


def _image_path(model_dir: Path, run_dir: Path, rel: str) -> Path:
    from t2i_debias.core.files import safe_join

    for root in (model_dir, run_dir):
        p = safe_join(root, rel)
        if p.is_file():
            return p
    raise FileNotFoundError(f"{model_dir / 'metadata.csv'}: image {rel!r} not found under {model_dir} or {run_dir}")


def score_generated(model_dir: Path, run_dir: Path, clf: Any, reference: list[Image.Image] | None) -> ToyScore:
    """Score the images a model generated for the evaluation prompts (only the toy occupations)."""
    meta = unescape_frame(pd.read_csv(model_dir / GENERATED_METADATA, dtype=str, keep_default_na=False))
    for col in ("occupation", "file"):
        if col not in meta.columns:
            raise ValueError(f"{model_dir / 'metadata.csv'}: missing column {col!r}")
    meta = meta[meta["occupation"].isin(OCCUPATIONS)]
    if meta.empty:
        raise ValueError(f"{model_dir / 'metadata.csv'}: no image of a toy occupation {OCCUPATIONS}")
    preds, images = {}, []
    for occ, rows in meta.groupby("occupation", sort=False):
        ims = [Image.open(_image_path(model_dir, run_dir, f)).convert("RGB") for f in rows["file"]]
        preds[occ] = clf.predict(ims)
        images += ims
    score = score_predictions(preds)
    if reference:
        from t2i_debias.toyworld.classifier import toy_fid

        score.toy_fid = toy_fid(clf, images, reference)
    return score


def attribute_rows(model: str, clf: Any, n: int, steps: int, guidance: float, seed: int = 0) -> list[dict[str, Any]]:
    """Obedience of every attribute prompt (evaluate.attribute_prompts), `n` images each (pipelines only)."""
    from t2i_debias.models import load_pipeline
    from t2i_debias.toyworld.evaluate import score_attribute_prompts

    return score_attribute_prompts(load_pipeline(model), clf, n, seed + 10_000, steps, guidance, batch_size=64)


def summary_table(run_dir: Path, labels: LabelsSection, images_dir: str | Path, generate: GenerateSection,
                  models: dict[str, str | None], n_attribute: int = 8,
                  attribute_out: list[dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per generated model of the run in `run_dir` (see module docstring), scored with the [labels]
    classifier against the toy data in `images_dir`; per-prompt obedience rows (with their model) are appended
    to `attribute_out` when given, for the pipelines among `models` (name -> spec, models.models_to_evaluate).
    `n_attribute` images per attribute prompt (32 prompts): 8 keeps the demo short and still shows a prompt
    that is never obeyed."""
    from t2i_debias.models import is_pipeline_dir
    from t2i_debias.toyworld.classifier import make_classifier

    lay = RunLayout(run_dir)
    gen = lay.generated
    names = sorted((d.name for d in gen.iterdir() if lay.generated_metadata(d.name).is_file()),
                   key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n)) if gen.is_dir() else []
    if not names:
        raise FileNotFoundError(f"{gen}: no generated/<model>/metadata.csv to summarise")
    clf = make_classifier(labels)
    reference = [Image.open(p).convert("RGB") for p in sorted(Path(images_dir).glob("*.jpg"))[:1024]]
    rows = []
    for name in names:
        s = score_generated(gen / name, run_dir, clf, reference)
        row: dict[str, Any] = {"model": name}
        for occ in OCCUPATIONS:
            if occ in s.male_share:
                row[f"male_{occ}"] = s.male_share[occ]
                for r in TOY_RACES:
                    row[f"{r}_{occ}"] = s.race_share[occ][r]
        for occ in OCCUPATIONS:
            if occ in s.ambiguous_rate:
                row[f"ambiguous_{occ}"] = s.ambiguous_rate[occ]
        # Bias over the occupations fine-tuning sees; the held-out ones (base only) are reported apart.
        row["gender_tvd"] = s.mpii_gender_tvd
        row["race_tvd"] = s.mpii_race_tvd
        row["heldout_gender_tvd"] = s.heldout_gender_tvd
        row["occupation_acc"] = s.occupation_accuracy
        row["toy_fid"] = s.toy_fid
        spec = models.get(name)
        attr = (attribute_rows(spec, clf, n_attribute, generate.num_inference_steps, generate.guidance_scale,
                               generate.base_seed) if spec and n_attribute > 0 and is_pipeline_dir(spec) else [])
        row["attr_gender_min"] = min(r["gender_ok"] for r in attr) if attr else None
        skins = [r["skin_ok"] for r in attr if r["skin_ok"] is not None]
        row["attr_skin_min"] = min(skins) if skins else None
        if attribute_out is not None:
            attribute_out += [{"model": name, **r} for r in attr]
        rows.append(row)
    df = pd.DataFrame(rows)
    if "base" in set(df["model"]):
        b = df.loc[df["model"] == "base"].iloc[0]
        df.insert(df.columns.get_loc("gender_tvd") + 1, "gender_tvd_change",
                  df["gender_tvd"] / b["gender_tvd"] - 1 if b["gender_tvd"] > 0 else None)
    return df


def format_table(df: pd.DataFrame, attribute: pd.DataFrame | None = None) -> str:
    """Markdown: male share and ambiguous rate per occupation, tvd (change vs base), occupation accuracy, FID,
    lowest attribute-prompt obedience; then skin tones, and every attribute prompt when `attribute` is given."""
    cols = ["model"] + [f"male_{o}" for o in OCCUPATIONS if f"male_{o}" in df]
    cols += [f"ambiguous_{o}" for o in OCCUPATIONS if f"ambiguous_{o}" in df]
    cols += [c for c in ("gender_tvd", "gender_tvd_change", "race_tvd", "heldout_gender_tvd", "occupation_acc",
                         "toy_fid",
                         "attr_gender_min", "attr_skin_min") if c in df]
    head = {"gender_tvd_change": "Δ vs base", "occupation_acc": "occ. acc", "heldout_gender_tvd": "held-out gender tvd",
            "attr_gender_min": "attr. prompts: gender ok (min)", "attr_skin_min": "attr. prompts: skin ok (min)"}
    head |= {f"ambiguous_{o}": f"ambiguous {o}" for o in OCCUPATIONS}

    def fmt(v: Any, c: str) -> str:
        if v is None or (isinstance(v, float) and v != v):
            return "n/a"
        if c == "gender_tvd_change":
            return f"{100 * v:+.0f}%"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(head.get(c, c) for c in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r[c], c) for c in cols) + " |" for _, r in df.iterrows()]
    race = ["", "Skin-tone shares (white/asian/black) per occupation:"]
    for _, r in df.iterrows():
        parts = [f"{o} " + "/".join(f"{r[f'{t}_{o}']:.2f}" for t in TOY_RACES) for o in OCCUPATIONS
                 if f"white_{o}" in df]
        race.append(f"- {r['model']}: " + "; ".join(parts))
    return "\n".join(lines + race + _attribute_lines(attribute)) + "\n"


def _attribute_lines(attribute: pd.DataFrame | None) -> list[str]:
    """Every attribute prompt, per model: asked gender shown / asked skin tone shown (share of images)."""
    if attribute is None or attribute.empty:
        return []
    models = list(dict.fromkeys(attribute["model"]))
    out = ["", "Attribute prompts: share of images with the asked gender / the asked skin tone "
           "(an ambiguous figure counts as not the asked gender):", "",
           "| prompt | " + " | ".join(models) + " |", "|" + "---|" * (len(models) + 1)]
    for prompt, rows in attribute.groupby("prompt", sort=False):
        cells = []
        for m in models:
            r = rows[rows["model"] == m]
            if r.empty:
                cells.append("n/a")
                continue
            skin = r["skin_ok"].iloc[0]
            cells.append(f"{r['gender_ok'].iloc[0]:.2f} / " + ("–" if skin is None or skin != skin else f"{skin:.2f}"))
        out.append(f"| {prompt} | " + " | ".join(cells) + " |")
    return out

