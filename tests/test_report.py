"""report.html: self-contained, shows every section that exists, and renders in headless Chromium."""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from t2i_debias.core.config import Config
from t2i_debias.core.files import MANIFEST
from t2i_debias.core.layout import STAGE_DIRS
from t2i_debias.report import kit
from t2i_debias.report.page import build_report
from t2i_debias.report.sections_run import stage_status
from t2i_debias.stages import report as report_stage
from tests.helpers.fake_run import (
    ANALYSIS_SUMMARY,
    BIAS_SUMMARY,
    QUALITY,
    make_fake_run,
    numeric_leaves,
    write_manifest,
)

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
APT_HINT = "apt-get update && apt-get install -y chromium chromium-driver"


def _text(page: str) -> str:
    """Text of a page: tags dropped, entities decoded, whitespace (incl. nbsp) collapsed."""
    t = re.sub(r"</?(?:b|span|code)\b[^>]*>", "", re.sub(r'src="[^"]*"', "", page))  # inline tags
    t = re.sub(r"<[^>]+>", " ", t)
    return re.sub(r"\s+", " ", html.unescape(t).replace("\xa0", " "))


def _visible(page: str) -> str:
    """Text outside the collapsed <details> blocks (what a reader sees without clicking)."""
    return _text(re.sub(r"<details>.*?</details>", " ", page, flags=re.S))


def _shown(v: float) -> str:
    """How a number with <= 3 significant digits is printed: integers without ".0", never "-0"."""
    return str(int(v)) if float(v).is_integer() else str(v)


def _assert_self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    srcs = re.findall(r'\bsrc="([^"]*)"', page)
    assert srcs and all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in srcs)
    hrefs = re.findall(r'\bhref="([^"]*)"', page)
    assert all(h.startswith("#") for h in hrefs), hrefs
    assert "url(" not in page  # no CSS-loaded assets


NEG_ZERO = re.compile(r"(?<![\w.])-0(?![.\d])")


@pytest.fixture()
def fake_run(tmp_path: Path) -> Config:
    return make_fake_run(tmp_path / "runs")


def test_report_shows_every_section(fake_run: Config) -> None:
    report_stage.run_stage(fake_run)
    page = (fake_run.run_dir / "report.html").read_text()
    _assert_self_contained(page)
    text, vis = _text(page), _visible(page)
    assert "not computed yet" not in text
    for sec in ("Dataset imbalance", "Counterfactual triplets", "Training curves", "Bias before / after",
                "Bias against guidance scale", "Image quality", "State-of-the-art comparison", "Ours vs baseline"):
        assert sec in vis
    # every number of the bias summaries is on the page (per-prompt list aside); the headline ones visibly
    for model, s in BIAS_SUMMARY.items():
        for v in numeric_leaves({k: v for k, v in s.items() if k != "per_prompt"}):
            assert re.search(rf"(?<![\d.]){re.escape(_shown(v))}(?![\d])", text), (model, v)
        assert f"{model} {s['n_prompts']} {s['n_images']} {s['n_faces']} {s['face_rate']}" in vis
        for a in ("gender", "race", "race4", "gender_race"):
            agg, ci = s["attributes"][a]["aggregate"], s["attributes"][a]["ci"]
            assert f"{_shown(agg['tvd'])} [{_shown(ci['tvd'][0])}, {_shown(ci['tvd'][1])}]" in vis, (model, a)
    for v in numeric_leaves(QUALITY):
        assert f" {_shown(v)} " in vis, v
    # counterfactuals: the occupation the data lost is named with why, and the fidelity row is there
    assert "1 occupation(s) the data could not balance or mostly lost: doctor: only 1 of 4 triplets written" in vis
    assert "doctor positive woman white 3 0 0 0 3 9 3" in vis
    # bias overview: both vs base, face rate fell (red); the ambiguous rate beside it; each tvd with its CI,
    # noise floor and excess, and the paired Δ: green with ✓ only where its CI excludes 0 (gender), else plain
    assert ("both 3 9 7 0.778 Δ -0.111 0.111 0.0625 [0.0563, 0.0688] floor 0.05 · excess +0.0125 "
            "Δ -0.376 [-0.426, -0.326] p=0.002 ✓ 0.332 [0.299, 0.365] floor 0.05 · excess +0.282 "
            "Δ -0.322 [-1.32, 0.678] p=0.5 0.25") in vis, vis[:3000]
    assert "base 3 9 8 0.889 0 0.438 [0.394, 0.482] floor 0.05 · excess +0.388 0.654" in vis
    assert '<span class="d worse">Δ -0.111</span>' in page
    assert '<span class="d better">Δ -0.376 [-0.426, -0.326] p=0.002 ✓</span>' in page
    assert '<span class="d ">Δ -0.322 [-1.32, 0.678] p=0.5</span>' in page
    assert ("Generation settings model guidance scale sampler num inference steps resolution images per prompt seeds "
            "base 7.5 PNDMScheduler 50 512x512 3 [0, 2] both 7.5 PNDMScheduler 50 512x512 3 [0, 2] Settings the "
            "bias numbers were measured under: same for every model.") in vis
    # face-found rate and ambiguous rate side by side per occupation
    assert ("occupation base face rate base ambiguous rate both face rate both ambiguous rate firefighter 1 0 1 0 "
            "chef 1 0 1 0 nurse 1 0 0.667 0.333") in vis
    # per occupation (mean over its prompts), base vs both with floor, excess and Δ; last row = mean over
    # occupations (both's floor: (0.25 + 0.25 + 0.125) / 3 = 0.208, excess 0.111 − 0.208)
    assert ("firefighter 0.5 floor 0.25 · excess +0.25 0 floor 0.25 · excess -0.25 Δ -0.5 chef 0.5 floor 0.25 · "
            "excess +0.25 0.167 floor 0.25 · excess -0.0833 Δ -0.333 nurse 0.5 floor 0.25 · excess +0.25 0.167 "
            "floor 0.125 · excess +0.0417 Δ -0.333 mean 0.5 floor 0.25 · excess +0.25 0.111 floor 0.208 · "
            "excess -0.0972 Δ -0.389") in vis
    assert "firefighter 0.833 floor 0.5 · excess +0.333 0.5 floor 0.5 · excess 0 Δ -0.333 chef 0.833" in vis  # race
    # bias against guidance: per model and scale, tvd with CI, floor, excess, paired Δ at the same scale
    assert ("base 1 0.3 [0.27, 0.33] floor 0.08 · excess +0.22 0.5 [0.45, 0.55] floor 0.08 · excess +0.42 0.9 0.05 2 "
            "base 4 0.42") in vis
    assert "both 4 0.25 [0.225, 0.275] floor 0.08 · excess +0.17 Δ -0.17 [-0.22, -0.12] p=0.01 ✓ 0.55" in vis
    assert "sweep/bias_vs_guidance.png" in vis
    # quality: FID up = worse, CLIP-I down = worse
    assert re.search(r"both 15\.7 Δ \+3\.4 0\.0234 Δ \+0\.0111 0\.0012 30\.1 Δ -1\.3 0\.877 Δ -0\.123 9", vis)
    # training: one table row per mode (steps, first and last loss, last components)
    assert "text 3 1 0.7 0.3" in vis and "both 3 1 0.7 0.3" in vis
    # raw JSON kept, collapsed; no flattened key dumps in view
    assert "raw bias/&lt;model&gt;/summary.json" in page and '"per_prompt"' in html.unescape(page)
    assert "attributes.gender" not in text and "overall.attributes" not in text
    # no "-0" anywhere (the race4 entropy of analysis/summary.json is -0.0)
    assert NEG_ZERO.search(text) is None and re.search(r"-0\.0+(?!\d)", page) is None  # -0.012 is fine, -0.0 not
    # the figure was built into the run folder and embedded
    assert (fake_run.run_dir / "report" / "OursVsBaseline.png").is_file()
    assert page.count("data:image/png;base64,") >= 7  # analysis, 2 training, 2 bias charts, sota, figure


def test_run_table_aggregates_subfolder_manifests(fake_run: Config) -> None:
    """Stages written per sub-folder (models/<mode>, generated/<model>, bias/<model>) are not "not run"."""
    rd = fake_run.run_dir
    st = stage_status(rd, "models")
    assert st["status"] == "complete (2/2: text, both)" and st["wall_time_s"] == pytest.approx(6.75)
    assert stage_status(rd, "bias")["status"] == "partial (1/2: base; not finished: both)"
    assert stage_status(rd, "sota") == {"status": "complete (+ quality)", "wall_time_s": pytest.approx(7.25),
                                               "finished": "2026-01-02T03:04:05+0000"}
    assert stage_status(rd, "quality")["status"] == "incomplete (files but no manifest)"
    assert stage_status(rd, "mpii") == {"status": "not run", "wall_time_s": None, "finished": ""}
    write_manifest(rd / "bias" / "both", 4.25, finished_at="2026-01-02T05:00:00+0000")
    (rd / "models" / "text" / MANIFEST).write_text("{not json")
    vis = _visible(build_report(rd))
    assert "models partial (1/2: both; not finished: text); unreadable manifest: text" in vis
    assert "generated complete (2/2: base, both) 2026-01-02T03:04:05+0000 22.5" in vis
    assert "bias complete (2/2: base, both) 2026-01-02T05:00:00+0000 7.25" in vis  # latest finish, summed time
    assert "analysis complete 2026-01-02T03:04:05+0000 1.5" in vis


def test_dataset_summary_at_a_glance(fake_run: Config) -> None:
    page = build_report(fake_run.run_dir)
    vis = _visible(page)
    assert "n_persons 1234, n_occupations 3, n_ok 987, face_rate 0.8; labelling status: ok 987, no_face 247" in vis
    m = ANALYSIS_SUMMARY["overall"]["attributes"]
    # one row per attribute: n, tvd, pairwise, kl, entropy (3 significant digits), then the overall proportions
    assert "gender 8 0.25 0.5 0.131 0.811 man 0.75 · woman 0.25" in vis
    assert "race (4 groups) 8 0.5 0.333 0.649 0 WMELH 0.75 · black 0.125 · indian 0.125 · asian 0 " in vis
    assert "age group 8 0.25 0.292 0.416 0.7 child 0 · young 0.5 · middle-aged 0.375 · senior 0.125" in vis
    assert "gender × race 8 0.458 0.0985 0.963 0.612 man|white 0.375" in vis
    assert vis.index("gender 8") < vis.index("race 8") < vis.index("race (4 groups)") < vis.index("age group 8") \
        < vis.index("gender × race 8")
    assert '<span class="zero">asian&nbsp;0</span>' in page  # empty classes are greyed
    assert m["race"]["metrics"]["kl"] == 0.452 and " 0.452 " in vis
    # no flattened dump; the raw file stays one click away, without "-0"
    assert "overall.attributes" not in _text(page) and "status_counts.ok" not in _text(page)
    assert "<summary>raw analysis/summary.json</summary>" in page and '"by_occupation"' in html.unescape(page)
    assert NEG_ZERO.search(_text(page)) is None
    # per occupation: headline columns only, the rest counted
    assert "occupation n_persons n_ok face_rate p_gender=woman gender_tvd race_tvd" in vis
    assert "firefighter 40 36 0.9 0.0556 0.45 0.6" in vis and "n_gender=woman" not in vis
    assert "2 more columns" in vis


def test_missing_sections_say_not_computed(tmp_path: Path) -> None:
    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "empty"
    report_stage.run_stage(cfg)
    page = (cfg.run_dir / "report.html").read_text()
    text = _text(page)
    assert text.count("not computed yet") == 8  # dataset, counterfactuals, training, bias, sweep, quality, sota, figure
    assert "not computed yet: sweep/sweep.csv (optional stage: set [bias] guidance_sweep" in text
    assert text.count(" not run ") == len(STAGE_DIRS) - 1  # every stage but this page
    assert "<img" not in page


def test_partial_and_corrupt_inputs(fake_run: Config) -> None:
    rd = fake_run.run_dir
    shutil.rmtree(rd / "sota")
    (rd / "quality" / "both.json").write_text("{broken")
    (rd / "analysis" / "summary.json").write_text("[1, 2]")
    page = build_report(rd)
    text = _text(page)
    assert "not computed yet: sota/comparison.csv" in text
    assert "unreadable JSON" in text and "both.json" in text
    assert "analysis/summary.json: expected a JSON object" in text
    assert " 12.3 " in text  # base quality still shown


def test_quality_ignores_manifest_and_notes_shared_settings(fake_run: Config) -> None:
    q = fake_run.run_dir / "quality"
    write_manifest(q, 2.0)
    for m in ("base", "both"):
        d = json.loads((q / f"{m}.json").read_text())
        (q / f"{m}.json").write_text(json.dumps({**d, "clip_model": "tiny:clip", "fid": None, "kid": None}))
    page = build_report(fake_run.run_dir)
    vis = _visible(page)
    assert "_manifest" not in _visible(page[page.index('id="quality"'):page.index('id="sota"')])
    assert "clip_model: tiny:clip" in vis and "FID/KID not computed" in vis
    assert "quality complete" in vis


def test_sota_table_from_comparison_csv(fake_run: Config) -> None:
    page = build_report(fake_run.run_dir)
    sota = page[page.index('id="sota"'):page.index('id="figure"')]
    vis = _visible(sota)
    assert "Base model of every method: tiny:sd" in vis
    assert "method kind gender tvd race tvd gender kl clip t clip i" in vis
    assert "<b>0.0625</b>" in sota and "<b>0.332</b>" in sota and "<b>31.4</b>" in sota
    assert "<b>0.912</b>" in sota and "<b>1</b>" not in sota  # base's CLIP-I (vs itself) is never "best"
    assert "<b>0.2</b>" not in sota and "no bold where all methods tie: gender_kl" in vis
    assert "both ours 0.0625 [0.01, 0.15] floor 0.05 · excess +0.0125 Δ -0.376 [-0.45, -0.3] p=0.002 ✓ 0.332" in vis
    # a paired CI that covers 0 is no "less biased", however far the point estimate fell
    assert "debiasvl baseline 0.211 [0.15, 0.27] floor 0.05 · excess +0.161 Δ -0.227 [-0.5, 0.04] p=0.09 0.501" in vis
    assert ("Generation settings (every row): guidance scale 7.5, sampler PNDMScheduler, 50 steps, resolution "
            "512x512, 3 images per prompt.") in vis
    assert "method kind gender tvd race tvd gender kl clip t clip i base base" in vis  # no settings column: same
    assert "shen2024 baseline n/a" in vis and "shen2024: not applicable: adapters are for SD 1.5" in vis
    assert NEG_ZERO.search(vis) is None


def test_sota_needs_comparison_csv(fake_run: Config) -> None:
    """The table is rendered from comparison.csv only: comparison.md alone is no SOTA section."""
    (fake_run.run_dir / "sota" / "comparison.csv").unlink()
    page = build_report(fake_run.run_dir)
    sota = page[page.index('id="sota"'):page.index('id="figure"')]
    assert "not computed yet: sota/comparison.csv" in sota and "<table" not in sota


def test_stage_skips_then_reruns_when_an_input_changes(fake_run: Config) -> None:
    rd = fake_run.run_dir
    report_stage.run_stage(fake_run)
    m = json.loads((rd / "report" / MANIFEST).read_text())
    assert m["stage"] == "report"
    assert any(i["path"].endswith("bias/base/summary.json") for i in m["inputs"])
    assert any(i["path"].endswith("models/both/_manifest.json") for i in m["inputs"])
    assert not any("/report/" in i["path"] for i in m["inputs"])  # never its own manifest
    assert {Path(o["path"]).name for o in m["outputs"]} == {"report.html", "OursVsBaseline.png"}
    mtime = (rd / "report.html").stat().st_mtime_ns
    report_stage.run_stage(fake_run)
    assert (rd / "report.html").stat().st_mtime_ns == mtime  # skipped
    s = json.loads((rd / "bias" / "both" / "summary.json").read_text())
    s["face_rate"] = 0.543
    (rd / "bias" / "both" / "summary.json").write_text(json.dumps(s))
    report_stage.run_stage(fake_run)
    assert "0.543" in (rd / "report.html").read_text()
    write_manifest(rd / "bias" / "both", 1.0)  # a stage finishing later also refreshes the Run table
    report_stage.run_stage(fake_run)
    assert "bias complete (2/2: base, both)" in _visible((rd / "report.html").read_text())


def test_stale_figure_is_removed(fake_run: Config) -> None:
    rd = fake_run.run_dir
    report_stage.run_stage(fake_run)
    shutil.rmtree(rd / "generated" / "both")
    report_stage.run_stage(fake_run, force=True)
    assert not (rd / "report" / "OursVsBaseline.png").exists()
    assert "not computed yet: OursVsBaseline" in _text((rd / "report.html").read_text())


def test_fmt() -> None:
    assert kit.fmt(0.123456) == "0.123" and kit.fmt(0.0001234) == "0.000123"
    assert kit.fmt(12.34) == "12.3" and kit.fmt(1234.7) == "1235" and kit.fmt(2.0) == "2"
    assert kit.fmt(-0.0) == "0" and kit.fmt(-1e-17) == "0" and kit.fmt(-0.0625) == "-0.0625"
    assert kit.fmt(1.0000000000000002) == "1" and kit.fmt(1e-05) == "1e-05"
    assert kit.fmt(float("nan")) == "—" and kit.fmt(None) == "—"
    assert kit.fmt(3) == "3" and kit.fmt(True) == "true"
    assert kit.fmt([0.5, 1.25]) == "[0.5, 1.25]"
    assert kit.fmt_delta(-0.375) == "-0.375" and kit.fmt_delta(0.125) == "+0.125"
    assert kit.fmt_delta(-0.0) == "0" and kit.fmt_delta(None) == "—"


def test_value_cell_delta_direction() -> None:
    assert 'class="d better">Δ -0.1<' in kit.value_cell(0.2, "gender_tvd", 0.3)
    assert 'class="d worse">Δ +0.1<' in kit.value_cell(0.4, "gender_tvd", 0.3)
    assert 'class="d better">Δ +0.1<' in kit.value_cell(0.9, "entropy", 0.8)
    # a difference invisible at 3 significant digits is 0, uncoloured
    assert 'class="d ">Δ 0<' in kit.value_cell(0.9999997, "clip_i", 1.0)


# ----------------------------------------------------------------------------- headless Chromium
def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=f"chromium is not installed (Debian: {APT_HINT})")
def test_report_renders_in_headless_chromium(fake_run: Config, tmp_path: Path) -> None:
    report_stage.run_stage(fake_run)
    url = (fake_run.run_dir / "report.html").resolve().as_uri()

    dom = _chromium(["--dump-dom", url], tmp_path / "profile1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    text = _text(dom.stdout)
    assert "Bias before / after" in text
    for s in BIAS_SUMMARY.values():
        for v in numeric_leaves({k: v for k, v in s.items() if k != "per_prompt"}):
            assert _shown(v) in text, v

    shot = tmp_path / "shot.png"
    r = _chromium([f"--screenshot={shot}", "--window-size=1200,3000", "--hide-scrollbars", url], tmp_path / "profile2")
    assert r.returncode == 0, r.stderr[-2000:]
    assert [line for line in r.stderr.splitlines() if ":CONSOLE" in line] == []
    with Image.open(shot) as im:
        assert im.format == "PNG" and im.size == (1200, 3000)
        lo, hi = im.convert("L").getextrema()
        assert hi - lo > 100  # something was drawn, not a blank page


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=f"chromium is not installed (Debian: {APT_HINT})")
def test_chromium_console_check_can_fail(tmp_path: Path) -> None:
    """The console check above really sees page errors (so its empty list means something)."""
    page = tmp_path / "bad.html"
    page.write_text("<html><body><p>x</p><script>console.error('boom'); nope();</script></body></html>")
    r = _chromium(["--dump-dom", page.as_uri()], tmp_path / "profile")
    assert any(":CONSOLE" in line and "boom" in line for line in r.stderr.splitlines())


def test_sota_table_flags_rows_with_other_settings(fake_run: Config) -> None:
    """With --allow_mixed the comparison keeps rows made with other settings, in one table, flagged."""
    path = fake_run.run_dir / "sota" / "comparison.csv"
    df = pd.read_csv(path).astype({"settings": object})
    df.loc[df["method"] == "debiasvl", ["guidance_scale", "settings"]] = [4.0, "differs: guidance_scale 4 (vs 7.5)"]
    df.to_csv(path, index=False)
    sota = build_report(fake_run.run_dir)
    sota = sota[sota.index('id="sota"'):sota.index('id="figure"')]
    vis = _visible(sota)
    assert "Generation settings: mixed (allowed with --allow_mixed): guidance scale 7.5" in vis
    assert "clip i settings base base" in vis and "0.877 same debiasvl" in vis
    assert "0.912 ⚠ differs: guidance_scale 4 (vs 7.5) shen2024" in vis
