"""Dataset analysis: numbers checked by hand on a small labels table."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from t2i_debias.core.config import Config
from t2i_debias.core.stage import Stage
from t2i_debias.metrics import dataset
from t2i_debias.stages import analysis as analysis_stage


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
    by_occ, skips, summary = dataset.analyze_labels(_labels())
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
    by_occ, _, summary = dataset.analyze_labels(df)
    baker = by_occ.set_index("occupation").loc["baker"]
    assert baker.n_ok == 0 and pd.isna(baker.gender_tvd) and pd.isna(baker["p_gender=man"])
    assert summary["by_occupation"]["baker"]["attributes"]["gender"]["metrics"]["tvd"] is None


def test_unknown_label_is_an_error_naming_the_file(tmp_path: Path) -> None:
    df = _labels()
    df.loc[0, "race"] = "martian"
    df.to_csv(tmp_path / "labels.csv", index=False)
    with pytest.raises(ValueError, match=r"labels\.csv.*martian"):
        analysis_stage.analyze_folder(tmp_path / "labels.csv", tmp_path / "out")


def test_run_stage_writes_all_outputs(tmp_path: Path) -> None:
    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "r"
    (cfg.run_dir / "labels").mkdir(parents=True)
    _labels().to_csv(cfg.run_dir / "labels" / "labels.csv", index=False)
    Stage("labels", cfg.run_dir / "labels", {}).finish([cfg.run_dir / "labels" / "labels.csv"])
    analysis_stage.run_stage(cfg)
    out = cfg.run_dir / "analysis"
    for name in ("by_occupation.csv", "skip_reasons.csv", "summary.json", "_manifest.json",
                 "gender_by_occupation.png", "race_by_occupation.png", "age_group_by_occupation.png"):
        assert (out / name).exists(), name
    assert (out / "gender_by_occupation.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["overall"]["n_ok"] == 4
    assert len(pd.read_csv(out / "by_occupation.csv")) == 3


def _long_figures(text: str) -> list[str]:
    """Decimal numbers in `text` with more than 3 significant digits."""
    import re

    return [m for m in re.findall(r"\d+\.\d+", text) if len(m.replace(".", "").lstrip("0")) > 3]


def test_the_log_line_rounds_its_figures(tmp_path: Path, caplog) -> None:
    """The stage printed `overall gender tvd 0.08567774936061379`; a person reads 0.0857."""
    import logging

    rows = [("0_1", "chef", "ok", "man", "white", "young"), ("0_2", "chef", "ok", "man", "white", "young"),
            ("0_3", "chef", "ok", "woman", "asian", "young")]
    df = pd.DataFrame([{"person_id": p, "image": f"{p}.jpg", "occupation": o, "status": s, "gender": g,
                        "race": r, "age_group": a} for p, o, s, g, r, a in rows])
    df.to_csv(tmp_path / "labels.csv", index=False)
    with caplog.at_level(logging.INFO, logger="t2i_debias.stages.analysis"):
        analysis_stage.analyze_folder(tmp_path / "labels.csv", tmp_path / "out")
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("analysis:"))
    assert line.endswith("overall gender tvd 0.167") and not _long_figures(line)


# ----------------------------------------------------------------------------- attributes a backend does not measure
def test_backends_declare_what_they_measure() -> None:
    """The toy world draws no age: its labeller's "young" is a placeholder, not a measurement."""
    from t2i_debias.labels.registry import backend_measures
    from t2i_debias.toyworld import plugin

    plugin.register()  # the toy backend plugs in from above
    assert backend_measures("toy") == ("gender", "race")
    assert backend_measures("deepface") == backend_measures("clip") == ("gender", "race", "age_group")
    with pytest.raises(ValueError, match="known: deepface, clip, toy"):
        backend_measures("nope")


def test_an_attribute_not_measured_has_no_tvd_no_plot_and_says_so(tmp_path: Path) -> None:
    """Every toy person is labelled "young": that was shown as an age-group tvd of 0.75 and a one-colour plot."""
    from t2i_debias.report import sections_run as report
    from t2i_debias.toyworld import plugin

    plugin.register()  # the toy backend plugs in from above
    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.labels.backend = str(tmp_path), "r", "toy"
    (cfg.run_dir / "labels").mkdir(parents=True)
    df = _labels()
    df.loc[df["status"] == "ok", "race"] = ["white", "white", "asian", "black"]
    df.loc[df["status"] == "ok", "age_group"] = "young"
    df.to_csv(cfg.run_dir / "labels" / "labels.csv", index=False)
    Stage("labels", cfg.run_dir / "labels", {}).finish([cfg.run_dir / "labels" / "labels.csv"])
    out = cfg.run_dir / "analysis"
    (out).mkdir()
    (out / "age_group_by_occupation.png").write_bytes(b"stale")  # from a run before the backend said so
    analysis_stage.run_stage(cfg)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["not_measured"] == ["age_group"]
    age = summary["overall"]["attributes"]["age_group"]
    assert age["measured"] is False and age["counts"] is None and set(age["metrics"].values()) == {None}
    assert summary["overall"]["attributes"]["gender"]["metrics"]["tvd"] == pytest.approx(0.25)
    by_occ = pd.read_csv(out / "by_occupation.csv")
    assert by_occ["age_group_tvd"].isna().all() and by_occ["p_age_group=young"].isna().all()
    assert by_occ["gender_tvd"].notna().any()
    assert not (out / "age_group_by_occupation.png").exists() and (out / "gender_by_occupation.png").exists()
    manifest = json.loads((out / "_manifest.json").read_text())
    assert manifest["config"]["measures"] == ["gender", "race"]

    page = report.section_dataset(cfg.run_dir)
    import re

    assert re.search(r'<td class="k">age group</td><td colspan="\d+" class="note">not measured by the labels backend'
                     r"</td></tr>", page)
    per_occ = page.split("Per occupation", 1)[1]
    assert "age_group_tvd" in per_occ and per_occ.count("not measured") == len(by_occ)  # one cell per row
    assert "age_group_by_occupation.png" not in page and "gender_by_occupation.png" in page
