"""Fault injection, run folders (issue 23, defects 4, 5, 6, 14, 15, 16): manifests that survive a move and notice a
change, one writer per run, a cut folder exchange finished on rerun, litter removed, one-line user errors."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t2i_debias.core.config import Config, load_config
from t2i_debias.core.errors import ConfigError, MissingInputError, UserError
from t2i_debias.core.files import MANIFEST, STAGING_MARK, Staged, hash_file
from t2i_debias.core.stage import Stage
from t2i_debias.data import prompts
from t2i_debias.labels import runner
from t2i_debias.stages import analysis as analysis_stage
from t2i_debias.stages import labels as labels_stage
from t2i_debias.stages import prompts as prompts_stage
from tests.helpers.augment_inputs import skewed_people, write_inputs
from tests.helpers.train_fixtures import make_enriched, small_config

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH") or str(ROOT)}


@pytest.fixture()
def cfg(tmp_path: Path) -> Config:
    """A run folder `a/run` whose mpii and labels stages finished (12 people)."""
    c = Config()
    c.run.root, c.run.name, c.run.smoke = str(tmp_path / "a"), "run", True
    _, _, images = write_inputs(c.run_dir, skewed_people(12))
    c.mpii.images_dir = str(images)
    return c


def _not_log(stderr: str) -> list[str]:
    """The lines of `stderr` that are not log records (those start with the time)."""
    return [line for line in stderr.strip().splitlines() if not re.match(r"^\d\d:\d\d:\d\d ", line)]


def _finished(cfg: Config, *stages: str) -> dict[str, str]:
    """The finished_at stamp of each stage's manifest (a rerun writes a new manifest)."""
    return {s: json.loads((cfg.run_dir / s / MANIFEST).read_text())["finished_at"] + str(
        (cfg.run_dir / s / MANIFEST).stat().st_mtime_ns) for s in stages}


# ----------------------------------------------------------------------------- defect 4: a moved run is complete
def test_moved_copied_or_relatively_addressed_run_skips_finished_stages(cfg, tmp_path, monkeypatch) -> None:
    analysis_stage.run_stage(cfg)
    prompts_stage.run_stage(cfg)
    before = _finished(cfg, "analysis", "prompts")
    # copied under another name (times kept, as cp -a / copytree do), then moved, then named by a relative root
    shutil.copytree(cfg.run_dir, tmp_path / "b" / "copy", symlinks=True)
    shutil.move(str(tmp_path / "b" / "copy"), str(tmp_path / "c" / "moved"))
    monkeypatch.chdir(tmp_path / "c")
    cfg.run.root, cfg.run.name = ".", "moved"
    analysis_stage.run_stage(cfg)
    prompts_stage.run_stage(cfg)
    assert _finished(cfg, "analysis", "prompts") == before  # nothing recomputed, no manifest rewritten
    manifest = json.loads((cfg.run_dir / "analysis" / MANIFEST).read_text())
    assert manifest["inputs"][0]["path"] == "labels/labels.csv" and manifest["root"] == ".."


# ----------------------------------------------------------------------------- defect 5: outputs are checked
def test_cut_labels_csv_no_longer_counts_as_finished(cfg) -> None:
    labels_csv = cfg.run_dir / "labels" / "labels.csv"
    lines = labels_csv.read_text().splitlines(keepends=True)
    assert len(lines) == 13
    labels_csv.write_text("".join(lines[:6]))  # 5 of 12 rows
    assert not Stage("labels", cfg.run_dir / "labels", {}).is_complete()  # its own rerun redoes it
    with pytest.raises(MissingInputError, match=r"^labels is incomplete \(labels/labels.csv changed since the "
                                                r"stage finished .*\): rerun the labels stage$"):
        analysis_stage.run_stage(cfg)
    assert not (cfg.run_dir / "analysis" / MANIFEST).exists()


def test_same_size_edit_of_an_output_is_noticed_by_its_content(cfg) -> None:
    labels_csv = cfg.run_dir / "labels" / "labels.csv"
    text = labels_csv.read_text()
    labels_csv.write_text(text.replace("man,", "nam,", 1))  # same size, new mtime, other content
    assert not Stage("labels", cfg.run_dir / "labels", {}).is_complete()
    labels_csv.write_text(text)  # the same bytes again, only the mtime differs: still complete
    assert Stage("labels", cfg.run_dir / "labels", {}).is_complete()


def test_replaced_image_is_labelled_again(cfg) -> None:
    from t2i_debias.tiny.clip import tiny_clip_dir

    cfg.labels.backend, cfg.labels.clip_model, cfg.run.device = "clip", str(tiny_clip_dir()), "cpu"
    image = Path(cfg.mpii.images_dir) / "000000000.jpg"
    good = image.read_bytes()
    image.write_bytes(good[: len(good) // 3])  # truncated (a copy cut short)
    labels_stage.run_stage(cfg)
    labels = cfg.run_dir / "labels" / "labels.csv"
    assert labels.read_text().splitlines()[1].split(",")[3] != "ok"
    image.write_bytes(good)  # replaced by the whole file
    labels_stage.run_stage(cfg)
    assert labels.read_text().splitlines()[1].split(",")[3] == "ok"


# ----------------------------------------------------------------------------- defect 6: one writer per run
_HOLDER = """
import sys, time
from t2i_debias.core.locks import hold_run
hold_run(sys.argv[1])
print("HELD", flush=True)
time.sleep(120)
"""


def test_second_writer_fails_fast_naming_the_first(cfg, tmp_path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(cfg.run_dir)], stdout=subprocess.PIPE, text=True,
                              env=ENV, cwd=tmp_path)
    try:
        assert holder.stdout.readline().strip() == "HELD"
        t = time.time()
        proc = subprocess.run([sys.executable, str(ROOT / "dataset_analysis" / "analyze_dataset.py"),
                               "--run_dir", str(cfg.run_dir)], capture_output=True, text=True, env=ENV, cwd=tmp_path,
                              timeout=300)
        assert proc.returncode == 1 and time.time() - t < 120
        (line,) = _not_log(proc.stderr)
        assert f"run folder {cfg.run_dir} is in use by pid {holder.pid} (-c {cfg.run_dir})" in line, line
        assert not (cfg.run_dir / "analysis").exists()  # refused before anything was written
    finally:
        holder.kill()
        holder.wait()


def test_run_folder_reached_through_a_symlink_is_refused(cfg, tmp_path) -> None:
    from t2i_debias.pipeline import run_pipeline

    (tmp_path / "a" / "alias").symlink_to(cfg.run_dir, target_is_directory=True)
    cfg.run.name = "alias"
    with pytest.raises(UserError, match=r"^run folder .*alias is a symlink \(to .*/a/run\); a run is written only"):
        run_pipeline(cfg, only=["analysis"])
    assert not (tmp_path / "a" / "run" / "analysis").exists()


# ----------------------------------------------------------------------------- defect 14: a cut exchange
def _cut_exchange(dest: Path) -> None:
    """The on-disk state a kill leaves between replace_dir's two renames where folders cannot be exchanged:
    the complete staged `.X.new` (as save_into built it: no manifest, the staging mark) and the old version aside."""
    new = dest.parent / f".{dest.name}.new"
    shutil.copytree(dest, new, ignore=shutil.ignore_patterns(MANIFEST))
    (new / STAGING_MARK).touch()
    (dest / MANIFEST).unlink()  # the stage's begin() removed it before the rebuild
    os.rename(dest, dest.parent / f".{dest.name}.old")


def test_cut_exchange_is_finished_not_rebuilt(tmp_path) -> None:
    dest = tmp_path / "run" / "stage"
    dest.mkdir(parents=True)
    (dest / "weights.bin").write_bytes(b"old weights")
    Stage("stage", dest, {}).finish([dest / "weights.bin"])
    _cut_exchange(dest)
    (dest.parent / ".stage.new" / "weights.bin").write_bytes(b"new weights")
    Staged(dest)  # what every staged stage does first
    assert (dest / "weights.bin").read_bytes() == b"new weights" and not (dest / STAGING_MARK).exists()
    assert sorted(p.name for p in dest.parent.iterdir()) == ["stage"]


def test_cut_exchange_of_a_trained_mode_resumes_instead_of_retraining(tmp_path, tiny_sd_path, caplog) -> None:
    from t2i_debias.stages import models as models_stage

    data = make_enriched(tmp_path / "enriched", n=4)
    out = tmp_path / "models" / "both"
    cfg = small_config(checkpointing_steps=1)
    assert models_stage.train_stage(cfg, "both", str(tiny_sd_path), data, out)
    weights = hash_file(out / "unet" / "diffusion_pytorch_model.safetensors")
    _cut_exchange(out)
    caplog.set_level(logging.INFO, logger="t2i_debias")
    models_stage.train_stage(cfg, "both", str(tiny_sd_path), data, out)
    assert "resumed from" in caplog.text and "(step 2)" in caplog.text  # no step trained again
    assert hash_file(out / "unet" / "diffusion_pytorch_model.safetensors") == weights
    assert sorted(p.name for p in out.parent.iterdir()) == ["both"]


# ----------------------------------------------------------------------------- defect 15: litter
def test_next_run_of_a_stage_removes_its_own_litter(cfg, tmp_path) -> None:
    analysis_stage.run_stage(cfg)
    prompts_stage.run_stage(cfg)
    run = cfg.run_dir
    litter = [run / "analysis" / ".summary.json.a1b2c3d4.tmp", run / ".prompts.csv.k_9x8y7z.tmp"]
    for f in litter:
        f.write_text("half")
    (run / ".analysis.old").mkdir()
    (run / ".analysis.old" / "summary.json").write_text("old")
    (run / ".analysis.new").mkdir()
    (run / ".analysis.new" / STAGING_MARK).touch()
    kept = [run / "analysis" / ".notes.tmp", run / "analysis" / "mine.tmp", tmp_path / ".x.a1b2c3d4.tmp",
            run / ".report.html.a1b2c3d4.tmp"]  # not ours, outside the run, or another stage's
    for f in kept:
        f.write_text("keep")
    for script in ("dataset_analysis/analyze_dataset.py", "evaluation/generate_prompts.py"):  # both skip
        proc = subprocess.run([sys.executable, str(ROOT / script), "--run_dir", str(run)], capture_output=True,
                              text=True, env=ENV, cwd=tmp_path, timeout=300)
        assert proc.returncode == 0 and "skipping" in proc.stderr, proc.stderr[-2000:]
    assert not any(f.exists() for f in litter)
    assert not (run / ".analysis.old").exists() and not (run / ".analysis.new").exists()
    assert all(f.read_text() == "keep" for f in kept)


# ----------------------------------------------------------------------------- defect 16: one line, not a traceback
def test_journal_lock_is_a_user_error(tmp_path) -> None:
    with runner.Journal(tmp_path / runner.JOURNAL, "k"):
        with pytest.raises(UserError, match=r"is locked: another labels run is writing to this folder"):
            runner.Journal(tmp_path / runner.JOURNAL, "k").__enter__()


def test_unusable_occupation_name_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"occupation '\?\?' cannot be used"):
        prompts.slug("??")


def test_config_path_that_is_a_folder_is_a_user_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"is a folder, not a TOML file"):
        load_config(tmp_path)


def test_toml_with_a_bom_is_read(tmp_path) -> None:
    p = tmp_path / "c.toml"
    p.write_bytes("\ufeff[run]\nname = \"bom\"\n".encode())
    assert load_config(p).run.name == "bom"


def test_no_triplets_is_a_user_error(tmp_path) -> None:
    from t2i_debias.train.data import read_triplets

    (tmp_path / "metadata.jsonl").write_text("")
    with pytest.raises(UserError, match=r"metadata.jsonl: no triplets to train on"):
        read_triplets(tmp_path)


@pytest.mark.parametrize("manifest", [b"\xff\xfe garbage", b"[1, 2]", b'{"stage": "analysis", "inputs": [{"x": 1}]}'])
def test_malformed_manifest_means_rerun_not_traceback(cfg, manifest) -> None:
    analysis_stage.run_stage(cfg)
    m = json.loads((cfg.run_dir / "analysis" / MANIFEST).read_text())
    if manifest.startswith(b"{"):  # the right stage and config, a malformed input entry
        manifest = json.dumps({**json.loads(manifest), "config_hash": m["config_hash"]}).encode()
    (cfg.run_dir / "analysis" / MANIFEST).write_bytes(manifest)
    analysis_stage.run_stage(cfg)  # reruns
    assert json.loads((cfg.run_dir / "analysis" / MANIFEST).read_text())["stage"] == "analysis"


_SLEEPER = """
import sys, time
from t2i_debias.cli import parse
parse("t", ["run"], [], ["--run_dir", sys.argv[1]])
print("READY", flush=True)
time.sleep(120)
"""


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path) -> None:
    # A test worker may ignore SIGINT, and a child inherits that; a user's shell does not.
    proc = subprocess.Popen([sys.executable, "-c", _SLEEPER, str(tmp_path / "r")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=ENV, cwd=tmp_path,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdout.readline().strip() == "READY"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode in (130, -signal.SIGINT)  # death by SIGINT: a shell shows 130
    assert _not_log(err) == ["interrupted: finished stages and files are intact; rerun the same command "
                                        "to resume"]
