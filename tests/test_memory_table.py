"""bench/memory_table.py: the live-tensor tracker (known answers) and the derived table's arithmetic."""

from __future__ import annotations

import pytest
import torch

from tests.helpers.scripts import load_script


@pytest.fixture(scope="module")
def mt():
    return load_script("bench/memory_table.py")


def test_live_bytes_known_answers(mt):
    lin = torch.nn.Linear(100, 50, bias=False)  # 20,000-byte weight: never counted (it existed before)
    x = torch.randn(8, 100)

    def fn():
        a = torch.ones(1000)  # 4,000 bytes
        b = a * 2  # +4,000: peak 8,000
        del a, b  # freed
        lin(x)  # a view of the weight (t()) is not new memory; the (8, 50) output is 1,600 bytes

    act, grads = mt._measure(fn, lin, [x])
    assert act == 8000 and grads == 0


def test_weight_gradients_are_counted_apart(mt):
    lin = torch.nn.Linear(100, 50, bias=False)
    x = torch.randn(8, 100)
    act, grads = mt._measure(lambda: lin(x).pow(2).sum().backward(), lin, [x])
    assert grads == 50 * 100 * 4
    assert 0 < act < 20_000  # output, its square, the grad of the output: a few kB, not the weight's grad


def test_derived_peak_counts_states_exactly(mt):
    counts = {"unet": 1000, "text_encoder": 100, "vae": 10, "unet_lora": 5, "text_encoder_lora": 2}
    rows = [{"part": "unet", "lora": lo, "checkpointing": c, "latent": s, "activation_bytes": s * s * 10 * (1 + lo),
             "grad_bytes": 0} for lo in (0, 1) for c in (0, 1) for s in (8, 16)]
    rows += [{"part": "text_encoder", "lora": 0, "checkpointing": c, "latent": 0, "activation_bytes": 7,
              "grad_bytes": 0} for c in (0, 1)]
    gb, over = mt.GB, mt.CUDA_OVERHEAD_GB
    # text mode, full: 16 bytes per text-encoder parameter + 3 captions x batch 2 x 7 bytes x 0.5
    assert mt.peak_gb("text", 512, 2, False, False, rows, counts) == pytest.approx((1600 + 21) / gb + over)
    # unet mode, LoRA: frozen fp16 U-Net + text encoder + VAE, 16 bytes per adapter parameter, 3 images of
    # activations fitted linearly through the LoRA rows (20 bytes per latent pixel) at a 64x64 latent
    act = 3 * 1 * (64 * 64 * 20) * 0.5
    want = (2 * 1000 + 2 * 100 + 16 * 5 + 2 * 10 + act) / gb + over
    assert mt.peak_gb("unet", 512, 1, True, False, rows, counts) == pytest.approx(want)
    assert mt.fits(20.0) == "24 GB" and mt.fits(30) == "40 GB" and mt.fits(79) == "> 80 GB"


def test_readme_markers_are_replaced(mt, tmp_path):
    f = tmp_path / "README.md"
    f.write_text(f"a\n{mt.START}\nold\n{mt.END}\nb\n")
    assert mt.update_readme("| new |\n", f)
    assert f.read_text() == f"a\n{mt.START}\n| new |\n{mt.END}\nb\n"


def test_meta_trace_matches_a_real_cpu_run(mt):
    """The table's activation numbers come from meta-device traces: on the tiny U-Net they equal a real run."""
    assert mt.validate() == pytest.approx(1.0, abs=1e-9)
