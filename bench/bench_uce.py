#!/usr/bin/env python
"""UCE's attribute-weight tuning, before and after the cost fixes, side by side in one run.

Before (the previous code, kept here as the reference): each round generated and classified one set of
images per (concept, attribute group), so gender and race paid twice for the same (model, prompt, seed);
the race group was DeepFace's six races even with a classifier that returns three (the toy world), so it
could never balance and every round ran; and each edit step summed the preserved texts' cᵀc once per
layer. After (t2i_debias.baselines.uce): one generation and one classification per concept and round,
the classifier's own races, the texts' Gram matrices formed once per edit step.

Both runs start from the same base weights, classifier and seeds. Prints wall and CPU time (one thread,
so CPU time holds on a busy machine), images generated,
rounds run and the ratio (before / after); tests/test_baselines_editing.py checks that the new edit step
equals the closed form summed text by text. Example:  python bench/bench_uce.py [--iterations 3] [--samples 20] [--steps 10]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from t2i_debias.baselines import GenParams, make_method
from t2i_debias.baselines.uce import _aligned, _encode, classifier_ratio_fn, cross_attention_kv
from t2i_debias.core.vocab import RACES


class Counting:
    """Wraps a pipeline and counts the images it is asked for."""

    def __init__(self, pipe: Any) -> None:
        self.pipe, self.images = pipe, 0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        self.images += len(kw["prompt"])
        return self.pipe(*a, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.pipe, name)


@torch.no_grad()
def legacy_uce_edit(pipe: Any, edits: Sequence[tuple[str, list[str], list[float]]], preserve: Sequence[str] = (),
                    lamb: float = 0.5, erase_scale: float = 1.0, preserve_scale: float = 0.1,
                    with_to_k: bool = True) -> list[str]:
    """The previous edit step: the preserved texts' terms summed text by text, in every layer."""
    layers = {k: v for k, v in cross_attention_kv(pipe.unet).items() if with_to_k or k.endswith("to_v")}
    edit_ctx = []
    for concept, attrs, weights in edits:
        emb, idx = _encode(pipe, [concept, *attrs])
        sl = _aligned(emb, idx)
        edit_ctx.append((sl[0], sl[1:], list(weights)))
    keep = _encode(pipe, list(preserve))[0] if preserve else None
    for linear in layers.values():
        w = linear.weight.detach().double()
        mat1 = lamb * w.clone()
        mat2 = lamb * torch.eye(w.shape[1], dtype=torch.float64)
        for c, attr_ctx, weights in edit_ctx:
            o = c @ w.T
            target = o.clone()
            for a, wt in zip(attr_ctx, weights, strict=True):
                u = a @ w.T
                target += (wt * o.norm()) * (u / u.norm())
            mat1 += erase_scale * target.T @ c
            mat2 += erase_scale * c.T @ c
        if keep is not None:
            for c in keep:
                mat1 += preserve_scale * (c @ w.T).T @ c
                mat2 += preserve_scale * c.T @ c
        linear.weight.copy_((mat1 @ torch.linalg.inv(mat2)).to(linear.weight.dtype))
    return list(layers)


def per_group(fn: Any) -> Any:
    """The previous measurement: one generation and classification per attribute group."""
    return lambda pipe, concept, groups: {g: fn(pipe, concept, {g: labels})[g] for g, labels in groups.items()}


def run(model: str, legacy: bool, clf: Any, occupations: list[str], races: Sequence[str], args: Any
        ) -> tuple[float, float, int, int]:
    import t2i_debias.baselines.uce as uce_mod
    from t2i_debias.models import load_pipeline

    gen = GenParams(batch_size=args.batch, num_inference_steps=args.steps, guidance_scale=4.0,
                    height=args.size, width=args.size)
    fn = classifier_ratio_fn(clf, [10_000 + i for i in range(args.samples)], gen)
    pipe = Counting(load_pipeline(model))
    m = make_method("uce", pipe, iterations=args.iterations, races=list(RACES if legacy else races),
                    ratio_fn=per_group(fn) if legacy else fn)
    edit = uce_mod.uce_edit
    uce_mod.uce_edit = legacy_uce_edit if legacy else edit
    try:
        t, c = time.perf_counter(), time.process_time()
        m.prepare(occupations)
        dt, dc = time.perf_counter() - t, time.process_time() - c
    finally:
        uce_mod.uce_edit = edit
    return dt, dc, pipe.images, len(m.history)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="'tiny' (random tiny SD) or a pipeline folder, e.g. a "
                   "cached toy base (default: %(default)s)")
    p.add_argument("--iterations", type=int, default=3, help="tuning rounds (default: %(default)s)")
    p.add_argument("--samples", type=int, default=20, help="images per concept and round (default: %(default)s)")
    p.add_argument("--steps", type=int, default=10, help="inference steps (default: %(default)s)")
    p.add_argument("--batch", type=int, default=64, help="generation batch size (default: %(default)s)")
    p.add_argument("--size", type=int, default=32, help="image size (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default: %(default)s)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from t2i_debias import tiny
    from t2i_debias.toyworld.classifier import make_classifier
    from t2i_debias.toyworld.render import OCCUPATIONS, TOY_RACES

    model = str(tiny.tiny_sd_dir()) if args.model == "tiny" else args.model
    clf = make_classifier()
    occ = list(OCCUPATIONS)
    after = run(model, False, clf, occ, TOY_RACES, args)
    before = run(model, True, clf, occ, TOY_RACES, args)
    print(f"UCE tuning on {args.model}, toy classifier, {len(occ)} occupations, {args.samples} images x "
          f"{args.steps} steps per measurement, up to {args.iterations} rounds")
    print(f"{'':8s} {'wall s':>8s} {'cpu s':>8s} {'images':>8s} {'rounds':>7s}")
    for name, r in (("before", before), ("after", after)):
        print(f"{name:8s} {r[0]:8.1f} {r[1]:8.1f} {r[2]:8d} {r[3]:7d}")
    print(f"ratio (before / after): {before[0] / after[0]:.2f}x wall, {before[1] / after[1]:.2f}x cpu, "
          f"{before[2] / max(after[2], 1):.2f}x images")
    ok = before[1] / after[1] >= 1.5  # CPU time: one thread, so a busy machine does not skew it
    print(f"after at least 1.5x faster: {'yes' if ok else 'NO'}")
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
