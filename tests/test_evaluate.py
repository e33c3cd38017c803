"""The bias stage on a hand-made generated folder with a small deterministic classifier."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from t2i_debias.core.config import Config
from t2i_debias.core.stage import Stage
from t2i_debias.core.vocab import RACES, STATUS_AMBIGUOUS
from t2i_debias.labels.base import DemographicClassifier, Prediction


class ColourClassifier(DemographicClassifier):
    """Dark image: no face. Blue > 128: ambiguous. Red channel > 128: man, else woman. Green picks one of six races."""

    name = "colour"

    def __init__(self) -> None:
        self.calls = 0

    def predict(self, images, boxes=None):
        self.calls += len(images)
        out = []
        for im in images:
            r, g, b = np.asarray(im.convert("RGB"), dtype=float).reshape(-1, 3).mean(0)
            if r + g < 20:
                out.append(Prediction(status="no_face", n_faces=0))
                continue
            if b > 128:  # the cues disagree
                out.append(Prediction(status=STATUS_AMBIGUOUS, n_faces=1))
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


def _write_model(cfg: Config, name: str, colours: dict, guidance: float = 4.0) -> None:
    """generated/<name>/ with one 16x16 image per (r, g[, b]) colour, seeds 0.. per prompt."""
    folder = cfg.run_dir / "generated" / name
    rows = []
    for pid, cols in colours.items():
        for seed, rgb in enumerate(cols):
            rel = f"images/{pid}/{seed}.png"
            (folder / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (16, 16), (*rgb, 0)[:3]).save(folder / rel)
            rows.append({"model": name, "prompt_id": pid, "occupation": pid, "prompt": f"a photo of a {pid}",
                         "seed": seed, "file": rel, "num_inference_steps": 20, "guidance_scale": guidance,
                         "sampler": "DDIMScheduler"})
    pd.DataFrame(rows).to_csv(folder / "metadata.csv", index=False)
    Stage(f"generated:{name}", folder, {}).finish([folder / "metadata.csv"])  # the generated stage finished


def _make_run(tmp_path) -> Config:
    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.smoke = str(tmp_path), "r", True
    cfg.bias.n_bootstrap = 200
    _write_model(cfg, "base", COLOURS)
    return cfg


def test_bias_stage_outputs_and_known_values(tmp_path):
    from t2i_debias.stages import bias as bias_stage

    cfg = _make_run(tmp_path)
    clf = ColourClassifier()
    bias_stage.run_stage(cfg, classifier=clf)
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
    from t2i_debias.stages import bias as bias_stage

    cfg = _make_run(tmp_path)
    clf = ColourClassifier()
    bias_stage.run_stage(cfg, classifier=clf)
    first = clf.calls
    assert first == 10
    bias_stage.run_stage(cfg, classifier=clf)  # manifest matches: skipped
    bias_stage.run_stage(cfg, force=True, classifier=clf)  # rerun: labels come from the journal
    assert clf.calls == first
    cfg.bias.n_bootstrap = 50  # other settings: rerun, still no new classification
    bias_stage.run_stage(cfg, classifier=clf)
    assert clf.calls == first
    assert json.loads((cfg.run_dir / "bias/base/summary.json").read_text())["n_bootstrap"] == 50


def test_bias_stage_floor_excess_and_generation_settings(tmp_path):
    from t2i_debias.stages import bias as bias_stage

    cfg = _make_run(tmp_path)
    bias_stage.run_stage(cfg, classifier=ColourClassifier())
    out = cfg.run_dir / "bias" / "base"
    bp = pd.read_csv(out / "by_prompt.csv").set_index("prompt_id")
    # chef: 4 faces -> floor 3/16 (binomial sum by hand); nurse: 3 faces -> (3,0),(0,3) 1/8 each with tvd ½,
    # (2,1),(1,2) 3/8 each with tvd 1/6 -> floor 1/4
    assert bp.loc["chef", "gender_tvd_floor"] == pytest.approx(3 / 16)
    assert bp.loc["chef", "gender_tvd_excess"] == pytest.approx(1 / 4 - 3 / 16)
    assert bp.loc["nurse", "gender_tvd_floor"] == pytest.approx(1 / 4)
    assert np.isnan(bp.loc["pilot", "gender_tvd_floor"]) and np.isnan(bp.loc["pilot", "gender_tvd_excess"])
    assert bp.loc["nurse", "race_tvd_floor"] > 0
    g = json.loads((out / "summary.json").read_text())["attributes"]["gender"]
    assert g["floor"]["tvd"] == pytest.approx((3 / 16 + 1 / 4) / 2)
    assert g["excess"]["tvd"] == pytest.approx((1 / 4 + 1 / 6) / 2 - 7 / 32)
    assert g["floor_method"] == "exact"
    s = json.loads((out / "summary.json").read_text())
    assert s["generation"] == {"guidance_scale": 4.0, "sampler": "DDIMScheduler", "num_inference_steps": 20,
                               "resolution": "16x16", "images_per_prompt": [2, 4], "seeds": [0, 3]}
    assert s["paired_vs_base"] is None  # the base is not paired with itself


def test_ambiguous_is_left_out_of_proportions_and_its_rate_reported(tmp_path):
    from t2i_debias.stages import bias as bias_stage

    cfg = _make_run(tmp_path)
    _write_model(cfg, "base", {"chef": [(200, 10), (200, 10, 255), (50, 10), (50, 10, 255)]})
    bias_stage.run_stage(cfg, classifier=ColourClassifier())
    out = cfg.run_dir / "bias" / "base"
    bp = pd.read_csv(out / "by_prompt.csv").set_index("prompt_id")
    assert (bp.loc["chef", "n_ambiguous"], bp.loc["chef", "ambiguous_rate"]) == (2, 0.5)
    assert bp.loc["chef", "face_rate"] == 0.5 and bp.loc["chef", "gender_tvd"] == 0.0  # 1 man, 1 woman
    assert (bp.loc["chef", "gender_n_man"], bp.loc["chef", "gender_n_woman"]) == (1, 1)
    s = json.loads((out / "summary.json").read_text())
    assert s["ambiguous_rate"] == 0.5 and s["statuses"] == {"ok": 2, "ambiguous": 2}


def test_paired_comparison_against_the_base(tmp_path):
    from t2i_debias.stages import bias as bias_stage

    cfg = _make_run(tmp_path)
    # "both": chef 2 men 2 women (tvd 0, was 1/4); nurse unchanged; pilot still no face; one extra seed
    both = {**COLOURS, "chef": [(200, 10), (50, 10), (200, 10), (50, 10), (50, 10)]}
    _write_model(cfg, "both", both)
    clf = ColourClassifier()
    factory = lambda: clf  # noqa: E731
    bias_stage.evaluate_model(cfg, "both", factory)  # before the base: no pairing yet, said in the summary
    assert json.loads((cfg.run_dir / "bias/both/summary.json").read_text())["paired_vs_base"] is None
    bias_stage.evaluate_model(cfg, "base", factory)
    bias_stage.evaluate_model(cfg, "both", factory)  # the base's predictions are a new input: reruns
    paired = json.loads((cfg.run_dir / "bias/both/summary.json").read_text())["paired_vs_base"]
    assert paired["against"] == "base"
    assert (paired["n_pairs"], paired["n_only_model"], paired["n_only_base"]) == (10, 1, 0)
    tvd = paired["attributes"]["gender"]["tvd"]
    # paired on seeds 0-3: chef (3,1) -> (2,2) drops tvd from 1/4 to 0; nurse stays 1/6: Δ = (0 + 1/6)/2 − (1/4 + 1/6)/2
    assert tvd["diff"] == pytest.approx(-1 / 8)
    lo, hi = tvd["ci"]
    assert lo <= tvd["diff"] <= hi and 0 <= tvd["p"] <= 1
    assert tvd["verdict"] in ("less biased", "no significant difference")
    assert set(paired["attributes"]) == {"gender", "race", "race4", "gender_race"}


def test_the_bias_log_line_rounds_its_figures(tmp_path, caplog):
    """Each figure of the stage's log line has 3 significant digits (summary.json keeps them all)."""
    import logging
    import re

    from t2i_debias.stages import bias as bias_stage

    cfg = _make_run(tmp_path)
    with caplog.at_level(logging.INFO, logger="t2i_debias.stages.bias"):
        bias_stage.run_stage(cfg, classifier=ColourClassifier())
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("[bias] base:"))
    assert "face rate 0.7, gender tvd 0.208 (floor " in line
    assert not [m for m in re.findall(r"\d+\.\d+", line) if len(m.replace(".", "").lstrip("0")) > 3], line


def test_an_attribute_the_backend_does_not_measure_gets_no_metric(tmp_path, caplog):
    """A backend that measures gender only: race and its derivatives are listed as not measured, not scored."""
    import logging

    from t2i_debias.stages import bias as bias_stage

    class GenderOnly(ColourClassifier):
        measures = ("gender",)

    cfg = _make_run(tmp_path)
    with caplog.at_level(logging.INFO, logger="t2i_debias.stages.bias"):
        bias_stage.run_stage(cfg, classifier=GenderOnly())
    summary = json.loads((cfg.run_dir / "bias" / "base" / "summary.json").read_text())
    assert set(summary["attributes"]) == {"gender"}
    assert summary["not_measured"] == ["race", "race4", "gender_race"]
    bp = pd.read_csv(cfg.run_dir / "bias" / "base" / "by_prompt.csv")
    assert "gender_tvd" in bp.columns and not [c for c in bp.columns if c.startswith("race")]
    assert any(r.getMessage().endswith("race tvd not measured") for r in caplog.records)
