"""The shipped toy models: they match the code's specs, fit the budget, load offline, and the loader
prefers them, names a stale one and falls back to training."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from t2i_debias.core.config import load_config
from t2i_debias.tiny.cache import spec_key
from t2i_debias.toyworld import base_model, pretrained
from t2i_debias.toyworld.classifier import classifier_spec

ROOT = Path(__file__).resolve().parents[1]
TOY_CONFIG = ROOT / "configs" / "toy.toml"
BUDGET_BYTES = 40 * 1000 * 1000


def _code_specs() -> dict[str, dict]:
    """What the code asks for today, by shipped name (seed 0's base as configs/toy.toml asks for it)."""
    cfg = load_config(TOY_CONFIG)
    specs = {"vae": base_model.vae_spec(), "classifier": classifier_spec()}
    for seed in pretrained.SHIPPED_SEEDS:
        cfg.toy.seed = seed
        specs[f"base-seed{seed}"] = base_model.spec_from_toy(cfg.toy)
    return specs


@pytest.mark.parametrize("name", ["vae", "classifier", *(f"base-seed{s}" for s in pretrained.SHIPPED_SEEDS)])
def test_shipped_spec_hash_equals_the_codes_spec(name: str) -> None:
    record = pretrained.shipped_record(name)
    assert record is not None, f"{name} is not shipped under {pretrained.PRETRAINED_DIR}: run `make toy-models`"
    spec = _code_specs()[name]
    assert record["spec_hash"] == spec_key(spec), (
        f"shipped {name} was built for another spec: run `make toy-models` (weights must not drift from the recipe)")
    assert record["spec"] == json.loads(json.dumps(spec))
    build = record["build"]
    assert build["wall_seconds"] > 0 and build["cpu_seconds"] > 0 and build["threads"] >= 1
    assert len(record["commit"]) in (40, len("unknown"))


def test_shipped_bases_record_the_gates_measured_on_what_ships() -> None:
    """Each shipped base carries the gate results of `make toy-models`, the same as docs/results/toy_base.json.
    Whether they pass is tests/test_toyworld_models.py::test_shipped_toy_base_passes_the_base_gates."""
    results = json.loads((ROOT / "docs" / "results" / "toy_base.json").read_text())
    for seed in pretrained.SHIPPED_SEEDS:
        gates = pretrained.shipped_record(f"base-seed{seed}")["gates"]
        assert gates["eval"]["n_per_occupation"] == 64 and gates["eval"]["n_per_attribute_prompt"] == 64
        assert gates["failed"] == results["seeds"][str(seed)]["failed_gates"]
        assert gates["mean_gender_tvd"] == results["seeds"][str(seed)]["score"]["mean_gender_tvd"]


def test_shipped_models_fit_the_budget() -> None:
    assert 0 < pretrained.shipped_size_bytes() <= BUDGET_BYTES


def test_shipped_base_stores_fp16_and_leaves_out_the_rebuilt_parts() -> None:
    folder = pretrained.PRETRAINED_DIR / "base-seed0"
    for part in pretrained.NOT_SHIPPED:
        assert not (folder / part).exists()
    state = load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))
    assert {v.dtype for v in state.values()} == {torch.float16}


def test_copy_upcasts_fp16_to_fp32_exactly(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "unet").mkdir(parents=True)
    w = torch.tensor([0.5, -1.25, 3.0], dtype=torch.float16)
    save_file({"w": w, "steps": torch.tensor([7])}, str(src / "unet" / "m.safetensors"))
    pretrained.copy_shipped(src, tmp_path / "dst")
    got = load_file(str(tmp_path / "dst" / "unet" / "m.safetensors"))
    assert got["w"].dtype == torch.float32 and got["w"].tolist() == [0.5, -1.25, 3.0]
    assert got["steps"].dtype == torch.int64


def _fake_shipped(root: Path, name: str, spec: dict) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "weights.txt").write_text("shipped")
    (root / name / pretrained.SHIPPED_JSON).write_text(json.dumps({"spec_hash": spec_key(spec)}))


def test_loader_copies_a_matching_shipped_model_without_building(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("T2I_DEBIAS_CACHE", str(tmp_path / "cache"))
    spec = {"kind": "demo", "n": 1}
    _fake_shipped(tmp_path / "shipped", "m", spec)
    built = []
    out = pretrained.cached_or_shipped("toy-x", "m", spec, built.append, root=tmp_path / "shipped")
    assert built == [] and (out / "weights.txt").read_text() == "shipped"


def test_loader_names_a_stale_shipped_model_and_builds(tmp_path: Path, monkeypatch, caplog) -> None:
    monkeypatch.setenv("T2I_DEBIAS_CACHE", str(tmp_path / "cache"))
    _fake_shipped(tmp_path / "shipped", "base-seed0", {"kind": "demo", "n": 1})
    spec = {"kind": "demo", "n": 2}  # the code's recipe changed

    def build(d: Path) -> None:
        (d / "weights.txt").write_text("built")

    with caplog.at_level(logging.WARNING):
        out = pretrained.cached_or_shipped("toy-x", "base-seed0", spec, build, root=tmp_path / "shipped")
    assert (out / "weights.txt").read_text() == "built"
    assert "'base-seed0' is stale" in caplog.text and "make toy-models" in caplog.text


def test_demo_loads_the_shipped_seed0_base_offline(tmp_path: Path, monkeypatch) -> None:
    """The demo's own route (`toy:base` through models.resolve_model) copies the shipped base: no training."""
    from diffusers import StableDiffusionPipeline

    from t2i_debias.models import resolve_model
    from t2i_debias.toyworld import plugin

    plugin.register()  # `toy:` resolves through the toy world's plug-in
    monkeypatch.setenv("T2I_DEBIAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(base_model, "build_base", lambda *a, **k: pytest.fail("the shipped base was not used"))
    monkeypatch.setattr(base_model, "build_vae", lambda *a, **k: pytest.fail("the shipped VAE was not used"))
    cfg = load_config(TOY_CONFIG)
    folder = Path(resolve_model("toy:base", cfg))
    pipe = StableDiffusionPipeline.from_pretrained(folder)
    assert pipe.unet.dtype == torch.float32 and pipe.tokenizer.model_max_length == 24
    image = pipe("a photo of a pilot", num_inference_steps=2, height=32, width=32, output_type="np").images[0]
    assert image.shape == (32, 32, 3)


def test_a_changed_drawing_changes_every_toy_models_spec(monkeypatch) -> None:
    """The pictures are part of each model's spec: a new skin tone never reuses a model trained on the old one."""
    from t2i_debias.toyworld import render

    before = {k: spec_key(v) for k, v in _code_specs().items()}
    monkeypatch.setitem(render.SKIN_TONES, "asian", (1, 2, 3))
    after = {k: spec_key(v) for k, v in _code_specs().items()}
    assert all(before[k] != after[k] for k in before)


def test_ship_writes_fp16_parts_leaves_out_rebuilt_parts_and_records_the_spec(tmp_path: Path) -> None:
    src = tmp_path / "built"
    for part in ("unet", "text_encoder", "vae", "tokenizer"):
        (src / part).mkdir(parents=True)
        save_file({"w": torch.ones(2, dtype=torch.float32)}, str(src / part / "model.safetensors"))
    (src / "model_index.json").write_text("{}")
    (src / "build.json").write_text(json.dumps({"wall_seconds": 1.5, "cpu_seconds": 2.5, "threads": 2}))
    spec = {"seed": 9}
    out = pretrained.ship(src, "base-seed9", spec, {"commit": "abc"}, root=tmp_path / "shipped")
    assert sorted(p.name for p in out.iterdir()) == ["build.json", "model_index.json", "shipped.json", "text_encoder",
                                                      "unet"]
    assert load_file(str(out / "unet" / "model.safetensors"))["w"].dtype == torch.float16
    rec = pretrained.shipped_record("base-seed9", tmp_path / "shipped")
    assert rec["spec_hash"] == spec_key(spec) and rec["build"]["cpu_seconds"] == 2.5
    assert rec["commit"] == "abc" and not (tmp_path / "shipped" / ".base-seed9.new").exists()


def test_build_record_writes_wall_and_cpu_seconds(tmp_path):
    from t2i_debias.toyworld.pretrained import build_record, read_build_record

    assert read_build_record(tmp_path) is None
    with build_record(tmp_path, "toy thing") as rec:
        sum(i * i for i in range(200_000))
    got = read_build_record(tmp_path)
    assert got == rec and got["what"] == "toy thing" and got["threads"] == 1
    assert got["wall_seconds"] >= 0 and got["cpu_seconds"] >= 0
