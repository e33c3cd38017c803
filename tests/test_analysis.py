"""Dataset analysis: numbers checked by hand on a small labels table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from t2i_debias import analysis
from t2i_debias.config import Config
from t2i_debias.runs import Stage


def _labels() -> pd.DataFrame:
    rows = [  # chef: 3 labelled (man white, man white, woman asian) + 1 no_face; carpenter: 1 + 1 missing
        ("0_1", "chef", "ok", "man", "white", "young"),
        ("0_2", "chef", "ok", "man", "white", "senior"),
        ("1_1", "chef", "ok", "woman", "asian", "young"),
        ("1_2", "chef", "no_face", "", "", ""),
        ("2_1", "carpenter", "ok", "man", "black", "middle-aged"),
        ("3_1", "carpenter", "missing_image", "", "", ""),
    ]
    return pd.DataFrame([{"person_id": p, "image": f"{p}.jpg", "occupation": o, "status": s, "gender": g,
                          "race": r, "age_group": a} for p, o, s, g, r, a in rows])


def test_numbers_by_hand() -> None:
    by_occ, skips, summary = analysis.analyze_labels(_labels())
    assert list(by_occ.occupation) == ["carpenter", "chef", "all"]
    chef = by_occ.set_index("occupation").loc["chef"]
    assert (chef.n_persons, chef.n_ok, chef.face_rate) == (4, 3, 0.75)
    assert chef["n_gender=man"] == 2 and chef["p_gender=man"] == pytest.approx(2 / 3)
    assert chef["p_race=white"] == pytest.approx(2 / 3) and chef["p_race=black"] == 0
    assert chef["p_gender_race=woman|asian"] == pytest.approx(1 / 3)
    assert chef["p_age_group=young"] == pytest.approx(2 / 3)
    # gender p = (2/3, 1/3): tvd = ½(1/6 + 1/6); pairwise = 1/3; kl = Σ p ln(2p); entropy = H(p)/ln 2
    assert chef.gender_tvd == pytest.approx(1 / 6)
    assert chef.gender_pairwise == pytest.approx(1 / 3)
    assert chef.gender_kl == pytest.approx(2 / 3 * math.log(4 / 3) + 1 / 3 * math.log(2 / 3))
    assert chef.gender_entropy == pytest.approx(-(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3)) / math.log(2))
    # race over six classes, p = (white 2/3, asian 1/3, four zeros): tvd = ½(1/2 + 1/6 + 4/6) = 2/3
    assert chef.race_tvd == pytest.approx(2 / 3)
    # Shen-4: white -> WMELH (2/3), asian (1/3), black 0, indian 0: tvd = ½(5/12 + 1/12 + 1/4 + 1/4) = 1/2
    assert chef.race4_tvd == pytest.approx(1 / 2)
    allrow = by_occ.set_index("occupation").loc["all"]
    assert (allrow.n_persons, allrow.n_ok) == (6, 4)
    assert allrow["p_gender=man"] == pytest.approx(3 / 4) and allrow.gender_tvd == pytest.approx(1 / 4)
    assert allrow.gender_pairwise == pytest.approx(1 / 2)
    carp = by_occ.set_index("occupation").loc["carpenter"]
    assert carp.gender_tvd == pytest.approx(1 / 2) and carp.gender_entropy == pytest.approx(0)

    sk = skips.set_index(["occupation", "status"])
    assert sk.loc[("chef", "no_face"), "count"] == 1 and sk.loc[("chef", "no_face"), "share"] == 0.25
    assert sk.loc[("all", "ok"), "count"] == 4 and sk.loc[("carpenter", "missing_image"), "share"] == 0.5
    assert skips["count"][skips.occupation == "all"].sum() == 6  # every person accounted for
    assert summary["status_counts"] == {"missing_image": 1, "no_face": 1, "ok": 4}
    assert summary["by_occupation"]["chef"]["attributes"]["race"]["counts"]["white"] == 2


def test_occupation_without_faces_has_no_metrics_not_zero() -> None:
    df = _labels()
    df.loc[len(df)] = {"person_id": "9_1", "image": "9.jpg", "occupation": "baker", "status": "no_face",
                       "gender": "", "race": "", "age_group": ""}
    by_occ, _, summary = analysis.analyze_labels(df)
    baker = by_occ.set_index("occupation").loc["baker"]
    assert baker.n_ok == 0 and pd.isna(baker.gender_tvd) and pd.isna(baker["p_gender=man"])
    assert summary["by_occupation"]["baker"]["attributes"]["gender"]["metrics"]["tvd"] is None


def test_unknown_label_is_an_error_naming_the_file(tmp_path: Path) -> None:
    df = _labels()
    df.loc[0, "race"] = "martian"
    df.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match=r"labels\.csv.*martian"):
        analysis.analyze_folder(tmp_path / "labels.csv", tmp_path / "out")


def test_run_stage_writes_all_outputs(tmp_path: Path) -> None:
    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "r"
    (cfg.run_dir / "labels").mkdir(parents=True)
    _labels().to_csv(cfg.run_dir / "labels" / "labels.csv", index=False)
    Stage("labels", cfg.run_dir / "labels", {}).finish([cfg.run_dir / "labels" / "labels.csv"])
    analysis.run_stage(cfg)
    out = cfg.run_dir / "analysis"
    for name in ("by_occupation.csv", "skip_reasons.csv", "summary.json", "_manifest.json",
                 "gender_by_occupation.png", "race_by_occupation.png", "age_group_by_occupation.png"):
        assert (out / name).exists(), name
    assert (out / "gender_by_occupation.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n_ok"] == 4
    assert len(pd.read_csv(out / "by_occupation.csv")) == 3
