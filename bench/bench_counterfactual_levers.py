#!/usr/bin/env python
"""Verified rate of counterfactual requests on the toy base, per lever of [augment], side by side.

For every toy occupation x requested (gender, skin tone) it draws `n` requests x `tries` seeds with
the enriched stage's own path (CaptionComposer prompts, generate_images, the toy classifier, the
`agrees` rule) under each arm, and reports the share of requests verified within 1, 3 and `tries`
tries (a request's try k uses seed s + k - 1, as the stage does). Arms:
  plain           guidance = [augment] guidance_scale of configs/toy.toml (4.0)
  neg             + negative_prompt = "opposite_gender"
  cfg7.5          guidance 7.5 (what retry_guidance_scale = 7.5 gives from try 2 on)
  neg+cfg7.5      both
It never trains: a toy base or classifier that is not in the cache is an error naming it.

Usage:  python bench/bench_counterfactual_levers.py --seeds 0 1 --n 8 --tries 6 --out bench/results/counterfactual_levers.md
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from typing import Any

ARMS: dict[str, tuple[str, float | None]] = {  # name -> (negative_prompt mode, guidance; None = the config's)
    "plain": ("none", None), "neg": ("opposite_gender", None), "cfg7.5": ("none", 7.5),
    "neg+cfg7.5": ("opposite_gender", 7.5),
}


def cached(kind: str, spec: dict[str, Any]) -> Path:
    """The cache folder of a toy model, which must exist (this script never trains one)."""
    from t2i_debias.core.files import hash_obj
    from t2i_debias.tiny.cache import BUILDER_VERSION, cache_root

    path = cache_root() / f"{kind}-{hash_obj({'v': BUILDER_VERSION, **spec})[:16]}"
    if not path.is_dir():
        raise SystemExit(f"{path} is not built; run make demo (or the toy stage) for this seed first")
    return path


def measure(seed: int, n: int, tries: int, batch: int, arms: list[str]) -> list[dict[str, Any]]:
    """One row per arm x occupation x requested (gender, race): verified-within-k counts over n requests."""
    from t2i_debias.augment.captions import CaptionComposer
    from t2i_debias.augment.counterfactual import Demographics
    from t2i_debias.augment.verify import agrees
    from t2i_debias.core.config import load_config
    from t2i_debias.core.vocab import GENDERS, other_gender
    from t2i_debias.models import load_pipeline
    from t2i_debias.sampling import generate_images
    from t2i_debias.toyworld import base_model
    from t2i_debias.toyworld.classifier import ToyClassifier, classifier_spec
    from t2i_debias.toyworld.render import OCCUPATIONS

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "toy.toml")
    cfg.toy.seed = seed
    a = cfg.augment
    pipe = load_pipeline(cached("toy-base", base_model.spec_from_toy(cfg.toy)))
    clf = ToyClassifier(cached("toy-classifier", classifier_spec()), batch_size=256)
    comp = CaptionComposer.from_config(a)
    wants = [(occ, Demographics(g, r)) for occ in OCCUPATIONS for g in GENDERS for r in a.races]
    rows = []
    for arm in arms:
        neg, guidance = ARMS[arm]
        t0 = time.time()
        jobs = [(occ, w, i, k) for occ, w in wants for i in range(n) for k in range(tries)]
        prompts = [comp.generation(occ, w) for occ, w, _, _ in jobs]
        seeds = [10_000 * seed + 100 * i + k for _, _, i, k in jobs]  # request i, try k: seed s_i + k
        kw = {}
        if neg == "opposite_gender":
            kw["negative_prompt"] = [comp.generation(occ, replace(w, gender=other_gender(w.gender)))
                                     for occ, w, _, _ in jobs]
        imgs = generate_images(pipe, prompts, seeds, batch, a.num_inference_steps, guidance or a.guidance_scale,
                               height=a.resolution, width=a.resolution, **kw)
        preds = clf.predict(imgs)
        ok: dict[tuple[str, Any, int], list[bool]] = defaultdict(lambda: [False] * tries)
        for (occ, w, i, k), p in zip(jobs, preds, strict=True):
            ok[(occ, w, i)][k] = agrees(p, w, check_age=False)
        for occ, w in wants:
            firsts = [next((k + 1 for k, v in enumerate(ok[(occ, w, i)]) if v), None) for i in range(n)]
            rows.append({"seed": seed, "arm": arm, "occupation": occ, "gender": w.gender, "race": w.race, "n": n,
                         **{f"within_{k}": sum(f is not None and f <= k for f in firsts) for k in (1, 3, tries)}})
        print(f"seed {seed} {arm}: {len(imgs)} images in {time.time() - t0:.0f} s", flush=True)
    return rows


def table(rows: list[dict[str, Any]], tries: int, arms: list[str]) -> str:
    """Markdown: per seed, occupation x requested gender, verified share within 1/3/`tries` tries per arm."""
    import pandas as pd

    df = pd.DataFrame(rows)
    ks = sorted({1, 3, tries})
    out = []
    for seed, d in df.groupby("seed"):
        g = d.groupby(["occupation", "gender", "arm"])[["n", *[f"within_{k}" for k in ks]]].sum()
        tot = d.groupby("arm")[["n", *[f"within_{k}" for k in ks]]].sum()
        head = "| occupation | asked | " + " | ".join(f"{arm} ≤{k}" for arm in arms for k in ks) + " |"
        out += [f"### toy seed {seed} (n = {int(d.n.iloc[0])} requests per gender x skin tone, "
                f"{len(set(d.race))} skin tones)", "", head, "|" + "---|" * (2 + len(arms) * len(ks))]
        for (occ, gender) in sorted({(o, ge) for o, ge, _ in g.index}):
            cells = [f"{g.loc[(occ, gender, arm), f'within_{k}'] / g.loc[(occ, gender, arm), 'n']:.2f}"
                     for arm in arms for k in ks]
            out.append(f"| {occ} | {gender} | " + " | ".join(cells) + " |")
        cells = [f"{tot.loc[arm, f'within_{k}'] / tot.loc[arm, 'n']:.2f}" for arm in arms for k in ks]
        out += ["| **all** | | " + " | ".join(cells) + " |", ""]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="toy world seeds (cached bases)")
    ap.add_argument("--n", type=int, default=8, help="requests per occupation x gender x skin tone")
    ap.add_argument("--tries", type=int, default=6, help="seeds per request")
    ap.add_argument("--batch_size", type=int, default=256)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS), help="levers to measure")
    ap.add_argument("--out", default="", help="also write the markdown table here")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = [r for s in args.seeds for r in measure(s, args.n, args.tries, args.batch_size, args.arms)]
    md = table(rows, args.tries, args.arms)
    print(md)
    if args.out:
        from t2i_debias.core.files import atomic_write_text

        atomic_write_text(args.out, f"Verified share of toy counterfactual requests by lever "
                                    f"(`python bench/bench_counterfactual_levers.py --seeds {' '.join(map(str, args.seeds))}"
                                    f" --n {args.n} --tries {args.tries} --arms {' '.join(args.arms)}`).\n\n{md}\n")


if __name__ == "__main__":
    main()
