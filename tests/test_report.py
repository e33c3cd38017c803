"""report.html: self-contained, shows every section that exists, and renders in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from _fake_run import ANALYSIS_SUMMARY, BIAS_SUMMARY, QUALITY, make_fake_run, numeric_leaves
from PIL import Image

from t2i_debias.config import Config
from t2i_debias.report import html as report
from t2i_debias.runs import MANIFEST

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
APT_HINT = "apt-get update && apt-get install -y chromium chromium-driver"


def _text(page: str) -> str:
    """Visible text of a page: tags dropped, entities left as they are (numbers have none)."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", re.sub(r'src="[^"]*"', "", page)))


def _assert_self_contained(page: str) -> None:
    assert "<script" not in page.lower()
    assert "<link" not in page.lower()
    srcs = re.findall(r'\bsrc="([^"]*)"', page)
    assert srcs and all(s.startswith(("data:image/png;base64,", "data:image/jpeg;base64,")) for s in srcs)
    hrefs = re.findall(r'\bhref="([^"]*)"', page)
    assert all(h.startswith("#") for h in hrefs), hrefs
    assert "url(" not in page  # no CSS-loaded assets


@pytest.fixture()
def fake_run(tmp_path: Path) -> Config:
    return make_fake_run(tmp_path / "runs")


def test_report_shows_every_section(fake_run: Config) -> None:
    report.run_stage(fake_run)
    page = (fake_run.run_dir / "report.html").read_text()
    _assert_self_contained(page)
    text = _text(page)
    assert "not computed yet" not in text
    for sec in ("Dataset imbalance", "Training curves", "Bias before / after", "Image quality",
                "State-of-the-art comparison", "Ours vs baseline"):
        assert sec in text
    # key numbers of every summary
    for v in numeric_leaves(ANALYSIS_SUMMARY) + numeric_leaves(BIAS_SUMMARY) + numeric_leaves(QUALITY):
        assert f" {v} " in text or f" {v}" in text.replace("[", " ").replace(",", " "), v
    # per-occupation delta: both - base on gender_tvd for firefighter = 0 - 0.5
    assert re.search(r"firefighter 0\.5 0 -0\.5", text)
    assert 'class="k better">-0.5<' in page or 'class="better">-0.5<' in page
    # SOTA markdown table with the bold best value
    assert "<b>0.0625</b>" in page
    # the per-occupation part of analysis/summary.json is left to the by_occupation.csv table
    assert "by_occupation.firefighter" not in text and "0.2468" not in text
    # the long per_prompt list is summarised, not dumped
    assert "(30 items)" in text
    # the figure was built into the run folder and embedded
    fig = fake_run.run_dir / "report" / "OursVsBaseline.png"
    assert fig.is_file()
    assert page.count("data:image/png;base64,") >= 7  # analysis, 2 training, 3 bias charts, sota, figure


def test_missing_sections_say_not_computed(tmp_path: Path) -> None:
    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "empty"
    report.run_stage(cfg)
    page = (cfg.run_dir / "report.html").read_text()
    text = _text(page)
    assert text.count("not computed yet") == 6  # dataset, training, bias, quality, sota, figure
    assert "<img" not in page


def test_partial_and_corrupt_inputs(fake_run: Config) -> None:
    rd = fake_run.run_dir
    shutil.rmtree(rd / "sota")
    (rd / "quality" / "both.json").write_text("{broken")
    page = report.build_report(rd)
    text = _text(page)
    assert "not computed yet: sota/comparison.md" in text
    assert "unreadable JSON" in text and "both.json" in text
    assert "12.34" in text  # base quality still shown


def test_stage_skips_then_reruns_when_an_input_changes(fake_run: Config) -> None:
    rd = fake_run.run_dir
    report.run_stage(fake_run)
    m = json.loads((rd / "report" / MANIFEST).read_text())
    assert m["stage"] == "report"
    assert any(i["path"].endswith("bias/base/summary.json") for i in m["inputs"])
    assert {Path(o["path"]).name for o in m["outputs"]} == {"report.html", "OursVsBaseline.png"}
    mtime = (rd / "report.html").stat().st_mtime_ns
    report.run_stage(fake_run)
    assert (rd / "report.html").stat().st_mtime_ns == mtime  # skipped
    s = json.loads((rd / "bias" / "both" / "summary.json").read_text())
    s["face_rate"] = 0.5432
    (rd / "bias" / "both" / "summary.json").write_text(json.dumps(s))
    report.run_stage(fake_run)
    assert "0.5432" in (rd / "report.html").read_text()


def test_stale_figure_is_removed(fake_run: Config) -> None:
    rd = fake_run.run_dir
    report.run_stage(fake_run)
    shutil.rmtree(rd / "generated" / "both")
    report.run_stage(fake_run, force=True)
    assert not (rd / "report" / "OursVsBaseline.png").exists()
    assert "not computed yet: OursVsBaseline" in _text((rd / "report.html").read_text())


def test_markdown_table_escapes_and_bolds() -> None:
    out = report.markdown_table("| a | b |\n|---|---|\n| <x> | **1.5** |\ntext **b** & c\n")
    assert "<th" in out and "&lt;x&gt;" in out and "<b>1.5</b>" in out
    assert "<p>text <b>b</b> &amp; c</p>" in out


def test_fmt() -> None:
    assert report.fmt(0.123456) == "0.1235"
    assert report.fmt(float("nan")) == "—" and report.fmt(None) == "—"
    assert report.fmt(3) == "3" and report.fmt(True) == "true"
    assert report.fmt([0.5, 1.25]) == "[0.5, 1.25]"


# ----------------------------------------------------------------------------- headless Chromium
def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason=f"chromium is not installed (Debian: {APT_HINT})")
def test_report_renders_in_headless_chromium(fake_run: Config, tmp_path: Path) -> None:
    report.run_stage(fake_run)
    url = (fake_run.run_dir / "report.html").resolve().as_uri()

    dom = _chromium(["--dump-dom", url], tmp_path / "profile1")
    assert dom.returncode == 0, dom.stderr[-2000:]
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert console == [], console
    text = _text(dom.stdout)
    assert "Bias before / after" in text
    for v in numeric_leaves(BIAS_SUMMARY):
        assert str(v) in text, v

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
