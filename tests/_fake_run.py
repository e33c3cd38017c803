"""A small, schema-correct run folder (DESIGN.md §6) with known numbers, for report and figure tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from t2i_debias.config import Config

OCCUPATIONS = ["firefighter", "chef", "nurse"]
SEEDS = [0, 1, 2]
MODELS = ["base", "both"]

# Numbers with <= 4 significant digits, so they print the same in the report.
ANALYSIS_SUMMARY = {"n_persons": 1234, "n_occupations": 3, "status_counts": {"ok": 987, "no_face": 247},
                    "overall": {"n_ok": 987, "face_rate": 0.7998,
                                "attributes": {"gender": {"metrics": {"tvd": 0.3125}},
                                               "race": {"metrics": {"tvd": 0.4567}}}}}
# Per-occupation stats inside analysis/summary.json; the report shows them from by_occupation.csv instead.
ANALYSIS_BY_OCCUPATION = {o: {"n_ok": 1000 + i * 111, "face_rate": 0.2468} for i, o in enumerate(OCCUPATIONS)}
BIAS_SUMMARY = {
    "base": {"model": "base", "n_images": 9, "face_rate": 0.8889,
             "gender": {"aggregate": {"tvd": 0.4375, "kl": 0.2231, "pairwise": 0.875, "entropy": 0.1234},
                        "ci": {"tvd": [0.3751, 0.4999]}},
             "race": {"aggregate": {"tvd": 0.6543, "kl": 1.021, "pairwise": 0.3086, "entropy": 0.2109},
                      "ci": {"tvd": [0.6012, 0.7013]}},
             "per_prompt": [{"prompt_id": f"p{i}"} for i in range(30)]},
    "both": {"model": "both", "n_images": 9, "face_rate": 0.7778,
             "gender": {"aggregate": {"tvd": 0.0625, "kl": 0.0078, "pairwise": 0.125, "entropy": 0.9887},
                        "ci": {"tvd": [0.0101, 0.1499]}},
             "race": {"aggregate": {"tvd": 0.3321, "kl": 0.4402, "pairwise": 0.1357, "entropy": 0.7531},
                      "ci": {"tvd": [0.2803, 0.3907]}}},
}
QUALITY = {"base": {"fid": 12.34, "kid": 0.0123, "kid_std": 0.0011, "clip_t": 31.42, "clip_i": 1.0, "n_images": 9},
           "both": {"fid": 15.67, "kid": 0.0234, "kid_std": 0.0012, "clip_t": 30.12, "clip_i": 0.8765,
                    "n_images": 9}}
SOTA_MD = """# SOTA comparison (base: tiny:sd)

| method | gender_tvd | race_tvd | clip_t |
|---|---:|---:|---:|
| base | 0.4375 | 0.6543 | **31.42** |
| ours (both) | **0.0625** | **0.3321** | 30.12 |
| debiasvl | 0.2109 | 0.5012 | 29.87 |
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


def make_fake_run(root: Path, name: str = "fake", with_predictions: bool = True) -> Config:
    """Write a fake run folder under root/name and return its Config."""
    cfg = Config()
    cfg.run.root, cfg.run.name = str(root), name
    rd = cfg.run_dir
    rd.mkdir(parents=True)
    cfg.save(rd / "config.toml")

    (rd / "labels").mkdir()
    pd.DataFrame({"person_id": ["1_1", "2_1", "3_1", "4_1"], "status": ["ok", "ok", "no_face", "missing_image"],
                  "gender": ["man", "woman", "", ""]}).to_csv(rd / "labels" / "labels.csv", index=False)

    a = rd / "analysis"
    a.mkdir()
    (a / "summary.json").write_text(json.dumps({**ANALYSIS_SUMMARY, "by_occupation": ANALYSIS_BY_OCCUPATION}))
    pd.DataFrame({"occupation": OCCUPATIONS, "n": [40, 30, 20], "p_woman": [0.05, 0.4, 0.9],
                  "gender_tvd": [0.45, 0.1, 0.4]}).to_csv(a / "by_occupation.csv", index=False)
    (a / "gender_by_occupation.png").write_bytes(_plot_png())

    for mode in ("text", "both"):
        m = rd / "models" / mode
        m.mkdir(parents=True)
        pd.DataFrame({"step": [1, 2, 3], "loss": [1.0, 0.8, 0.7], "lang": [0.5, 0.4, 0.3]}).to_csv(
            m / "training_log.csv", index=False)
    (rd / "models" / "both" / "loss.png").write_bytes(_plot_png())

    pd.DataFrame({"prompt_id": [f"p{i}" for i in range(3)], "occupation": OCCUPATIONS,
                  "template": "Professional photo of a {occupation}",
                  "prompt": [f"Professional photo of a {o}" for o in OCCUPATIONS], "split": "train"}
                 ).to_csv(rd / "prompts.csv", index=False)

    genders, races = ["man", "woman"], ["white", "asian", "black"]
    for mi, model in enumerate(MODELS):
        g = rd / "generated" / model
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
        pd.DataFrame(meta).to_csv(g / "metadata.csv", index=False)
        b = rd / "bias" / model
        b.mkdir(parents=True)
        if with_predictions:
            pd.DataFrame(preds).to_csv(b / "predictions.csv", index=False)
        pd.DataFrame({"prompt_id": [f"p{i}" for i in range(3)], "occupation": OCCUPATIONS,
                      "n_images": 3, "face_rate": [1.0, 1.0, 2 / 3 if model == "both" else 1.0],
                      "gender_tvd": [0.5, 0.5, 0.5] if model == "base" else [0.0, 1 / 6, 0.1667],
                      "race_tvd": [0.8333, 0.8333, 0.8333] if model == "base" else [0.5, 0.3333, 0.5],
                      "gender_tvd_ci_low": 0.0}).to_csv(b / "by_prompt.csv", index=False)
        (b / "summary.json").write_text(json.dumps(BIAS_SUMMARY[model]))
        q = rd / "quality"
        q.mkdir(exist_ok=True)
        (q / f"{model}.json").write_text(json.dumps(QUALITY[model]))

    s = rd / "sota"
    s.mkdir()
    (s / "comparison.md").write_text(SOTA_MD)
    (s / "gender_tvd.png").write_bytes(_plot_png())
    return cfg


def numeric_leaves(obj: object) -> list[float]:
    """Every number in a JSON value, except inside long lists (those are summarised by the report)."""
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in numeric_leaves(v)]
    if isinstance(obj, list):
        return [] if len(obj) > 12 else [x for v in obj for x in numeric_leaves(v)]
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return [obj]
    return []
