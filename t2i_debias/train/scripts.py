"""The shared body of finetune/train_text_to_image_{text,unet,both}.py: diffusers-style flags, one mode.

Flags of [train] are generated from the config (so --help shows defaults); the flags diffusers users
know and that live elsewhere (--pretrained_model_name_or_path, --train_data_dir, --output_dir, --seed,
--rank) are added here. Run under `accelerate launch` for several GPUs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from t2i_debias.cli import parse


def _extra(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("diffusers-style options")
    g.add_argument("--pretrained_model_name_or_path", default=None,
                   help="base pipeline: hub id, folder, or tiny:sd (default: [run] base_model)")
    g.add_argument("--train_data_dir", type=Path, default=None,
                   help="enriched/ folder with metadata.jsonl (default: <run_dir>/enriched)")
    g.add_argument("--output_dir", type=Path, default=None, help="where to write (default: <run_dir>/models/<mode>)")
    g.add_argument("--seed", type=int, default=None, help="training seed (default: [run] seed)")
    g.add_argument("--rank", type=int, default=None, help="alias of --lora_rank")


def main_for_mode(mode: str, description: str, argv: list[str] | None = None) -> Path:
    """Parse flags, then train `mode` into the output folder (skipped when its manifest matches)."""
    from t2i_debias.models import base_model, resolve_model
    from t2i_debias.train.engine import train_stage

    args, cfg = parse(description, ["train"], ["run"], argv, _extra)
    if args.seed is not None:
        cfg.run.seed = args.seed
    if args.rank is not None:
        cfg.train.lora_rank = args.rank
    base = resolve_model(args.pretrained_model_name_or_path, cfg) if args.pretrained_model_name_or_path \
        else base_model(cfg)
    data = args.train_data_dir or cfg.run_dir / "enriched"
    out = args.output_dir or cfg.run_dir / "models" / mode
    train_stage(cfg, mode, base, data, out, force=args.force)
    return Path(out)
