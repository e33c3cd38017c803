"""GPU check before renting hours: real-shape training steps, CPU-vs-GPU generation, batched throughput.

On a CUDA machine (defaults: `shape:sd21`, 512 px, fp16 and bf16):
- one training step of each mode (text, unet, both), full fine-tuning and LoRA, per mixed precision,
  with the peak GPU memory (torch.cuda.max_memory_allocated) and the step time;
- the same seeds generated on the CPU and on the GPU (noise drawn on the CPU, so the same noise):
  mean and max absolute pixel difference;
- batched vs one-at-a-time generation: images per second and their ratio.
It prints one markdown table and writes it to --out. On a CPU it runs the same code at tiny shapes
(`--model tiny:sd-v --device cpu --precisions no`), which is how the test suite runs it; there the
memory column is the process's peak RSS.

  python bench/gpu_check.py                                     # on a GPU machine
  python bench/gpu_check.py --model tiny:sd-v --device cpu --precisions no --resolution 32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODES = ("text", "unet", "both")


def make_triplets(root: Path, n: int, size: int) -> Path:
    """`n` random-pattern triplets with the enriched/ metadata schema (enough for a training step)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        row: dict[str, Any] = {}
        for member, key in (("anchor", "file_name"), ("positive", "positive_file_name"),
                            ("negative", "negative_file_name")):
            p = root / "images" / member / f"{i}.png"
            p.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(p)
            row[key] = f"images/{member}/{i}.png"
        row.update(anchor_text="a photo of a doctor", positive_text="a photo of an Asian woman working as a doctor",
                   negative_text="a photo of a white man working as a doctor", occupation="doctor",
                   person_id=f"{i}_1", anchor_gender="man", anchor_race="white", anchor_age_group="young",
                   positive_gender="woman", positive_race="asian", positive_age_group="young",
                   negative_gender="man", negative_race="white", negative_age_group="young",
                   generator="gpu_check", seed=i, positive_tries=1, positive_agreement=True, negative_tries=1,
                   negative_agreement=True)
        for m in ("positive", "negative"):  # measured = requested, verified (what [augment] on_unverified = "drop" writes)
            row.update({f"{m}_measured_gender": row[f"{m}_gender"], f"{m}_measured_race": row[f"{m}_race"],
                        f"{m}_measured_age_group": row[f"{m}_age_group"], f"{m}_measured_gender_conf": 1.0,
                        f"{m}_measured_race_conf": 1.0, f"{m}_measured_age_conf": None, f"{m}_verified": True})
        rows.append(row)
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def _peak_reset(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_gb(device: str) -> float:
    import resource

    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 1e9
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # kB -> GB (process peak)


def train_rows(model: str, device: str, precisions: list[str], resolution: int, batch: int, lora_rank: int,
               work: Path) -> list[dict[str, Any]]:
    """One step per (precision, mode, full/LoRA): loss, seconds, peak memory; an error is a row, not a crash."""
    from accelerate.state import AcceleratorState

    from t2i_debias.core.config import Config
    from t2i_debias.stages.models import resolved
    from t2i_debias.train import engine

    data = make_triplets(work / "enriched", batch, resolution)
    rows = []
    for mp in precisions:
        for mode in MODES:
            for rank in (0, lora_rank):
                cfg = Config()
                cfg.run.device = "cpu" if device == "cpu" else "auto"
                t = cfg.train
                t.resolution, t.train_batch_size, t.max_train_steps, t.checkpointing_steps = resolution, batch, 1, 0
                t.mixed_precision, t.lora_rank, t.learning_rate = mp, rank, 1e-5
                AcceleratorState._reset_state(reset_partial_state=True)
                _peak_reset(device)
                t0 = time.time()
                row = {"check": "train", "mode": mode, "precision": mp, "fine_tune": f"LoRA r{rank}" if rank else "full"}
                try:
                    res = engine.train_mode(resolved(cfg), cfg.run, cfg.augment, mode, model, data,
                                            work / f"{mp}-{mode}-{rank}")
                    row.update(result=f"loss {res.log[0]['loss']:.4g}", ok=bool(res.log[0]["loss"] == res.log[0]["loss"]))
                except (RuntimeError, ValueError) as e:  # e.g. CUDA out of memory: reported in the table
                    row.update(result=f"{type(e).__name__}: {str(e).splitlines()[0][:80]}", ok=False)
                row.update(seconds=round(time.time() - t0, 1), peak_gb=round(_peak_gb(device), 2))
                rows.append(row)
                print(row, flush=True)
    AcceleratorState._reset_state(reset_partial_state=True)
    return rows


def generation_rows(model: str, device: str, resolution: int, steps: int, n_images: int) -> list[dict[str, Any]]:
    """Same seeds on the CPU and on `device` (CPU-drawn noise); batched vs one-at-a-time throughput."""
    import numpy as np

    from t2i_debias.models import load_pipeline
    from t2i_debias.sampling import generate_images

    prompts = ["Professional photo of a doctor"] * n_images
    seeds = list(range(n_images))

    def run(pipe: Any, batch: int, k: int = n_images) -> tuple[list[Any], float]:
        t0 = time.time()
        ims = generate_images(pipe, prompts[:k], seeds[:k], batch, steps, 7.5, height=resolution, width=resolution)
        return ims, time.time() - t0

    cpu_pipe = load_pipeline(model, "cpu", "float32")
    cpu_ims, _ = run(cpu_pipe, n_images, k=2)
    del cpu_pipe
    pipe = load_pipeline(model, device, "float32")
    dev_ims, _ = run(pipe, n_images, k=2)
    diff = np.abs(np.stack([np.asarray(a, np.int16) for a in cpu_ims]) - np.stack([np.asarray(b, np.int16)
                                                                                    for b in dev_ims]))
    rows = [{"check": "cpu vs " + device, "mode": "", "precision": "fp32", "fine_tune": "",
             "result": f"mean |diff| {diff.mean():.2f}, max {int(diff.max())} (of 255)", "ok": bool(diff.mean() < 8),
             "seconds": "", "peak_gb": ""}]
    run(pipe, n_images, k=1)  # warm-up
    _, t_one = run(pipe, 1)
    _, t_batch = run(pipe, n_images)
    rows.append({"check": "throughput", "mode": "", "precision": "fp32", "fine_tune": "",
                 "result": f"batch 1: {n_images / t_one:.2f} img/s, batch {n_images}: {n_images / t_batch:.2f} img/s, "
                           f"ratio {t_one / t_batch:.2f}", "ok": True, "seconds": round(t_one + t_batch, 1),
                 "peak_gb": round(_peak_gb(device), 2)})
    return rows


def table(rows: list[dict[str, Any]], header: str) -> str:
    cols = ("check", "mode", "precision", "fine_tune", "result", "ok", "seconds", "peak_gb")
    out = [header, "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    out += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shape:sd21", help="model spec (default: shape:sd21)")
    ap.add_argument("--device", default="cuda", help="cuda | cuda:N | cpu (default: cuda)")
    ap.add_argument("--precisions", nargs="+", default=["fp16", "bf16"], help="mixed precisions (no | fp16 | bf16)")
    ap.add_argument("--resolution", type=int, default=512, help="training resolution (default: 512)")
    ap.add_argument("--batch", type=int, default=1, help="triplets per training step (default: 1)")
    ap.add_argument("--lora_rank", type=int, default=4, help="rank of the LoRA rows (default: 4)")
    ap.add_argument("--gen_resolution", type=int, default=256, help="generation check resolution (default: 256)")
    ap.add_argument("--gen_steps", type=int, default=2, help="inference steps of the generation checks (default: 2)")
    ap.add_argument("--images", type=int, default=8, help="images of the throughput check (default: 8)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_check.md"), help="markdown table path")
    args = ap.parse_args(argv)

    import torch

    from t2i_debias.models import resolve_model

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run with --model tiny:sd-v --device cpu --precisions no for the CPU check",
              file=sys.stderr)
        return 2
    model = resolve_model(args.model)
    with tempfile.TemporaryDirectory() as work:
        rows = train_rows(model, args.device, args.precisions, args.resolution, args.batch, args.lora_rank, Path(work))
    rows += generation_rows(model, args.device, args.gen_resolution, args.gen_steps, args.images)
    dev = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    text = table(rows, f"gpu_check: {args.model} on {dev}, train {args.resolution} px x batch {args.batch}, "
                       f"generation {args.gen_resolution} px x {args.gen_steps} steps (torch {torch.__version__})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
