"""The SOTA comparison: table formatting (known answers) and the whole stage on the tiny pipeline."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest

from t2i_debias.report.comparison import (
    MixedSettingsError,
    best_values,
    bias_columns,
    check_settings,
    to_markdown,
)


def _summary(tvd, ci):
    return {"gender": {"aggregate": {"tvd": tvd, "kl": 0.1, "pairwise": 0.2, "entropy": 0.9},
                       "ci": {"tvd": ci, "kl": None}}, "face_rate": 0.75, "n_images": 8}


def test_bias_columns_flattens_summary():
    row = bias_columns(_summary(0.3, [0.1, 0.4]))
    assert row["gender_tvd"] == 0.3 and (row["gender_tvd_lo"], row["gender_tvd_hi"]) == (0.1, 0.4)
    assert row["gender_kl"] == 0.1 and row["gender_kl_lo"] is None
    assert row["race_tvd"] is None and row["face_rate"] == 0.75


def test_markdown_bolds_best_per_column_and_states_base():
    df = pd.DataFrame([
        {"method": "base", "status": "ok", "gender_tvd": 0.4, "gender_tvd_lo": 0.3, "gender_tvd_hi": 0.5, "clip_t": 30.0},
        {"method": "ours", "status": "ok", "gender_tvd": 0.1, "gender_tvd_lo": 0.05, "gender_tvd_hi": 0.2, "clip_t": 28.0},
        {"method": "shen2024", "status": "not applicable: no adapter folder given"},
    ])
    assert best_values(df, ["gender_tvd", "clip_t"]) == {"gender_tvd": 0.1, "clip_t": 30.0}
    md = to_markdown(df, "tiny:sd")
    assert "`tiny:sd`" in md
    lines = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln}
    assert "**0.100** [0.050, 0.200]" in lines["ours"] and "**30.0" in lines["base"]
    assert "**" not in lines["ours"].split("|")[3]  # clip_t of ours is not the best
    assert "n/a" in lines["shen2024"] and "no adapter folder given" in md


def test_toy_table_shows_occupation_accuracy_and_toy_fid_not_clip():
    from t2i_debias.report.comparison import TABLE_COLUMNS, table_columns
    from t2i_debias.report.sections_sota import sota_table
    from t2i_debias.toyworld.quality import TOY_TABLE_COLUMNS

    df = pd.DataFrame([
        {"method": "base", "status": "ok", "gender_tvd": 0.4, "clip_t": 0.0, "clip_i": 1.0,
         "occupation_acc": 1.0, "toy_fid": 3.2},
        {"method": "uce", "status": "ok", "gender_tvd": 0.3, "clip_t": 0.0, "clip_i": 0.9,
         "occupation_acc": 0.5, "toy_fid": 1.5},
    ])
    assert table_columns(df) == TOY_TABLE_COLUMNS and table_columns(df.drop(columns=["occupation_acc", "toy_fid"])
                                                                    ) == TABLE_COLUMNS
    md = to_markdown(df, "toy:base")
    head = next(ln for ln in md.splitlines() if ln.startswith("| method"))
    assert head == "| method | gender_tvd | occupation_acc | toy_fid |"
    rows = {ln.split("|")[1].strip(): ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln}
    assert "**1.000**" in rows["base"] and "**1.500**" in rows["uce"]  # accuracy: higher wins; FID: lower
    assert "`toy:base`" in md and "random weights" in md
    html = sota_table(df)
    assert "occupation acc" in html and "toy fid" in html and "clip t" not in html and "random weights" in html


def test_occupation_accuracy_known_answer():
    from t2i_debias.toyworld.quality import occupation_accuracy

    preds = pd.DataFrame({"status": ["ok", "ok", "ok", "ambiguous", "ok"],
                          "occupation": ["doctor", "doctor", "nurse", "nurse", "chef"],
                          "extra_occupation": ["doctor", "nurse", "nurse", "chef", "chef"]})
    assert occupation_accuracy(preds) == 3 / 4  # the ambiguous image is not counted
    assert occupation_accuracy(preds.drop(columns=["extra_occupation"])) is None
    assert occupation_accuracy(preds[preds["status"] != "ok"]) is None


@pytest.mark.slow
@pytest.mark.e2e
def test_sota_stage_on_tiny_pipeline(tmp_path, tiny_sd_path):
    from t2i_debias.core.config import Config
    from t2i_debias.stages import prompts as prompts_stage
    from t2i_debias.stages import sota

    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.smoke, cfg.run.device = str(tmp_path), "sota", True, "cpu"
    occ = tmp_path / "occupations.txt"
    occ.write_text("nurse\nengineer\n")
    cfg.prompts.occupations = str(occ)
    g = cfg.generate
    g.images_per_prompt, g.num_inference_steps, g.batch_size, g.dtype = 2, 2, 4, "float32"
    cfg.labels.backend = "deepface"
    cfg.bias.n_bootstrap = 50
    cfg.sota.uce_iterations, cfg.sota.uce_samples, cfg.sota.uce_steps = 1, 2, 2
    shutil.copytree(tiny_sd_path, cfg.run_dir / "models" / "text")  # one trained mode ("ours")
    from t2i_debias.core.stage import Stage

    Stage("models/text", cfg.run_dir / "models" / "text", {}).finish()  # its training finished
    prompts_stage.run_stage(cfg)

    sota.run_stage(cfg)
    df = pd.read_csv(cfg.run_dir / "sota" / "comparison.csv")
    want = ["base", "text", "ethical_intervention", "debiasvl", "fair_diffusion", "uce", "shen2024"]
    assert list(df["method"]) == want
    ran = df[df["status"] == "ok"]
    assert list(ran["method"]) == want[:-1]
    assert df.loc[df["method"] == "shen2024", "status"].item().startswith("not applicable")
    assert ran["gender_tvd"].notna().all() or ran["face_rate"].notna().all()
    assert (df["base_model"] == "tiny:sd").all() and (df["base_model_path"] == str(tiny_sd_path)).all()
    assert "Base model of every method: `tiny:sd`" in (cfg.run_dir / "sota" / "comparison.md").read_text()
    for m in want[:-1]:
        meta = pd.read_csv(cfg.run_dir / "generated" / m / "metadata.csv")
        assert len(meta) == 4 and sorted(set(meta["seed"])) == [0, 1]
    md = (cfg.run_dir / "sota" / "comparison.md").read_text()
    assert all(f"| {m} |" in md for m in want) and "**" in md
    assert (cfg.run_dir / "sota" / "bias_tvd.png").is_file() or (cfg.run_dir / "sota" / "quality_clip.png").is_file()
    manifest = json.loads((cfg.run_dir / "sota" / "_manifest.json").read_text())
    assert manifest["extra"]["skipped"].keys() == {"shen2024"}
    # a rerun finds every manifest complete and changes nothing
    before = (cfg.run_dir / "sota" / "_manifest.json").stat().st_mtime_ns
    sota.run_stage(cfg)
    assert (cfg.run_dir / "sota" / "_manifest.json").stat().st_mtime_ns == before
    # --force does not remake the images of base and ours: the generation stage owns them (made once)
    png = {m: next((cfg.run_dir / "generated" / m / "images").rglob("*.png")) for m in ("base", "text")}
    stamp = {m: p.stat().st_mtime_ns for m, p in png.items()}
    sota.generate_all(cfg, force=True)
    assert {m: p.stat().st_mtime_ns for m, p in png.items()} == stamp


def test_no_bold_when_every_method_ties():
    df = pd.DataFrame([
        {"method": "base", "status": "ok", "gender_tvd": 0.5, "race_tvd": 0.4},
        {"method": "ours", "status": "ok", "gender_tvd": 0.5, "race_tvd": 0.2},
    ])
    md = to_markdown(df, "tiny:sd")
    assert "**0.500**" not in md and "**0.200**" in md


def test_rows_name_trained_modes_ours_and_other_model_folders_control(tmp_path, monkeypatch):
    from t2i_debias.core.config import Config
    from t2i_debias.core.stage import Stage
    from t2i_debias.stages.sota import method_names

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # an uncached hub id is refused offline (models.check_hub_model)
    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.run.base_model = str(tmp_path), "r", "some/hub-id"
    cfg.sota.methods = ["base", "ethical_intervention"]
    cfg.train.control = True  # models/control is the current config's (a stale one is not a row)
    for m in ("both", "control"):
        (cfg.run_dir / "models" / m).mkdir(parents=True)
        (cfg.run_dir / "models" / m / "model_index.json").write_text("{}")
        Stage(f"models/{m}", cfg.run_dir / "models" / m, {}).finish()  # training finished
    names, kinds = method_names(cfg)
    assert names == ["base", "both", "control", "ethical_intervention"]
    assert kinds == {"base": "base", "both": "ours", "control": "control", "ethical_intervention": "baseline"}


SETTINGS = {"guidance_scale": 4.0, "sampler": "DDIMScheduler", "num_inference_steps": 20, "resolution": "32x32",
            "images_per_prompt": 64}


def test_bias_columns_carry_floor_paired_and_settings():
    s = _summary(0.3, [0.1, 0.4])
    s["gender"].update(floor={"tvd": 0.05}, excess={"tvd": 0.25})
    s.update(generation={**SETTINGS, "seeds": [0, 63]}, ambiguous_rate=0.125, paired_vs_base={"attributes": {
        "gender": {"tvd": {"diff": -0.1, "ci": [-0.2, -0.05], "p": 0.004, "verdict": "less biased"}}}})
    row = bias_columns(s)
    assert (row["gender_tvd_floor"], row["gender_tvd_excess"]) == (0.05, 0.25)
    assert (row["gender_tvd_diff"], row["gender_tvd_diff_lo"], row["gender_tvd_diff_hi"]) == (-0.1, -0.2, -0.05)
    assert (row["gender_tvd_p"], row["gender_tvd_verdict"]) == (0.004, "less biased")
    assert row["race_tvd_diff"] is None and row["gender_kl_floor"] is None
    assert {k: row[k] for k in SETTINGS} == SETTINGS and row["ambiguous_rate"] == 0.125


def _rows(**ours):
    base = {"method": "base", "status": "ok", "gender_tvd": 0.4, "gender_tvd_lo": 0.35, "gender_tvd_hi": 0.45,
            "gender_tvd_floor": 0.05, "gender_tvd_excess": 0.35, **SETTINGS}
    mine = {"method": "ours", "status": "ok", "gender_tvd": 0.3, "gender_tvd_lo": 0.25, "gender_tvd_hi": 0.35,
            "gender_tvd_floor": 0.05, "gender_tvd_excess": 0.25, "gender_tvd_diff": -0.1, "gender_tvd_diff_lo": -0.15,
            "gender_tvd_diff_hi": -0.05, "gender_tvd_p": 0.002, "gender_tvd_verdict": "less biased", **SETTINGS}
    other = {**mine, "method": "other", "gender_tvd": 0.2, "gender_tvd_lo": 0.15, "gender_tvd_hi": 0.25,
             "gender_tvd_excess": 0.15, "gender_tvd_diff": -0.2,
             "gender_tvd_diff_lo": -0.45, "gender_tvd_diff_hi": 0.05, "gender_tvd_p": 0.12,
             "gender_tvd_verdict": "no significant difference"}
    return pd.DataFrame([base, {**mine, **ours}, other])


def test_markdown_states_settings_floors_and_marks_only_significant_rows():
    md = to_markdown(check_settings(_rows()), "toy:base")
    assert ("Generation settings (every row): guidance scale 4, sampler DDIMScheduler, 20 steps, resolution 32x32, "
            "64 images per prompt.") in md
    lines = [ln for ln in md.splitlines() if ln.startswith("| ")]
    main = {ln.split("|")[1].strip(): ln for ln in lines[:4]}
    assert "0.400 [0.350, 0.450]; floor 0.050, excess +0.350 |" in main["base"]
    assert "0.300 [0.250, 0.350]; floor 0.050, excess +0.250 ✓ |" in main["ours"]
    # "other" fell further, but its paired CI covers 0: no mark
    assert "**0.200** [0.150, 0.250]; floor 0.050, excess +0.150 |" in main["other"]
    assert "## Paired comparison against the base" in md
    assert "| ours | -0.100 [-0.150, -0.050] p=0.002 ✓ |" in md
    assert "| other | -0.200 [-0.450, +0.050] p=0.12 |" in md
    assert "| base | " not in md.split("## Paired comparison")[1]


def test_mixed_settings_refused_unless_allowed_then_flagged():
    df = _rows(guidance_scale=7.5)
    with pytest.raises(MixedSettingsError, match=r"ours: guidance_scale 7.5 \(vs 4\).*--allow_mixed"):
        check_settings(df)
    flagged = check_settings(df, allow_mixed=True)
    assert list(flagged["settings"]) == ["", "differs: guidance_scale 7.5 (vs 4)", ""]
    md = to_markdown(flagged, "toy:base")
    assert "Generation settings: **mixed** (allowed with --allow_mixed): guidance scale 4" in md
    assert "| method | gender_tvd | settings |" in md
    assert md.count("| same |") == 2 and "| ⚠ differs: guidance_scale 7.5 (vs 4) |" in md
    # a setting that was not recorded (images made before it was stored) cannot be checked: flagged, not refused
    unverified = check_settings(_rows(sampler=None, guidance_scale=4.0))
    assert list(unverified["settings"]) == ["", "unverified: sampler not recorded", ""]
    md = to_markdown(unverified, "toy:base")
    assert "some rows could not be checked (settings not recorded)" in md
    assert "| ⚠ unverified: sampler not recorded |" in md
    with pytest.raises(MixedSettingsError, match="guidance_scale 7.5"):  # a recorded difference still refuses
        check_settings(_rows(sampler=None, guidance_scale=7.5))


def _toy_model_dir(root, name, images, occupations):
    d = root / "generated" / name
    rows = []
    for i, (im, occ) in enumerate(zip(images, occupations, strict=True)):
        rel = f"images/{occ}/{i}.png"
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        im.save(d / rel)
        rows.append({"model": name, "prompt_id": occ, "occupation": occ, "prompt": f"a photo of a {occ}",
                     "seed": i, "file": rel})
    pd.DataFrame(rows).to_csv(d / "metadata.csv", index=False)
    return d


@pytest.mark.slow
def test_toy_quality_on_rendered_and_noise_images(tmp_path):
    """Rendered toy people keep their occupation and sit near the toy data; noise does neither."""
    import numpy as np
    from PIL import Image

    from t2i_debias.core.config import Config
    from t2i_debias.labels.runner import classify_generated
    from t2i_debias.toyworld.classifier import make_classifier
    from t2i_debias.toyworld.dataset import biased_population
    from t2i_debias.toyworld.quality import toy_quality

    cfg = Config()
    cfg.run.root, cfg.run.name, cfg.labels.backend = str(tmp_path), "toy", "toy"
    ref = tmp_path / "data" / "images"
    ref.mkdir(parents=True)
    for i, s in enumerate(biased_population(40, seed=1)):
        s.render().image.save(ref / f"{i:09d}.jpg")
    cfg.mpii.images_dir = str(ref)
    people = biased_population(12, seed=2)
    occs = [s.person.occupation for s in people]
    _toy_model_dir(cfg.run_dir, "good", [s.render().image for s in people], occs)
    rng = np.random.default_rng(0)
    _toy_model_dir(cfg.run_dir, "noise", [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8))
                                          for _ in people], occs)
    clf = make_classifier(cfg.labels)
    for name in ("good", "noise"):
        (cfg.run_dir / "bias" / name).mkdir(parents=True)
        classify_generated(cfg.run_dir / "generated" / name, clf).to_csv(
            cfg.run_dir / "bias" / name / "predictions.csv", index=False)
    q = toy_quality(cfg.labels, cfg.mpii.images_dir, cfg.run_dir, ["good", "noise"])
    assert q["good"]["occupation_acc"] >= 0.9
    assert q["good"]["toy_fid"] < 0.5 * q["noise"]["toy_fid"]
    assert q["noise"]["occupation_acc"] is None or q["noise"]["occupation_acc"] < q["good"]["occupation_acc"]


def test_each_baseline_declares_its_settings_and_applicability():
    """The [sota] settings, manifest extras and the not-applicable reason come from the method classes."""
    from t2i_debias.baselines import method_class
    from t2i_debias.baselines.registry import method_params
    from t2i_debias.core.config import Config
    from t2i_debias.stages.sota import method_inputs

    cfg = Config()
    cfg.sota.debiasvl_lambda, cfg.sota.fair_diffusion_edit_guidance, cfg.run.seed = 250.0, 3.0, 7
    inputs = method_inputs(cfg)
    assert method_params("base", inputs) == {} and method_params("ethical_intervention", inputs) == {}
    assert method_params("debiasvl", inputs) == {"lam": 250.0}
    assert method_params("fair_diffusion", inputs) == {"edit_guidance_scale": 3.0, "seed": 7}
    assert method_params("uce", inputs)["iterations"] == cfg.sota.uce_iterations
    assert method_params("shen2024", inputs) == {"weights_dir": cfg.sota.shen2024_dir}
    assert method_params("uce", None) == {}
    assert set(method_class("uce").settings_from(inputs)) == {"labels", "uce"}
    assert method_class("debiasvl").settings_from(inputs) == {}

    def never() -> None:
        raise AssertionError("the base is not loaded when the adapter files are missing")

    assert method_class("shen2024").applicable(inputs, never).startswith("no adapter folder given")
    assert method_class("uce").applicable(inputs, never) is None


def test_column_directions_come_from_the_metric_specs_and_the_registry():
    from t2i_debias.metrics import columns

    assert columns.higher_is_better("gender_entropy") and not columns.higher_is_better("race_tvd")
    assert columns.higher_is_better("clip_t") and not columns.higher_is_better("fid")
    assert columns.self_row("clip_i") == "base" and columns.self_row("clip_t") is None
    df = pd.DataFrame([{"method": "base", "status": "ok", "clip_i": 1.0, "gender_tvd": 0.2},
                       {"method": "uce", "status": "ok", "clip_i": 0.8, "gender_tvd": 0.2}])
    assert best_values(df, ["clip_i", "gender_tvd"]) == {"clip_i": 0.8, "gender_tvd": 0.2}
    assert best_values(df, ["clip_i", "gender_tvd"], shown=lambda v: f"{v:.3f}") == {}  # one contestant / a tie


def test_the_registry_implements_exactly_the_methods_a_config_may_name() -> None:
    """core.options.SOTA_METHODS (checked at load) and baselines.registry.METHODS (the classes) name the same methods."""
    from t2i_debias.baselines.registry import METHODS, method_class
    from t2i_debias.core.options import SOTA_METHODS

    assert tuple(METHODS) == SOTA_METHODS
    assert all(method_class(m) for m in SOTA_METHODS)


def test_best_value_marking_follows_the_declared_direction(monkeypatch):
    """Flip a spec (a bias metric's, a registered column's) and every marking flips with it: the bold of
    comparison.md and of report.html's SOTA table, the Δ colour and the paired verdict."""
    from dataclasses import replace

    from t2i_debias.metrics import bias, columns
    from t2i_debias.metrics.paired import verdict
    from t2i_debias.report.kit import value_cell
    from t2i_debias.report.sections_sota import sota_table

    df = pd.DataFrame([{"method": "base", "status": "ok", "gender_tvd": 0.4, "clip_t": 30.0},
                       {"method": "ours", "status": "ok", "gender_tvd": 0.1, "clip_t": 28.0}])

    def marks() -> tuple[set[str], set[str], str, str]:
        md = to_markdown(df, "tiny:sd")
        bold = {c.strip() for ln in md.splitlines() if ln.startswith(("| base", "| ours"))
                for c in ln.split("|") if "**" in c}
        html = sota_table(df)
        return bold, {b for b in ("0.1", "0.4", "28", "30") if f"<b>{b}</b>" in html}, \
            value_cell(0.2, "gender_tvd", 0.3), verdict("tvd", [-0.2, -0.1])

    bold, html_bold, cell, said = marks()
    assert bold == {"**0.100**", "**30.000**"} and html_bold == {"0.1", "30"}
    assert 'class="d better"' in cell and said == "less biased"
    monkeypatch.setitem(bias.METRICS, "tvd", replace(bias.METRICS["tvd"], higher_is_better=True))
    monkeypatch.setitem(columns.COLUMNS, "clip_t", replace(columns.COLUMNS["clip_t"], higher_is_better=False))
    bold, html_bold, cell, said = marks()
    assert bold == {"**0.400**", "**28.000**"} and html_bold == {"0.4", "28"}
    assert 'class="d worse"' in cell and said == "more biased"


def test_the_direction_notes_agree_with_the_specs():
    """The notes under the tables say "lower is better (entropy, CLIP and face rate: higher)"."""
    from t2i_debias.metrics import bias, columns

    assert [m for m in bias.METRIC_NAMES if columns.higher_is_better(m)] == ["entropy"]
    higher = [c for c in ("face_rate", "fid", "kid", "clip_t", "clip_i") if columns.higher_is_better(c)]
    assert higher == ["face_rate", "clip_t", "clip_i"]
