"""Fault injection, pickles: nothing in a run folder is ever unpickled. The EMA state of a checkpoint is saved in
safetensors, and a resumed run reads every file with torch.load(weights_only=True) or safetensors, so a pickle
planted in a checkpoint cannot run code (issue 23, defect 3)."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch

from t2i_debias.train import engine
from tests.helpers.train_fixtures import make_enriched, small_config, train_args


class _Planted:
    """Unpickling this writes a marker file: what a planted pickle's shell command would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.write_text, (self.marker, "pwned"))


@pytest.mark.slow
def test_ema_resume_loads_nothing_with_weights_only_false(tmp_path, tiny_sd_path, monkeypatch) -> None:
    data = make_enriched(tmp_path / "enriched", n=2)
    base, out = str(tiny_sd_path), tmp_path / "models" / "both"
    opts = {"use_ema": True, "ema_decay": 0.5, "checkpointing_steps": 1}
    engine.train_mode(*train_args(small_config(max_train_steps=1, **opts)), "both", base, data, out)
    ckpt = out / "checkpoints" / "checkpoint-1"
    assert not list(ckpt.glob("custom_checkpoint_*")), sorted(p.name for p in ckpt.iterdir())
    assert (ckpt / "ema.safetensors").is_file()
    # the only pickle-format files are accelerate's RNG states, which it reads with weights_only=True
    assert {p.name for p in tmp_path.rglob("*.pkl")} <= {"random_states_0.pkl"}

    calls: list[tuple[str, object]] = []
    real_load = torch.load

    def recording_load(f, *args, **kwargs):  # record, then load for real
        calls.append((str(f), kwargs.get("weights_only")))
        return real_load(f, *args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    res = engine.train_mode(*train_args(small_config(max_train_steps=2, **opts)), "both", base, data, out)
    assert [r["step"] for r in res.log] == [1, 2]
    assert any("checkpoint-1" in f for f, _ in calls), "it did not resume from checkpoint-1"
    assert all(w is not False for _, w in calls), [c for c in calls if c[1] is False]
    ckpt = out / "checkpoints" / "checkpoint-2"
    assert (ckpt / "ema.safetensors").is_file() and not list(ckpt.glob("custom_checkpoint_*"))

    marker = tmp_path / "pwned.txt"
    with open(ckpt / "custom_checkpoint_0.pkl", "wb") as fh:  # what an attacker would plant
        pickle.dump(_Planted(marker), fh)
    calls.clear()
    res = engine.train_mode(*train_args(small_config(max_train_steps=3, **opts)), "both", base, data, out)
    assert [r["step"] for r in res.log] == [1, 2, 3]
    assert not marker.exists()
    assert all(w is not False for _, w in calls), [c for c in calls if c[1] is False]
