"""The bias stage on a hand-made generated folder with a small deterministic classifier."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from t2i_debias.attributes import RACES
from t2i_debias.config import Config
from t2i_debias.labels.base import DemographicClassifier, Prediction
from t2i_debias.runs import Stage


class ColourClassifier(DemographicClassifier):
    """Dark image: no face. Red channel > 128: man, else woman. Green channel picks one of the six races."""

    name = "colour"

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, images, boxes=None):
        self.calls += len(images)
        out = []
        for im in images:
            r, g, _ = np.asarray(im.convert("RGB"), dtype=float).reshape(-1, 3).mean(0)
            if r + g < 20:
                out.append(Prediction(status="no_face", n_faces=0))
                continue
            out.append(Prediction(gender="man" if r > 128 else "woman", gender_conf=0.9,
                                  race=RACES[int(g) * 6 // 256], race_conf=0.8, age=30.0, age_group="young",
                                  face_box=(0, 0, 8, 8), n_faces=1))
        return out


# (red, green) per image; green 10 -> asian, 100 -> black, 200 -> latino hispanic
COLOURS = {
    "chef": [(200, 10), (200, 10), (200, 100), (50, 10)],  # 3 men 1 woman; races asian x3, black
    "nurse": [(50, 200), (50, 200), (200, 200), (0, 0)],  # 1 no face; 1 man 2 women; all latino hispanic
    "pilot": [(0, 0), (0, 0)],  # no face at all
}


def _make_run(tmp_path) -> Config:
    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.smoke = str(tmp_path), "r", True
    cfg.bias.n_bootstrap = 200
    folder = cfg.run_dir / "generated" / "base"
    rows = []
    for pid, colours in COLOURS.items():
        for seed, (r, g) in enumerate(colours):
            rel = f"images/{pid}/{seed}.png"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (r, g, 0)).save(folder / rel)
            rows.append({"model": "base", "prompt_id": pid, "occupation": pid, "prompt": f"a photo of a {pid}",
                         "seed": seed, "file": rel})
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    Stage("generated:base", folder, {}).finish([folder / "metadata.csv"])  # the generated stage finished
    return cfg


def test_bias_stage_outputs_and_known_values(tmp_path):
    from t2i_debias import evaluate

    cfg = _make_run(tmp_path)
    clf = ColourClassifier()
    evaluate.run_stage(cfg, classifier=clf)
    out = cfg.run_dir / "bias" / "base"
    pred = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert len(pred) == 10  # every image, no-face ones kept
    assert (pred["status"] == "no_face").sum() == 3
    assert set(pred.loc[pred["status"] == "no_face", "gender"]) == {""}

    bp = pd.read_csv(out / "by_prompt.csv").set_index("prompt_id")
    assert bp.loc["nurse", "face_rate"] == pytest.approx(0.75)
    assert bp.loc["pilot", "face_rate"] == 0.0
    assert np.isnan(bp.loc["pilot", "gender_tvd"])  # no face: no value, not 0
    # chef gender p = (3/4, 1/4): tvd = 1/4, kl = 3/4 ln(3/2) + 1/4 ln(1/2)
    assert bp.loc["chef", "gender_tvd"] == pytest.approx(0.25)
    assert bp.loc["chef", "gender_kl"] == pytest.approx(0.75 * np.log(1.5) + 0.25 * np.log(0.5))
    assert (bp.loc["chef", "gender_n_man"], bp.loc["chef", "gender_n_woman"]) == (3, 1)
    # nurse race: all one class of 6 -> tvd = 5/6, entropy 0; race4 WMELH only -> 3/4
    assert bp.loc["nurse", "race_tvd"] == pytest.approx(5 / 6)
    assert bp.loc["nurse", "race_entropy"] == pytest.approx(0.0)
    assert bp.loc["nurse", "race4_tvd"] == pytest.approx(0.75)
    # chef gender x race: man|asian 2, man|black 1, woman|asian 1 of 12 classes
    p = np.array([2, 1, 1] + [0] * 9) / 4
    assert bp.loc["chef", "gender_race_tvd"] == pytest.approx(0.5 * np.abs(p - 1 / 12).sum())

    summary = json.loads((out / "summary.json").read_text())
    g = summary["attributes"]["gender"]
    # nurse gender p = (1/3, 2/3): tvd = 1/6; mean over the two prompts with faces
    assert g["aggregate"]["tvd"] == pytest.approx((0.25 + 1 / 6) / 2)
    assert g["n_prompts_with_value"] == 2
    lo, hi = g["ci"]["tvd"]
    assert 0 <= lo <= hi <= 0.5
    assert set(summary["attributes"]) == {"gender", "race", "race4", "gender_race"}
    assert summary["face_rate"] == pytest.approx(7 / 10)
    assert summary["prompts_without_face"] == ["pilot"]
    assert summary["statuses"] == {"ok": 7, "no_face": 3}
    assert (out / "_manifest.json").is_file()


def test_bias_stage_resumes_from_journal_and_skips(tmp_path):
    from t2i_debias import evaluate

    cfg = _make_run(tmp_path)
    clf = ColourClassifier()
    evaluate.run_stage(cfg, classifier=clf)
    first = clf.calls
    assert first == 10
    evaluate.run_stage(cfg, classifier=clf)  # manifest matches: skipped
    evaluate.run_stage(cfg, force=True, classifier=clf)  # rerun: labels come from the journal
    assert clf.calls == first
    cfg.bias.n_bootstrap = 50  # other settings: rerun, still no new classification
    evaluate.run_stage(cfg, classifier=clf)
    assert clf.calls == first
    assert json.loads((cfg.run_dir / "bias/base/summary.json").read_text())["n_bootstrap"] == 50
