"""Ethical intervention (suffix in the prompt) and DebiasVL (projection of prompt embeddings) on the tiny pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2i_debias.baselines import GenParams, make_method
from t2i_debias.baselines.debiasvl import debias_matrix, projection_out
from t2i_debias.baselines.ethical_intervention import intervene

GEN = GenParams(batch_size=2, num_inference_steps=2, guidance_scale=7.5, height=32, width=32)


@pytest.fixture(scope="module")
def pipe(tiny_sd_path):
    from t2i_debias.models import load_pipeline

    return load_pipeline(tiny_sd_path)


def _arr(images):
    return np.stack([np.asarray(im, dtype=np.int16) for im in images])


def test_intervention_text():
    assert intervene("Professional photo of an engineer", "engineer") == (
        "Professional photo of an engineer if all individuals can be an engineer irrespective of their "
        "gender and race")
    assert intervene("A photo of a chef.", "chef").endswith("can be a chef irrespective of their gender and race.")


def test_ethical_intervention_generates_from_suffixed_prompt(pipe):
    from t2i_debias.sampling import generate_images

    m = make_method("ethical_intervention", pipe)
    prompts, occs, seeds = ["Professional photo of an engineer", "Professional photo of a doctor"], ["engineer", "doctor"], [3, 4]
    sent = m.prompts_for(prompts, occs)
    assert all("irrespective of their gender and race" in s for s in sent)
    got = _arr(m.generate(prompts, occs, seeds, GEN))
    want = _arr(generate_images(pipe, sent, seeds, 2, 2, 7.5, 32, 32))
    plain = _arr(generate_images(pipe, prompts, seeds, 2, 2, 7.5, 32, 32))
    assert np.array_equal(got, want)
    assert not np.array_equal(got, plain)


def test_projection_is_idempotent_and_removes_directions():
    g = torch.Generator().manual_seed(0)
    v = torch.randn(3, 16, generator=g, dtype=torch.float64)
    p0 = projection_out(v)
    assert torch.allclose(p0 @ p0, p0, atol=1e-10)
    assert torch.allclose(v @ p0.T, torch.zeros_like(v), atol=1e-10)
    cands = torch.nn.functional.normalize(torch.randn(6, 16, generator=g, dtype=torch.float64), dim=-1)
    pairs = [(0, 1), (2, 3), (4, 5)]
    p_lam0, _ = debias_matrix(v, cands, pairs, lam=0.0)
    assert torch.allclose(p_lam0, p0, atol=1e-10)  # λ = 0: the plain projection
    p, _ = debias_matrix(v, cands, pairs, lam=500.0)
    z = torch.randn(5, 16, generator=g, dtype=torch.float64)
    assert torch.allclose((z @ p.T) @ v.T, torch.zeros(5, 3, dtype=torch.float64), atol=1e-8)
    # calibration: pair differences shrink much more under P than under P0
    d = cands[0] - cands[1]
    assert (p @ d).norm() < 0.1 * (p0 @ d).norm()


def test_debiasvl_projects_conditional_prompt_embeddings(pipe):
    m = make_method("debiasvl", pipe)
    m.prepare(["doctor", "nurse"])
    assert m.params["lam"] == 500.0
    p0 = m.P0
    assert torch.allclose(p0 @ p0, p0, atol=1e-8)
    basis = torch.linalg.svd(m.spurious, full_matrices=False)[2][: len(m.spurious)]  # spans the directions
    prompt = ["Professional photo of a doctor"]
    with torch.no_grad():
        e_base, n_base = pipe.encode_prompt(prompt, "cpu", 1, True)
        e_deb, n_deb = m.debias_pipe.encode_prompt(prompt, "cpu", 1, True)
    comp_base = (e_base.double() @ basis.T).abs().max()
    comp_deb = (e_deb.double() @ basis.T).abs().max()
    assert comp_base > 1e-2 and comp_deb < 1e-4 * comp_base
    assert torch.allclose(e_deb.double(), e_base.double() @ m.P.T, atol=1e-4)
    assert torch.equal(n_deb, n_base)  # the unconditional embedding is untouched
    imgs = m.generate(prompt * 2, ["doctor"] * 2, [0, 1], GEN)
    assert len(imgs) == 2 and imgs[0].size == (32, 32)
