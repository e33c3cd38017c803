"""GPU memory table for SD 2.1 training: activation memory traced at 512/768 px, peaks derived per mode.

Traced: `shape:sd21` (the published architecture) runs one forward + backward per image on the meta
device, so no arithmetic is done and any resolution fits on this CPU. A TorchDispatchMode sees every
tensor an op creates and a storage weak reference tells when it is freed: the peak is exactly the
bytes autograd keeps (fp32), with gradient checkpointing off and on, full and LoRA. Attention is
routed to the flash kernel (output + logsumexp saved, as on a GPU with SDPA); the meta trace is
checked against a real CPU run of the tiny pipeline (`validate`, ratio printed; a test pins it to 1).
Derived: peak GPU memory = parameters + gradients + AdamW states (counted exactly) + traced
activations x images per step, halved for fp16 autocast, + an assumed CUDA overhead.

  python bench/memory_table.py            # trace (minutes) + print the tables + update README.md
  python bench/memory_table.py --derive   # re-derive from bench/results/memory_measured.csv only
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import gc
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
MEASURED_CSV = RESULTS / "memory_measured.csv"
TABLE_MD = RESULTS / "memory_table.md"
README = ROOT / "README.md"
START, END = "<!-- memory-table:start -->", "<!-- memory-table:end -->"
GB = 1e9
LATENTS = (64, 96)  # traced latent sides: 512 and 768 px
LORA_RANK = 4
CUDA_OVERHEAD_GB = 1.0  # CUDA context + allocator fragmentation: an assumption, not a measurement
MODES = ("text", "unet", "both")
PASSES = {"text": 0, "unet": 3, "both": 3}  # U-Net samples per triplet (a, p, n; denoise reuses p)
CAPTIONS = {"text": 3, "unet": 0, "both": 3}  # captions per triplet that carry gradients


class LiveBytes:
    """Record every tensor storage ops create while active (allocation and free, by op index).

    Storages that existed before (parameters, buffers, inputs: `exclude`, data pointers) are never
    counted, so views of a weight are not mistaken for new memory.
    """

    def __init__(self, exclude: set[int] | None = None) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        tracker = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
                out = func(*args, **(kwargs or {}))
                tracker._record(out)
                return out

        self.mode = _Mode()
        self.refs: dict[int, tuple[Any, int, int]] = {}  # key -> (weak ref, bytes, event index of allocation)
        self.events: list[tuple[int, int]] = []  # (+bytes | -bytes, allocation event index)
        self.exclude = exclude or set()

    def _record(self, out: Any) -> None:
        import torch
        from torch.multiprocessing.reductions import StorageWeakRef
        from torch.utils._pytree import tree_flatten

        self._sweep()
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                st = t.untyped_storage()
                key = st._cdata  # the StorageImpl: shared by views, distinct for every allocation (meta too)
                if st.nbytes() and key not in self.refs and key not in self.exclude:
                    self.refs[key] = (StorageWeakRef(st), st.nbytes(), len(self.events))
                    self.events.append((st.nbytes(), len(self.events)))

    def _sweep(self) -> None:
        dead = [k for k, (ref, _, _) in self.refs.items() if ref.expired()]
        for k in dead:
            _, n, at = self.refs.pop(k)
            self.events.append((-n, at))

    def peak(self, skip_alive: set[int] = frozenset()) -> int:
        """Peak live bytes, leaving out storages still alive now whose data pointer is in `skip_alive`."""
        self._sweep()
        skip = {at for k, (_, _, at) in self.refs.items() if k in skip_alive}
        live = best = 0
        for n, at in self.events:
            if at in skip:
                continue
            live += n
            best = max(best, live)
        return best

    def __enter__(self) -> LiveBytes:
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


def _measure(fn: Any, module: Any, inputs: list[Any]) -> tuple[int, int]:
    """(activation peak bytes, weight-gradient bytes) of `fn()`: the gradients left in .grad are
    counted apart, as parameter state."""
    gc.collect()
    module.zero_grad(set_to_none=True)
    exclude = {t.untyped_storage()._cdata for t in [*module.parameters(), *module.buffers(), *inputs]}
    with LiveBytes(exclude) as lb:
        fn()
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    act = lb.peak({g.untyped_storage()._cdata for g in grads})
    nbytes = sum(g.nbytes for g in grads)
    module.zero_grad(set_to_none=True)
    return act, nbytes


@contextlib.contextmanager
def flash_attention() -> Iterator[None]:
    """Route F.scaled_dot_product_attention (without a mask) to the flash kernel, as SDPA does on a GPU.

    On the meta device SDPA would pick its math path and keep the full attention matrix for backward.
    """
    import torch
    import torch.nn.functional as F

    orig = F.scaled_dot_product_attention

    def flash(q: Any, k: Any, v: Any, attn_mask: Any = None, dropout_p: float = 0.0, is_causal: bool = False,
              scale: float | None = None, **kw: Any) -> Any:
        if attn_mask is not None or kw:
            return orig(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kw)
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, dropout_p, is_causal,
                                                                          scale=scale)[0]

    F.scaled_dot_product_attention = flash
    try:
        yield
    finally:
        F.scaled_dot_product_attention = orig


def unet_step_bytes(unet: Any, latent: int, ctx_dim: int, device: str, ckpt: bool) -> tuple[int, int]:
    """(activation bytes, weight-gradient bytes) of one U-Net forward + backward on one image."""
    import torch

    unet.train()
    (unet.enable_gradient_checkpointing if ckpt else unet.disable_gradient_checkpointing)()
    x = torch.randn(1, 4, latent, latent, device=device)
    t = torch.tensor([500], device=device)
    ctx = torch.randn(1, 77, ctx_dim, device=device)
    with flash_attention():
        return _measure(lambda: unet(x, t, ctx).sample.float().pow(2).mean().backward(), unet, [x, t, ctx])


def validate() -> float:
    """Traced (meta) / real (CPU) activation bytes of the tiny pipeline's U-Net: 1.0 when the trace is exact."""
    import torch
    from diffusers import UNet2DConditionModel

    from t2i_debias import tiny

    path = tiny.tiny_sd_dir()
    real = UNet2DConditionModel.from_pretrained(path, subfolder="unet").requires_grad_(True)
    with torch.device("meta"):
        meta = UNet2DConditionModel.from_config(real.config).requires_grad_(True)
    dim = real.config.cross_attention_dim
    return unet_step_bytes(meta, 16, dim, "meta", False)[0] / unet_step_bytes(real, 16, dim, "cpu", False)[0]


def measure(out_csv: Path) -> list[dict[str, Any]]:
    """Trace U-Net (full, LoRA; checkpointing off/on; 512/768 px) and text-encoder bytes per image/caption."""
    import torch
    from transformers import CLIPTextModel

    from t2i_debias.shapes import build_components
    from t2i_debias.train.parts import _add_lora

    rows: list[dict[str, Any]] = []
    ratio = validate()
    print(f"validation: traced / real activation bytes of the tiny U-Net = {ratio:.4f}", flush=True)
    parts = build_components("sd21", "meta")
    unet = parts["unet"]
    for lora in (False, True):
        if lora:
            unet.requires_grad_(False)
            with torch.device("meta"):
                _add_lora(unet, "unet", LORA_RANK, None)
        else:
            unet.requires_grad_(True)
        for ckpt in (False, True):
            for side in LATENTS:
                t0 = time.time()
                act, grad_bytes = unet_step_bytes(unet, side, 1024, "meta", ckpt)
                rows.append({"part": "unet", "lora": int(lora), "checkpointing": int(ckpt), "latent": side,
                             "px": side * 8, "activation_bytes": act, "grad_bytes": grad_bytes,
                             "seconds": round(time.time() - t0, 1), "validation_ratio": round(ratio, 4)})
                print(rows[-1], flush=True)
    te: CLIPTextModel = parts["text_encoder"]
    te.requires_grad_(True).train()
    ids = torch.randint(0, 49407, (1, 77), device="meta")
    for ckpt in (False, True):
        (te.gradient_checkpointing_enable if ckpt else te.gradient_checkpointing_disable)()
        t0 = time.time()
        with flash_attention():
            act, grad_bytes = _measure(lambda: te(ids).last_hidden_state.pow(2).mean().backward(), te, [ids])
        rows.append({"part": "text_encoder", "lora": 0, "checkpointing": int(ckpt), "latent": 0, "px": 0,
                     "activation_bytes": act, "grad_bytes": grad_bytes, "seconds": round(time.time() - t0, 1),
                     "validation_ratio": round(ratio, 4)})
        print(rows[-1], flush=True)
    out_csv.parent.mkdir(parents=True, exist_ok=True)
    with open(out_csv, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return rows


def read_measured(path: Path) -> list[dict[str, Any]]:
    with open(path, newline="") as fh:
        return [{k: (int(v) if re.fullmatch(r"-?\d+", v) else float(v) if re.fullmatch(r"-?[\d.]+", v) else v)
                 for k, v in r.items()} for r in csv.DictReader(fh)]


def parameter_counts() -> dict[str, int]:
    """SD 2.1 parameters per part, and the LoRA adapters' counts (rank LORA_RANK), on the meta device."""
    import torch

    from t2i_debias.shapes import build_components
    from t2i_debias.train.parts import _add_lora

    parts = build_components("sd21", "meta")
    out = {k: sum(p.numel() for p in m.parameters()) for k, m in parts.items()}
    for name in ("unet", "text_encoder"):
        with torch.device("meta"):
            _add_lora(parts[name], name, LORA_RANK, None)
        # peft renames the wrapped weights (to_q.weight -> to_q.base_layer.weight): count the adapters by name
        out[f"{name}_lora"] = sum(p.numel() for n, p in parts[name].named_parameters() if ".lora_" in n)
    return out


def unet_activation(rows: list[dict[str, Any]], ckpt: bool, latent: int, lora: bool = False) -> tuple[float, bool]:
    """Per-image U-Net activation bytes at `latent` (fp32): (value, traced). A size not traced is fitted
    linearly in latent pixels through the two smallest traced sizes (the U-Net is convolutional and
    flash attention keeps attention memory linear)."""
    pts = sorted((r["latent"] ** 2, r["activation_bytes"]) for r in rows
                 if r["part"] == "unet" and r["checkpointing"] == int(ckpt) and r["lora"] == int(lora))
    exact = [b for p, b in pts if p == latent ** 2]
    if exact:
        return float(exact[0]), True
    (p0, b0), (p1, b1) = pts[:2]
    return b0 + (b1 - b0) / (p1 - p0) * (latent ** 2 - p0), False


def text_activation(rows: list[dict[str, Any]], ckpt: bool) -> float:
    return float(next(r["activation_bytes"] for r in rows if r["part"] == "text_encoder"
                      and r["checkpointing"] == int(ckpt)))


def peak_gb(mode: str, px: int, batch: int, lora: bool, ckpt: bool, rows: list[dict[str, Any]],
            counts: dict[str, int]) -> float:
    """Derived peak GPU memory (GB) of one training step under fp16 mixed precision with AdamW."""
    pu, pt, pv = counts["unet"], counts["text_encoder"], counts["vae"]
    trained = {"text": ("text_encoder",), "unet": ("unet",), "both": ("text_encoder", "unet")}[mode]
    static = 0.0
    for part, n in (("unet", pu), ("text_encoder", pt)):
        if part == "unet" and mode == "text":
            continue  # text mode loads no U-Net
        if part in trained and not lora:
            static += 16 * n  # fp32 weights + fp32 grads + AdamW m, v
        else:
            static += 2 * n  # frozen fp16
            if part in trained:
                static += 16 * counts[f"{part}_lora"]
    if mode != "text":
        static += 2 * pv
    act = 0.0
    if PASSES[mode]:
        a, _ = unet_activation(rows, ckpt, px // 8, lora)
        act += PASSES[mode] * batch * a * 0.5  # fp16 autocast activations: half of the fp32 measurement
    if CAPTIONS[mode]:
        act += CAPTIONS[mode] * batch * text_activation(rows, ckpt) * 0.5
    return (static + act) / GB + CUDA_OVERHEAD_GB


def fits(gb: float) -> str:
    return next((f"{s} GB" for s in (24, 40, 80) if gb <= s * 0.95), "> 80 GB")


def tables(rows: list[dict[str, Any]], counts: dict[str, int]) -> str:
    """The measured table and the derived GPU table, as markdown."""
    ratio = rows[0].get("validation_ratio", "n/a")
    lines = ["**Traced** (fp32, `shape:sd21` on the meta device: the exact bytes autograd keeps for one forward + "
             "backward of one image or caption, flash attention; raw numbers in `bench/results/memory_measured.csv`). "
             f"Trace vs a real CPU run of the tiny U-Net: ratio {ratio}.", "",
             "| part | LoRA | grad. checkpointing | px | activations (GB) | weight grads (GB) |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['part']} | {'yes' if r['lora'] else 'no'} | {'on' if r['checkpointing'] else 'off'} | "
                     f"{r['px'] or '77 tokens'} | {r['activation_bytes'] / GB:.3f} | {r['grad_bytes'] / GB:.2f} |")
    for ckpt in (False, True):
        a0 = unet_activation(rows, ckpt, LATENTS[0])[0]
        a1 = unet_activation(rows, ckpt, LATENTS[-1])[0]
        lines.append("")
        lines.append(f"U-Net activations, {LATENTS[-1] * 8} px / {LATENTS[0] * 8} px, checkpointing "
                     f"{'on' if ckpt else 'off'}: ratio {a1 / a0:.2f} (pixels ratio {(LATENTS[-1] / LATENTS[0]) ** 2:.2f})")
    off, on = unet_activation(rows, False, LATENTS[-1])[0], unet_activation(rows, True, LATENTS[-1])[0]
    lines.append(f"Checkpointing on / off at {LATENTS[-1] * 8} px: ratio {on / off:.2f}")
    lines += ["", f"**Derived** peak GPU memory of one training step (GB) for SD 2.1 under fp16 mixed precision "
              f"with AdamW: parameters, gradients and optimizer states counted exactly (U-Net {counts['unet'] / 1e6:.1f}M, "
              f"text encoder {counts['text_encoder'] / 1e6:.1f}M, VAE {counts['vae'] / 1e6:.1f}M, LoRA rank {LORA_RANK}: "
              f"{counts['unet_lora'] / 1e6:.2f}M + {counts['text_encoder_lora'] / 1e6:.2f}M), plus the traced per-image "
              f"activations times the images of a step (batch = triplets: 3 U-Net images and, in text/both, 3 captions "
              f"each), halved for fp16 autocast (an assumption), plus {CUDA_OVERHEAD_GB:.0f} GB assumed CUDA overhead. "
              "States and activations are summed although gradients only fill up during backward, so cells err high. "
              "Every cell is derived, none is measured on a GPU (`bench/gpu_check.py` measures them on one); "
              "the smallest GPU it fits with 5% headroom is in brackets.", "",
              "| mode | fine-tune | grad. ckpt | 512 px, batch 1 | 512 px, batch 4 | 768 px, batch 1 | 768 px, batch 4 |",
              "|---|---|---|---|---|---|---|"]
    for mode in MODES:
        for lora in (False, True):
            for ckpt in (False, True):
                cells = []
                for px in (512, 768):
                    for b in (1, 4):
                        g = peak_gb(mode, px, b, lora, ckpt, rows, counts)
                        cells.append(f"{g:.1f} ({fits(g)})")
                lines.append(f"| {mode} | {'LoRA' if lora else 'full'} | {'on' if ckpt else 'off'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def update_readme(table: str, readme: Path = README) -> bool:
    """Replace the text between the memory-table markers in README.md; False when the markers are absent."""
    text = readme.read_text()
    if START not in text or END not in text:
        return False
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table}{END}{tail}")
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--derive", action="store_true", help="skip measuring; use bench/results/memory_measured.csv")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite the README table")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rows = read_measured(MEASURED_CSV) if args.derive else measure(MEASURED_CSV)
    table = tables(rows, parameter_counts())
    TABLE_MD.parent.mkdir(parents=True, exist_ok=True)
    TABLE_MD.write_text(table)
    print(table)
    if not args.no_readme and update_readme(table):
        print(f"updated {README}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
