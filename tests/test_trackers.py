"""[train] report_to: accelerate's tensorboard tracker writes losses, lr and sample images, offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from t2i_debias.train import engine, trackers
from tests.helpers.train_fixtures import make_enriched, small_config, train_args


def _events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    # the run's own event file; the hparams summary writes others one folder deeper
    files = sorted(folder.rglob("events.out.tfevents.*"), key=lambda f: len(f.parts))
    assert files, f"no tensorboard event file under {folder}"
    acc = EventAccumulator(str(files[0].parent), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


def test_tensorboard_logs_losses_lr_and_images(tmp_path, tiny_sd_path):
    pytest.importorskip("tensorboard")
    data = make_enriched(tmp_path / "enriched", n=2)
    cfg = small_config(tmp_path / "run", report_to="tensorboard", log_images_every=2, max_train_steps=2,
                       log_image_prompts=["a photo of a chef"])
    out = tmp_path / "models" / "unet"
    result = engine.train_mode(*train_args(cfg), "unet", str(tiny_sd_path), data, out)
    acc = _events(out / "logs")
    tags = acc.Tags()
    assert {"loss/loss", "loss/vision", "lr"} <= set(tags["scalars"])
    logged = [(e.step, e.value) for e in acc.Scalars("loss/loss")]
    assert [s for s, _ in logged] == [1, 2]
    # the tracker logs exactly what training_log.csv holds
    for (_, v), row in zip(logged, result.log, strict=True):
        assert v == pytest.approx(row["loss"], rel=1e-6)
    assert acc.Scalars("lr")[0].value == pytest.approx(cfg.train.learning_rate)
    images = acc.Images("samples/0") if "samples/0" in tags["images"] else acc.Images(tags["images"][0])
    assert [im.step for im in images] == [2] and images[0].width == 32


def test_text_mode_logs_scalars_and_no_images(tmp_path, tiny_sd_path):
    pytest.importorskip("tensorboard")
    data = make_enriched(tmp_path / "enriched", n=2)
    cfg = small_config(tmp_path / "run", report_to="tensorboard", log_images_every=1, max_train_steps=1)
    out = tmp_path / "models" / "text"
    engine.train_mode(*train_args(cfg), "text", str(tiny_sd_path), data, out)
    tags = _events(out / "logs").Tags()
    assert "loss/lang" in tags["scalars"] and not tags["images"]


def test_report_to_is_checked_at_load():
    from t2i_debias.core.errors import ConfigError
    from t2i_debias.core.options import validate

    with pytest.raises(ConfigError, match="report_to must be one of none, tensorboard, wandb, got 'mlflow'"):
        validate(small_config(report_to="mlflow"), "c.toml")
    with pytest.raises(ConfigError, match="log_images_every must be >= 0"):
        validate(small_config(log_images_every=-1), "c.toml")
    assert trackers.accelerator_kwargs(small_config().train, Path("x")) == {}
