"""Fault injection, stage inputs: labels, analysis and enriched read only inputs whose producing stage finished
(its _manifest.json), like generation, bias and quality (issue 13, defect 2)."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2i_debias.core.config import Config
from t2i_debias.core.errors import MissingInputError
from t2i_debias.core.files import MANIFEST
from t2i_debias.stages import analysis as analysis_stage
from t2i_debias.stages import enriched
from t2i_debias.stages import labels as labels_stage
from tests.helpers.augment_inputs import skewed_people, write_inputs


@pytest.fixture()
def cfg(tmp_path: Path) -> Config:
    c = Config()
    c.run.root, c.run.name, c.run.smoke = str(tmp_path), "run", True
    _, _, images = write_inputs(c.run_dir, skewed_people(3))
    c.mpii.images_dir = str(images)
    return c


def test_labels_refuses_an_unfinished_mpii_stage(cfg) -> None:
    (cfg.run_dir / "mpii" / MANIFEST).unlink()
    with pytest.raises(MissingInputError, match=r"^mpii is incomplete \(no manifest\): rerun the mpii stage$"):
        labels_stage.run_stage(cfg)
    assert not (cfg.run_dir / "labels" / ".journal.jsonl").exists()


def test_analysis_refuses_an_unfinished_labels_stage(cfg) -> None:
    (cfg.run_dir / "labels" / MANIFEST).unlink()
    with pytest.raises(MissingInputError, match=r"^labels is incomplete \(no manifest\): rerun the labels stage$"):
        analysis_stage.run_stage(cfg)
    assert not (cfg.run_dir / "analysis").exists()


def test_enriched_refuses_an_unfinished_labels_stage(cfg) -> None:
    (cfg.run_dir / "labels" / MANIFEST).unlink()
    with pytest.raises(MissingInputError, match=r"^labels is incomplete \(no manifest\): rerun the labels stage$"):
        enriched.run_stage(cfg)
    assert not (cfg.run_dir / "enriched" / "metadata.jsonl").exists()


def test_finished_inputs_are_accepted(cfg, tmp_path) -> None:
    analysis_stage.run_stage(cfg)
    assert (cfg.run_dir / "analysis" / MANIFEST).is_file()
