"""The pipeline's own output: one line per stage with its elapsed time, then where report.html is."""

from __future__ import annotations

import io
import re

import pytest

from t2i_debias.core.config import Config
from t2i_debias.pipeline import _clock, run_pipeline


def test_clock_known_answers():
    assert _clock(4.04) == "4.0s" and _clock(59.94) == "59.9s"
    assert _clock(185) == "3m05s" and _clock(3720) == "1h02m"


def test_progress_line_per_stage_and_report_location(tmp_path):
    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "p"
    cfg.prompts.occupations = str(tmp_path / "occ.txt")
    (tmp_path / "occ.txt").write_text("nurse\n")
    out = io.StringIO()
    run_pipeline(cfg, only=["prompts", "report"], out=out)
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"\[1/2\] prompts +\d+\.\ds +\(total \d+\.\ds\)", lines[0]), lines[0]
    assert re.fullmatch(r"\[2/2\] report +\d+\.\ds +\(total \d+\.\ds\)", lines[1]), lines[1]
    report = (cfg.run_dir / "report.html").resolve()
    assert report.is_file() and lines[2].endswith(f"Report: {report}") and len(lines) == 3


def test_until_stops_and_says_there_is_no_report_yet(tmp_path):
    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "p"
    cfg.prompts.occupations = str(tmp_path / "occ.txt")
    (tmp_path / "occ.txt").write_text("nurse\n")
    out = io.StringIO()
    run_pipeline(cfg, only=["prompts", "report"], until="prompts", out=out)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[0].startswith("[1/1] prompts") and "No report yet" in lines[1]
    with pytest.raises(ValueError, match="unknown stage 'nope'"):
        run_pipeline(cfg, only=["nope"])
