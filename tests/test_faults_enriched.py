"""Fault injection, the enriched stage: a rerun builds beside the finished folder and swaps it in when complete,
and --force reuses the journal like the labels cache (issue 13, "enriched" and the --force item)."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2i_debias.augment import build
from t2i_debias.core.config import Config
from t2i_debias.core.files import MANIFEST
from t2i_debias.stages import enriched
from tests.helpers.augment_inputs import skewed_people, write_inputs


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(f.relative_to(folder)): f.read_bytes() for f in sorted(folder.rglob("*"))
            if f.is_file() and f.name != MANIFEST}


@pytest.fixture()
def finished(tmp_path: Path, tiny_sd_path: Path) -> tuple[Config, Path, dict]:
    cfg = Config()
    cfg.run.root, cfg.run.name = str(tmp_path), "run"
    cfg.augment.generator, cfg.augment.resolution = str(tiny_sd_path), 32
    cfg.augment.num_inference_steps, cfg.augment.batch_size = 2, 1  # one triplet per chunk
    cfg.augment.verify_attributes, cfg.augment.on_unverified = False, "keep"  # no classifier: reliability only
    _, _, images = write_inputs(cfg.run_dir, skewed_people(3))
    cfg.mpii.images_dir = str(images)
    enriched.run_stage(cfg)
    out = cfg.run_dir / "enriched"
    assert (out / MANIFEST).is_file()
    return cfg, out, _snapshot(out)


def _fail_on_call(n: int):
    real = build.generate_images
    calls = [0]

    def wrapped(*a, **k):
        calls[0] += 1
        if calls[0] >= n:
            raise RuntimeError("injected: the generator failed")
        return real(*a, **k)

    return wrapped


def test_a_failed_rerun_leaves_the_finished_folder_intact(finished, monkeypatch) -> None:
    cfg, out, before = finished
    cfg.augment.guidance_scale = 3.0  # every triplet changes
    monkeypatch.setattr(build, "generate_images", _fail_on_call(2))  # the first chunk succeeds, the second fails
    with pytest.raises(RuntimeError, match="injected"):
        enriched.run_stage(cfg)
    assert _snapshot(out) == before  # no image of the old version was overwritten or removed
    monkeypatch.undo()
    enriched.run_stage(cfg)  # resumes the staged build, then swaps it in
    after = _snapshot(out)
    assert (out / MANIFEST).is_file() and after["metadata.jsonl"] == before["metadata.jsonl"]
    assert after["images/positive/0_1.png"] != before["images/positive/0_1.png"]
    assert not (out.parent / ".enriched.new").exists()


def test_force_reuses_the_journal(finished, monkeypatch) -> None:
    cfg, out, before = finished
    monkeypatch.setattr(build, "generate_images", _fail_on_call(1))  # nothing may need generating
    enriched.run_stage(cfg, force=True)
    assert _snapshot(out) == before and (out / MANIFEST).is_file()
