"""UCE (only cross-attention k/v change), Fair Diffusion (seeded per-image SEGA edits) and Shen et al.'s
LoRA loader (old diffusers naming), on the tiny pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2i_debias.baselines import GenParams, NotApplicable, make_method
from t2i_debias.baselines.fair_diffusion import choose_target, edit_for
from t2i_debias.sampling import generate_images

GEN = GenParams(batch_size=4, num_inference_steps=2, guidance_scale=7.5, height=32, width=32)


def _load(path):
    from t2i_debias.models import load_pipeline

    return load_pipeline(path)


def _arr(images):
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


def _params(pipe):
    return {f"{part}.{k}": v.detach().clone() for part in ("unet", "text_encoder", "vae")
            for k, v in getattr(pipe, part).state_dict().items()}


@pytest.fixture(scope="module")
def base(tiny_sd_path):
    return _load(tiny_sd_path)


# ----------------------------------------------------------------------------- UCE
def test_uce_changes_only_cross_attention_kv(tiny_sd_path, base):
    pipe = _load(tiny_sd_path)
    calls = []

    def ratio_fn(p, occupation, groups):  # a fixed, biased measurement: 80% man, all white
        calls.append((occupation, tuple(groups)))
        return {"gender": np.array([0.8, 0.2]), "race": np.eye(6)[3]}

    m = make_method("uce", pipe, iterations=1, ratio_fn=ratio_fn)
    m.prepare(["doctor", "nurse"])
    assert calls == [("doctor", ("gender", "race")), ("nurse", ("gender", "race"))]  # one measurement each
    before, after = _params(base), _params(pipe)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    kv = {k for k in before if k.startswith("unet.") and (".attn2.to_k." in k or ".attn2.to_v." in k)}
    assert kv and changed == {k for k in kv if k.endswith(".weight")}


def test_uce_balanced_model_is_not_edited(tiny_sd_path, base):
    pipe = _load(tiny_sd_path)
    m = make_method("uce", pipe, iterations=3,
                    ratio_fn=lambda p, o, gs: {g: np.full(len(labels), 1 / len(labels)) for g, labels in gs.items()})
    m.prepare(["doctor"])
    assert all(torch.equal(a, b) for a, b in zip(_params(base).values(), _params(pipe).values(), strict=True))
    assert len(m.history) == 1


def test_uce_balances_over_the_classifier_races(tiny_sd_path):
    """With the toy world's three skin tones, 1/3 each is balanced; over DeepFace's six it never could be."""
    seen = []

    def ratio_fn(p, o, groups):
        seen.append(groups["race"])
        return {"gender": np.array([0.5, 0.5]), "race": np.full(len(groups["race"]), 1 / len(groups["race"]))}

    m = make_method("uce", _load(tiny_sd_path), iterations=3, races=["white", "asian", "black"], ratio_fn=ratio_fn)
    m.prepare(["doctor"])
    assert seen == [("white", "asian", "black")] and len(m.history) == 1
    assert m.edits_for(["doctor"], {})[0][1] == ["image of male", "image of female", "image of White",
                                                 "image of Asian", "image of Black"]
    with pytest.raises(ValueError, match="races must be a non-empty subset"):
        make_method("uce", _load(tiny_sd_path), races=["green"], ratio_fn=ratio_fn)
    with pytest.raises(ValueError, match="2 ratios for 'race'"):
        make_method("uce", _load(tiny_sd_path), iterations=1, races=["white", "asian", "black"],
                    ratio_fn=lambda p, o, gs: {"gender": np.array([0.5, 0.5]), "race": np.array([0.5, 0.5])}
                    ).prepare(["doctor"])


def test_classifier_ratio_fn_generates_once_for_every_group(tiny_sd_path):
    from t2i_debias.baselines.uce import classifier_ratio_fn
    from t2i_debias.labels.base import DemographicClassifier, Prediction

    class Alternating(DemographicClassifier):  # the first image has no face; then man/white, woman/black, ...
        name = "alternating"
        calls = 0

        def predict(self, images, boxes=None):
            self.calls += 1
            return [Prediction(status="no_face") if i == 0 else
                    Prediction(gender="man" if i % 2 else "woman", race="white" if i % 2 else "black")
                    for i in range(len(images))]

    clf = Alternating()
    pipe = _load(tiny_sd_path)
    n_calls = []
    real_call = type(pipe).__call__

    class Counting(type(pipe)):
        def __call__(self, *a, **kw):
            n_calls.append(len(kw["prompt"]))
            return real_call(self, *a, **kw)

    pipe.__class__ = Counting
    fn = classifier_ratio_fn(clf, seeds=[0, 1, 2, 3, 4], gen=GEN)
    r = fn(pipe, "nurse", {"gender": ("man", "woman"), "race": ("white", "black", "asian")})
    assert sum(n_calls) == 5 and clf.calls == 1  # one set of images, one classification, both groups
    assert r["gender"].tolist() == [0.5, 0.5] and r["race"].tolist() == [0.5, 0.5, 0.0]


def test_uce_edit_equals_the_closed_form_by_definition(tiny_sd_path):
    """W' = (λW + s_e Σ v* cᵀ + s_p Σ (W c) cᵀ)(λI + s_e Σ c cᵀ + s_p Σ c cᵀ)⁻¹, summed text by text here."""
    from t2i_debias.baselines.uce import _aligned, _encode, cross_attention_kv, uce_edit

    pipe = _load(tiny_sd_path)
    layers = cross_attention_kv(pipe.unet)
    edits = [("photo of nurse", ["photo of male", "photo of female"], [0.3, -0.2]),
             ("image of chef", ["image of male", "image of female"], [0.0, 0.1])]
    preserve = ["doctor", "photo of a cashier"]
    lamb, s_e, s_p = 0.5, 1.0, 0.1
    want = {}
    for name, lin in layers.items():
        w = lin.weight.detach().double()
        mat1, mat2 = lamb * w.clone(), lamb * torch.eye(w.shape[1], dtype=torch.float64)
        for concept, attrs, ws in edits:
            emb, idx = _encode(pipe, [concept, *attrs])
            c, *a = _aligned(emb, idx)
            o = c @ w.T
            target = o + sum(wt * o.norm() * (ai @ w.T) / (ai @ w.T).norm() for ai, wt in zip(a, ws, strict=True))
            mat1 += s_e * target.T @ c
            mat2 += s_e * c.T @ c
        for c in _encode(pipe, preserve)[0]:
            mat1 += s_p * (c @ w.T).T @ c
            mat2 += s_p * c.T @ c
        want[name] = (mat1 @ torch.linalg.inv(mat2)).float()
    uce_edit(pipe, edits, preserve, lamb, s_e, s_p)
    for name, lin in layers.items():
        assert torch.allclose(lin.weight, want[name], atol=1e-5, rtol=1e-4), name


# ----------------------------------------------------------------------------- Fair Diffusion
def test_fair_diffusion_direction_is_seeded():
    a = [choose_target(s, "Professional photo of a nurse") for s in range(200)]
    assert a == [choose_target(s, "Professional photo of a nurse") for s in range(200)]
    assert 70 < a.count("woman") < 130  # a fair coin
    assert a != [choose_target(s, "Professional photo of a nurse", method_seed=1) for s in range(200)]
    assert edit_for("woman") == (["female person", "male person"], [False, True])


def test_fair_diffusion_applies_each_images_edit(base):
    m = make_method("fair_diffusion", base)
    prompts = ["Professional photo of a nurse"] * 6
    seeds = list(range(6))
    targets = m.targets(prompts, seeds)
    assert set(targets) == {"man", "woman"}
    got = _arr(m.generate(prompts, ["nurse"] * 6, seeds, GEN))
    for t in ("man", "woman"):
        for i in [i for i, x in enumerate(targets) if x == t]:
            other = "woman" if t == "man" else "man"
            want = _arr(generate_images(m.sega, prompts[i:i + 1], [seeds[i]], 1, 2, 7.5, 32, 32,
                                        **m.edit_kwargs(t, 2)))
            flip = _arr(generate_images(m.sega, prompts[i:i + 1], [seeds[i]], 1, 2, 7.5, 32, 32,
                                        **m.edit_kwargs(other, 2)))
            assert np.abs(got[i] - want[0]).max() <= 1  # batched vs single: same noise, same edit
            assert np.abs(got[i] - flip[0]).max() > 1


# ----------------------------------------------------------------------------- Shen et al. 2024
def _shen_state(pipe, rank=3, up_scale=0.0, seed=0):
    """Adapters in diffusers-0.19 naming, built from the tiny pipeline's own module names."""
    g = torch.Generator().manual_seed(seed)
    te, un = {}, {}
    for name, mod in pipe.text_encoder.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.split(".")[-1] in ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"):
            key = f"text_model.{name}.lora_linear_layer"
            te[f"{key}.down.weight"] = torch.randn(rank, mod.in_features, generator=g)
            te[f"{key}.up.weight"] = up_scale * torch.randn(mod.out_features, rank, generator=g)
    for name, mod in pipe.unet.named_modules():
        if name.endswith(("attn1", "attn2")):
            for proj, lin in (("q", mod.to_q), ("k", mod.to_k), ("v", mod.to_v), ("out", mod.to_out[0])):
                key = f"{name}.processor.to_{proj}_lora"
                un[f"{key}.down.weight"] = torch.randn(rank, lin.in_features, generator=g)
                un[f"{key}.up.weight"] = up_scale * torch.randn(lin.out_features, rank, generator=g)
    return te, un


def _save(tmp_path, te, un):
    torch.save(te, tmp_path / "text_encoder_lora_EMA.pth")
    torch.save(un, tmp_path / "unet_lora_EMA.pth")
    return str(tmp_path)


@pytest.mark.parametrize("up_scale", [0.0, 0.5])
def test_shen2024_loads_old_naming(tmp_path, tiny_sd_path, base, up_scale):
    pipe = _load(tiny_sd_path)
    te, un = _shen_state(pipe, up_scale=up_scale)
    assert any(".self_attn.q_proj.lora_linear_layer.down.weight" in k for k in te)
    assert any(".mlp.fc2.lora_linear_layer.up.weight" in k for k in te)
    assert any(".attn2.processor.to_out_lora.up.weight" in k for k in un)
    m = make_method("shen2024", pipe, weights_dir=_save(tmp_path, te, un))
    n_lora = sum(n.endswith("lora_A.shen2024") for part in (pipe.unet, pipe.text_encoder)
                 for n, _ in part.named_modules())
    assert n_lora == len(te) // 2 + len(un) // 2
    prompts, seeds = ["Professional photo of a chef"] * 2, [0, 1]
    got = _arr(m.generate(prompts, ["chef"] * 2, seeds, GEN))
    ref = _arr(generate_images(base, prompts, seeds, 2, 2, 7.5, 32, 32))
    assert np.array_equal(got, ref) == (up_scale == 0.0)


def test_shen2024_not_applicable(tmp_path, base):
    with pytest.raises(NotApplicable, match="no adapter folder"):
        make_method("shen2024", base)
    with pytest.raises(NotApplicable, match="not found"):
        make_method("shen2024", base, weights_dir=str(tmp_path))
    te, un = _shen_state(base)
    bad = {k: (torch.zeros(3, 768) if k.endswith("down.weight") else v) for k, v in te.items()}  # SD-1.5 width
    with pytest.raises(NotApplicable, match="SD 1.5"):
        make_method("shen2024", base, weights_dir=_save(tmp_path, bad, un))
    assert not any("lora" in n for n, _ in base.unet.named_modules())  # nothing was injected


def test_uce_edit_closed_form(tiny_sd_path):
    """Zero attribute weights: the least-squares solution is W itself; non-zero: outputs move to v*."""
    from t2i_debias.baselines.uce import _aligned, _encode, cross_attention_kv, uce_edit

    pipe = _load(tiny_sd_path)
    layers = cross_attention_kv(pipe.unet)
    w0 = {k: v.weight.detach().clone() for k, v in layers.items()}
    uce_edit(pipe, [("photo of nurse", ["photo of male", "photo of female"], [0.0, 0.0])], preserve=["chef"])
    for k, v in layers.items():
        assert torch.allclose(v.weight, w0[k], atol=1e-5)
    emb, idx = _encode(pipe, ["photo of nurse", "photo of male", "photo of female"])
    c, m_, _ = _aligned(emb, idx)
    name = next(iter(layers))
    w = layers[name].weight.detach().double()
    o = c @ w.T
    target = o + 0.3 * o.norm() * (m_ @ w.T) / (m_ @ w.T).norm()
    uce_edit(pipe, [("photo of nurse", ["photo of male", "photo of female"], [0.3, 0.0])])
    w1 = layers[name].weight.detach().double()
    assert (c @ w1.T - target).norm() < 0.5 * (o - target).norm()


def test_uce_tuning_reports_progress(tiny_sd_path, caplog, capsys):
    """UCE's tuning generates and classifies for minutes: it shows a bar and one rounded line per iteration."""
    import logging

    def ratio_fn(p, occupation, groups):  # 2/3 men: never balanced, so every iteration edits
        return {"gender": np.array([2 / 3, 1 / 3]), "race": np.full(len(groups["race"]), 1 / len(groups["race"]))}

    m = make_method("uce", _load(tiny_sd_path), iterations=2, races=["white", "asian", "black"], ratio_fn=ratio_fn)
    with caplog.at_level(logging.INFO, logger="t2i_debias.baselines.uce"):
        m.prepare(["doctor", "nurse"])
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("uce: iteration")]
    assert lines == [f"uce: iteration {i}/2: 2 of 2 concepts off balance; largest gap 0.167 (doctor|gender), "
                     "target < 0.05" for i in (1, 2)]
    err = capsys.readouterr().err
    assert "uce tuning 1/2" in err and "uce tuning 2/2" in err
