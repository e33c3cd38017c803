"""A small, schema-correct run folder (DESIGN.md §6) with known numbers, for report and figure tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from t2i_debias.core.config import Config
from t2i_debias.core.layout import RunLayout

OCCUPATIONS = ["firefighter", "chef", "nurse"]
SEEDS = [0, 1, 2]
MODELS = ["base", "both"]

# Numbers with <= 3 significant digits, so they print the same in the report (which shows 3).
# Layouts follow the real files (t2i_debias.stages.analysis, t2i_debias.stages.bias, t2i_debias.stages.sota).
_SHARES = {"gender": {"man": 0.75, "woman": 0.25},
           "race": {"asian": 0.0, "indian": 0.125, "black": 0.125, "white": 0.5, "middle eastern": 0.125,
                    "latino hispanic": 0.125},
           "race4": {"WMELH": 0.75, "black": 0.125, "indian": 0.125, "asian": 0.0},
           "age_group": {"child": 0.0, "young": 0.5, "middle-aged": 0.375, "senior": 0.125},
           "gender_race": {"man|white": 0.375, "woman|white": 0.125, "man|black": 0.125, "woman|indian": 0.125,
                           "man|middle eastern": 0.125, "man|latino hispanic": 0.125}}
_METRICS = {"gender": {"tvd": 0.25, "pairwise": 0.5, "kl": 0.131, "entropy": 0.811},
            "race": {"tvd": 0.333, "pairwise": 0.183, "kl": 0.452, "entropy": 0.748},
            "race4": {"tvd": 0.5, "pairwise": 0.333, "kl": 0.649, "entropy": -0.0},  # -0.0 as numpy writes it
            "age_group": {"tvd": 0.25, "pairwise": 0.292, "kl": 0.416, "entropy": 0.7},
            "gender_race": {"tvd": 0.458, "pairwise": 0.0985, "kl": 0.963, "entropy": 0.612}}
ANALYSIS_SUMMARY = {
    "classes": {a: list(v) for a, v in _SHARES.items()},
    "n_occupations": 3, "n_persons": 1234,
    "overall": {"attributes": {a: {"counts": {k: int(v * 8) for k, v in _SHARES[a].items()},
                                   "metrics": _METRICS[a], "proportions": _SHARES[a]} for a in _SHARES},
                "face_rate": 0.8, "n_ok": 987, "n_persons": 1234},
    "status_counts": {"ok": 987, "no_face": 247}}
# Per-occupation stats inside analysis/summary.json; the report shows them from by_occupation.csv instead.
ANALYSIS_BY_OCCUPATION = {o: {"n_ok": 1000 + i * 111, "face_rate": 0.2468} for i, o in enumerate(OCCUPATIONS)}


def _sig3(x: float) -> float:
    return float(f"{x:.3g}")


FLOOR = {"tvd": 0.05, "pairwise": 0.1, "kl": 0.01, "entropy": 0.95}  # the same noise floor for every attribute
GENERATION = {"guidance_scale": 7.5, "sampler": "PNDMScheduler", "num_inference_steps": 50, "resolution": "512x512",
              "images_per_prompt": 3, "seeds": [0, 2]}
# attributes whose paired difference to the base is significant in the fake run (the others cover 0)
SIGNIFICANT = ("gender",)


def _bias(tvd: dict[str, float], face_rate: float, n_images: int, ambiguous_rate: float = 0.0) -> dict:
    attrs = {}
    for a, t in tvd.items():
        agg = {"tvd": t, "pairwise": _sig3(t * 2), "kl": _sig3(t / 2), "entropy": _sig3(1 - t)}
        attrs[a] = {"aggregate": agg, "ci": {k: [_sig3(v * 0.9), _sig3(v * 1.1)] for k, v in agg.items()},
                    "floor": dict(FLOOR), "excess": {k: _sig3(v - FLOOR[k]) for k, v in agg.items()},
                    "floor_se": {k: 0.0 for k in agg}, "floor_method": "exact",
                    "classes": list(_SHARES[a]), "n_prompts_with_value": 3}
    return {"attributes": attrs, "ci_level": 0.95, "face_rate": face_rate, "ambiguous_rate": ambiguous_rate,
            "n_images": n_images, "n_faces": round(face_rate * n_images), "n_prompts": 3, "seed": 0,
            "statuses": {"ok": 8, "no_face": 1}, "generation": dict(GENERATION), "paired_vs_base": None,
            "per_prompt": [{"prompt_id": f"p{i}", "gender_tvd": 0.123456789} for i in range(30)]}


def _paired(model: dict, base: dict) -> dict:
    """paired_vs_base of `model`: Δ = model − base, CI ±0.05 around it; it excludes 0 only for SIGNIFICANT."""
    out = {}
    for a, blk in model["attributes"].items():
        out[a] = {}
        for m, v in blk["aggregate"].items():
            d = _sig3(v - base["attributes"][a]["aggregate"][m])
            sig = a in SIGNIFICANT
            ci = [_sig3(d - 0.05), _sig3(d + 0.05)] if sig else [_sig3(d - 1), _sig3(d + 1)]
            better = (d > 0) == (m == "entropy")
            out[a][m] = {"diff": d, "ci": ci, "p": 0.002 if sig else 0.5,
                         "verdict": ("less biased" if better else "more biased") if sig else "no significant difference"}
    return {"against": "base", "n_pairs": 9, "n_prompts": 3, "n_only_model": 0, "n_only_base": 0,
            "resample": "prompts_and_seeds", "n_bootstrap": 1000, "ci_level": 0.95, "seed": 0, "attributes": out}


BIAS_SUMMARY = {"base": {"model": "base", **_bias({"gender": 0.438, "race": 0.654, "race4": 0.5, "gender_race": 0.75},
                                                  0.889, 9)},
                "both": {"model": "both", **_bias({"gender": 0.0625, "race": 0.332, "race4": 0.25,
                                                   "gender_race": 0.5}, 0.778, 9, ambiguous_rate=0.111)}}
BIAS_SUMMARY["both"]["paired_vs_base"] = _paired(BIAS_SUMMARY["both"], BIAS_SUMMARY["base"])
# sweep/sweep.csv: gender and race tvd of base and both at guidance 1 and 4 (the layout of t2i_debias.stages.sweep)
SWEEP_ROWS = [
    {"model": m, "guidance_scale": g, "attribute": a, "metric": "tvd", "value": v, "lo": _sig3(v * 0.9),
     "hi": _sig3(v * 1.1), "floor": 0.08, "excess": _sig3(v - 0.08),
     "diff_vs_base": d, "diff_lo": None if d is None else _sig3(d - 0.05), "diff_hi": None if d is None else _sig3(d + 0.05),
     "p": None if d is None else 0.01, "verdict": None if d is None else "less biased",
     "face_rate": 0.9, "ambiguous_rate": 0.05, "images_per_prompt": 2}
    for m, g, a, v, d in [("base", 1.0, "gender", 0.3, None), ("base", 4.0, "gender", 0.42, None),
                          ("both", 1.0, "gender", 0.1, -0.2), ("both", 4.0, "gender", 0.25, -0.17),
                          ("base", 1.0, "race", 0.5, None), ("base", 4.0, "race", 0.6, None),
                          ("both", 1.0, "race", 0.4, -0.1), ("both", 4.0, "race", 0.55, -0.08)]]
QUALITY = {"base": {"fid": 12.3, "kid": 0.0123, "kid_std": 0.0011, "clip_t": 31.4, "clip_i": 1.0, "n_images": 9},
           "both": {"fid": 15.7, "kid": 0.0234, "kid_std": 0.0012, "clip_t": 30.1, "clip_i": 0.877, "n_images": 9}}
# sota/comparison.csv: base, ours, a baseline and one that could not run. gender_kl ties for all methods.
SOTA_ROWS = [
    {"method": "base", "kind": "base", "status": "ok", "gender_tvd": 0.438, "gender_tvd_lo": 0.375,
     "gender_tvd_hi": 0.5, "gender_tvd_floor": 0.05, "gender_tvd_excess": 0.388, "race_tvd": 0.654, "gender_kl": 0.2,
     "clip_t": 31.4, "clip_i": 1.0},
    {"method": "both", "kind": "ours", "status": "ok", "gender_tvd": 0.0625, "gender_tvd_lo": 0.01,
     "gender_tvd_hi": 0.15, "gender_tvd_floor": 0.05, "gender_tvd_excess": 0.0125, "gender_tvd_diff": -0.376,
     "gender_tvd_diff_lo": -0.45, "gender_tvd_diff_hi": -0.3, "gender_tvd_p": 0.002, "gender_tvd_verdict": "less biased",
     "race_tvd": 0.332, "gender_kl": 0.2, "clip_t": 30.1, "clip_i": 0.877},
    {"method": "debiasvl", "kind": "baseline", "status": "ok", "gender_tvd": 0.211, "gender_tvd_lo": 0.15,
     "gender_tvd_hi": 0.27, "gender_tvd_floor": 0.05, "gender_tvd_excess": 0.161, "gender_tvd_diff": -0.227,
     "gender_tvd_diff_lo": -0.5, "gender_tvd_diff_hi": 0.04, "gender_tvd_p": 0.09,
     "gender_tvd_verdict": "no significant difference", "race_tvd": 0.501, "gender_kl": 0.2, "clip_t": 29.9,
     "clip_i": 0.912},
    {"method": "shen2024", "kind": "baseline", "status": "not applicable: adapters are for SD 1.5"},
]
SOTA_SETTINGS = {"guidance_scale": 7.5, "sampler": "PNDMScheduler", "num_inference_steps": 50,
                 "resolution": "512x512", "images_per_prompt": 3}
# wall times of the stage manifests written by make_fake_run (sub-folder ones are summed in the Run table)
MANIFEST_WALL = {"analysis": 1.5, "models/text": 2.25, "models/both": 4.5, "generated/base": 10.0,
                 "generated/both": 12.5, "bias/base": 3.0, "sota": 6.0, "sota/quality": 1.25}
SOTA_MD = """# SOTA comparison

Base model of every method: `tiny:sd`.

| method | gender_tvd | race_tvd | clip_t |
|---|---:|---:|---:|
| base | 0.4375 | 0.6543 | **31.42** |
| ours (both) | **0.0625** | **0.3321** | 30.12 |
| debiasvl | 0.2109 | 0.5012 | 29.87 |
| shen2024 | n/a | n/a | n/a |

Not run:
- **shen2024**: not applicable <SD 1.5>
"""


def _png(color: tuple[int, int, int], size: int = 32) -> Image.Image:
    rng = np.random.default_rng(sum(color))
    a = np.clip(np.array(color)[None, None, :] + rng.integers(-20, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def _plot_png() -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2))
    ax.bar(["man", "woman"], [3, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


ENRICHED_BALANCE = [
    {"occupation": "chef", "planned": 4, "written": 4, "rejected": 0, "skipped": 0, "written_rate": 1.0,
     "anchors_male_planned": 0.5, "anchors_male_written": 0.5, "positives_verified": 4, "pool_n": 8,
     "pool_male_share": 0.5, "balanced": True, "warning": ""},
    {"occupation": "doctor", "planned": 4, "written": 1, "rejected": 3, "skipped": 0, "written_rate": 0.25,
     "anchors_male_planned": 0.75, "anchors_male_written": 0.0, "positives_verified": 1, "pool_n": 2,
     "pool_male_share": 0.5, "balanced": True,
     "warning": "only 1 of 4 triplets written (25% < 90%); unverified: 3 positives asked as woman"},
]
ENRICHED_FIDELITY = [
    {"occupation": "doctor", "member": "positive", "gender": "woman", "race": "white", "requested": 3,
     "verified": 0, "verified_rate": 0.0, "written": 0, "rejected": 3, "tries_total": 9, "tries_mean": 3.0},
]


def make_fake_run(root: Path, name: str = "fake", with_predictions: bool = True) -> Config:
    """Write a fake run folder under root/name and return its Config."""
    cfg = Config()
    cfg.run.root, cfg.run.name = str(root), name
    rd = cfg.run_dir
    lay = RunLayout(rd)
    rd.mkdir(parents=True)
    cfg.save(lay.config_toml)

    lay.labels.mkdir()
    pd.DataFrame({"person_id": ["1_1", "2_1", "3_1", "4_1"], "status": ["ok", "ok", "no_face", "missing_image"],
                  "gender": ["man", "woman", "", ""]}).to_csv(lay.labels_csv, index=False)

    a = lay.analysis
    a.mkdir()
    (a / "summary.json").write_text(json.dumps({**ANALYSIS_SUMMARY, "by_occupation": ANALYSIS_BY_OCCUPATION}))
    pd.DataFrame({"occupation": OCCUPATIONS, "n_persons": [40, 30, 20], "n_ok": [36, 25, 18],
                  "face_rate": [0.9, 0.833, 0.9], "gender_tvd": [0.45, 0.1, 0.4], "gender_kl": [0.5, 0.02, 0.37],
                  "race_tvd": [0.6, 0.5, 0.55], "n_gender=woman": [2, 10, 17],
                  "p_gender=woman": [0.0556, 0.4, 0.944]}).to_csv(a / "by_occupation.csv", index=False)
    (a / "gender_by_occupation.png").write_bytes(_plot_png())

    e = lay.enriched  # the counterfactual section's two files (schema: t2i_debias.augment.schema)
    e.mkdir()
    pd.DataFrame(ENRICHED_BALANCE).to_csv(e / "balance.csv", index=False)
    pd.DataFrame(ENRICHED_FIDELITY).to_csv(e / "fidelity.csv", index=False)

    for mode in ("text", "both"):
        m = lay.model(mode)
        m.mkdir(parents=True)
        pd.DataFrame({"step": [1, 2, 3], "loss": [1.0, 0.8, 0.7], "lang": [0.5, 0.4, 0.3]}).to_csv(
            m / "training_log.csv", index=False)
    (lay.model("both") / "loss.png").write_bytes(_plot_png())

    pd.DataFrame({"prompt_id": [f"p{i}" for i in range(3)], "occupation": OCCUPATIONS,
                  "template": "Professional photo of a {occupation}",
                  "prompt": [f"Professional photo of a {o}" for o in OCCUPATIONS], "split": "train"}
                 ).to_csv(lay.prompts_csv, index=False)

    genders, races = ["man", "woman"], ["white", "asian", "black"]
    for mi, model in enumerate(MODELS):
        g = lay.generated_model(model)
        meta, preds = [], []
        for pi, occ in enumerate(OCCUPATIONS):
            for s in SEEDS:
                rel = f"images/p{pi}/{s}.png"
                (g / rel).parent.mkdir(parents=True, exist_ok=True)
                _png((60 + 60 * pi, 40 + 80 * mi, 30 * s)).save(g / rel)
                meta.append({"model": model, "prompt_id": f"p{pi}", "occupation": occ,
                             "prompt": f"Professional photo of a {occ}", "seed": s, "file": rel})
                ok = not (model == "both" and pi == 0 and s == 2)  # one no-face image
                preds.append({"prompt_id": f"p{pi}", "occupation": occ, "seed": s, "file": rel,
                              "status": "ok" if ok else "no_face",
                              "gender": (genders[0] if model == "base" else genders[s % 2]) if ok else "",
                              "race": (races[0] if model == "base" else races[s % 3]) if ok else ""})
        pd.DataFrame(meta).to_csv(lay.generated_metadata(model), index=False)
        b = lay.bias_model(model)
        b.mkdir(parents=True)
        if with_predictions:
            pd.DataFrame(preds).to_csv(lay.bias_predictions(model), index=False)
        pd.DataFrame({"prompt_id": [f"p{i}" for i in range(3)], "occupation": OCCUPATIONS,
                      "n_images": 3, "face_rate": [1.0, 1.0, 2 / 3 if model == "both" else 1.0],
                      "ambiguous_rate": [0.0, 0.0, 1 / 3 if model == "both" else 0.0],
                      "gender_tvd": [0.5, 0.5, 0.5] if model == "base" else [0.0, 1 / 6, 0.1667],
                      "gender_tvd_floor": [0.25, 0.25, 0.25 if model == "base" else 0.125],
                      "race_tvd": [0.8333, 0.8333, 0.8333] if model == "base" else [0.5, 0.3333, 0.5],
                      "race_tvd_floor": 0.5,
                      "gender_tvd_ci_low": 0.0}).to_csv(b / "by_prompt.csv", index=False)
        lay.bias_summary(model).write_text(json.dumps(BIAS_SUMMARY[model]))
        lay.quality.mkdir(exist_ok=True)
        lay.quality_json(model).write_text(json.dumps(QUALITY[model]))

    lay.sota.mkdir()
    lay.comparison_md.write_text(SOTA_MD)
    pd.DataFrame(SOTA_ROWS).assign(base_model="tiny:sd", **SOTA_SETTINGS, settings="").to_csv(
        lay.comparison_csv, index=False)
    (lay.sota / "gender_tvd.png").write_bytes(_plot_png())
    lay.sweep.mkdir()
    pd.DataFrame(SWEEP_ROWS).to_csv(lay.sweep_csv, index=False)
    lay.sweep_plot.write_bytes(_plot_png())
    for folder, wall in MANIFEST_WALL.items():
        write_manifest(rd / folder, wall)
    return cfg


def write_manifest(folder: Path, wall_time_s: float, finished_at: str = "2026-01-02T03:04:05+0000") -> None:
    """A stage manifest with the fields the report reads (the rest of core.stage.Stage's manifest is not needed)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "_manifest.json").write_text(json.dumps({"stage": folder.name, "wall_time_s": wall_time_s,
                                                       "finished_at": finished_at}))


def numeric_leaves(obj: object) -> list[float]:
    """Every number in a JSON value, except inside long lists (those are summarised by the report)."""
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in numeric_leaves(v)]
    if isinstance(obj, list):
        return [] if len(obj) > 12 else [x for v in obj for x in numeric_leaves(v)]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return [obj]
    return []
