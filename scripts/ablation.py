"""The training ablation of docs/results/ablation.md: which ingredients of the recommended recipe earn their place.

For each toy seed it runs the real stages (toy world -> mpii -> labels -> enriched, shared by every arm
of the seed), then trains each arm with the engine from configs/toy.toml (`[train] preset = "recommended"`
plus the arm's changes), saving models at several step counts of one run (`[train] snapshot_steps`).
Each model is scored by `toyworld.evaluate.score_pipeline` (the toy classifier on generated images, the
same prompts, seeds and number of images for every arm) at guidance 1 and at the evaluation guidance.

    python scripts/ablation.py                      # every arm, seeds 0 and 1 (resumes: scores.jsonl)
    python scripts/ablation.py --arms control recommended --seeds 0
    python scripts/ablation.py --report             # rewrite ablation.md/.csv from the recorded scores

Scores are appended to <root>/scores.jsonl as they come, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("ablation")

# name -> (what it is, [train] changes on top of configs/toy.toml's recommended preset)
ARMS: dict[str, tuple[str, dict[str, Any]]] = {
    "control": ("the same options on the biased anchors only (engine.control_config)", {}),
    "reference": ("upstream's recipe: preset reference (text -> unet -> both, lr 2e-8), at the toy's 32 px",
                  {"preset": "reference", "resolution": 32}),
    "recommended": ("preset recommended", {}),
    "- verification filter": ("enriched/ built with [augment] on_unverified = \"keep\" (unverified members kept, "
                              "captioned from what was measured) and [train] verified_only = false",
                              {"verified_only": False}),
    "- cell balance": ("uniform sampling", {"balance": "none"}),
    "- guidance target": ("plain denoising loss (guidance_target = 0)", {"guidance_target": 0.0}),
    "- attribute share": ("attribute_share = 0", {"attribute_share": 0.0}),
    "- caption dropout": ("caption_dropout = 0", {"caption_dropout": 0.0}),
    "+ lang": ("mode both: text encoder trained too, + 0.1·lang (recommended has no lang)",
               {"modes": ["both"], "schedule": "joint", "weights": {"denoise": 1.0, "lang": 0.1, "vision": 0.0}}),
}
# arms whose enriched/ differs: [augment] changes, built in a sibling run folder <seed>-<suffix>
AUGMENT_CHANGES: dict[str, tuple[str, dict[str, Any]]] = {
    "- verification filter": ("keep", {"on_unverified": "keep"}),
}
CSV_COLUMNS = ["seed", "arm", "steps", "guidance", "gender_tvd", "race_tvd", "occupation_accuracy",
               "obedience", "toy_fid", "images_per_occupation", "train_seconds", "triplets"]


def seed_config(root: Path, seed: int) -> Any:
    """configs/toy.toml for one toy seed, its run folder under `root`."""
    from t2i_debias.config import load_config

    cfg = load_config(ROOT / "configs" / "toy.toml")
    cfg.run.root, cfg.run.name, cfg.run.seed, cfg.toy.seed = str(root), f"seed{seed}", seed, seed
    cfg.train.control = False
    data = root / f"data-{seed}"
    cfg.mpii.mat_file, cfg.mpii.images_dir = str(data / "toy.mat"), str(data / "images")
    cfg.mpii.occupation_map = str(ROOT / "t2i_debias" / "toyworld" / "occupations_toy.csv")
    return cfg


def arm_config(cfg: Any, arm: str, steps: list[int]) -> Any:
    """The seed's config with the arm's [train] changes (a preset first, then the explicit options)."""
    from t2i_debias.config import apply_train_preset

    c = copy.deepcopy(cfg)
    changes = dict(ARMS[arm][1])
    if "preset" in changes:
        apply_train_preset(c.train, changes.pop("preset"))
        c.train.control = False
    for k, v in changes.items():
        setattr(c.train, k, copy.deepcopy(v))
    if c.train.num_train_epochs == 0:
        c.train.max_train_steps = max(steps)
        c.train.snapshot_steps = sorted(s for s in steps if s < max(steps))
    c.train.checkpointing_steps = max(steps)  # a later run with more steps resumes from here
    c.train.checkpoints_total_limit = 1
    return c


def train_arm(cfg: Any, arm: str, steps: list[int]) -> tuple[dict[int, Path], float]:
    """Train one arm; returns {steps: model folder} and the wall time of training."""
    from t2i_debias.models import base_model
    from t2i_debias.train import engine

    c = arm_config(cfg, arm, steps)
    base = base_model(c)
    data = c.run_dir / "enriched"
    if arm in AUGMENT_CHANGES:
        from t2i_debias.pipeline import run_pipeline

        suffix, changes = AUGMENT_CHANGES[arm]
        other = copy.deepcopy(c)
        other.run.name = f"{c.run.name}-{suffix}"
        for k, v in changes.items():
            setattr(other.augment, k, v)
        run_pipeline(other, only=["mpii", "labels", "enriched"])
        data = other.run_dir / "enriched"
    out = c.run_dir / "arms" / arm.replace(" ", "").replace("+", "plus_").replace("-", "minus_")
    t0 = time.time()
    if arm == "control":
        mode = engine.modes_to_run(c.train)[-1]
        engine.train_control(c, base, data, out, mode)
        folders = [out]
    else:
        folders = []
        for mode in engine.modes_to_run(c.train):
            prev = folders[-1] if folders else None
            folders.append(out / mode)
            engine.train_stage(c, mode, str(prev or base), data, folders[-1], origin=base,
                               prev_manifest=(prev / "_manifest.json") if prev else None)
    final = folders[-1]
    seconds = time.time() - t0
    if seconds < 30:  # trained before (manifest matched): the wall time of that run
        seconds = sum(json.loads((d / "_manifest.json").read_text())["wall_time_s"] for d in folders)
    n = _steps_of(final)
    models = {n: final}
    for d in final.glob("step-*"):
        models[int(d.name.split("-")[1])] = d
    return models, seconds


def _steps_of(folder: Path) -> int:
    import csv

    with open(folder / "training_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    return int(rows[-1]["step"]) if rows else 0


def score(model: Path | str, clf: Any, guidance: float, n: int, n_attr: int, reference: list[Any]) -> dict[str, Any]:
    """Toy scores of one model at one guidance (same prompts and seeds for every model)."""
    from t2i_debias.models import load_pipeline
    from t2i_debias.toyworld.evaluate import score_pipeline

    s = score_pipeline(load_pipeline(model), clf, n, base_seed=1000, steps=20, guidance=guidance,
                       n_attribute=n_attr, reference=reference)
    return {"gender_tvd": s.mean_gender_tvd, "race_tvd": s.mean_race_tvd,
            "occupation_accuracy": s.occupation_accuracy, "obedience": s.attribute_following,
            "toy_fid": s.toy_fid, "images_per_occupation": n, "male_share": s.male_share}


def read_scores(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(root: Path, seeds: list[int], arms: list[str], steps: list[int], n: int, n_mid: int, n_attr: int) -> None:
    """Every arm of every seed (each model scored once: scores.jsonl is the resume point)."""
    for seed in seeds:
        run_seed(root, seed, arms, steps, n, n_mid, n_attr)
        write_report(root, steps)


def run_seed(root: Path, seed: int, arms: list[str], steps: list[int], n: int, n_mid: int, n_attr: int) -> None:
    """The shared stages of one toy seed, then each arm: train, then score each of its step counts."""
    from PIL import Image

    from t2i_debias.models import base_model
    from t2i_debias.pipeline import run_pipeline
    from t2i_debias.toyworld.classifier import make_classifier

    scores_path = root / "scores.jsonl"
    done = {(r["seed"], r["arm"], r["steps"], r["guidance"]) for r in read_scores(scores_path)}
    cfg = seed_config(root, seed)
    run_pipeline(cfg, only=["toy", "mpii", "labels", "enriched"])
    clf = make_classifier(cfg.labels)
    reference = [Image.open(p).convert("RGB") for p in sorted(Path(cfg.mpii.images_dir).glob("*.jpg"))[:1024]]
    triplets = sum(1 for line in (cfg.run_dir / "enriched" / "metadata.jsonl").read_text().splitlines() if line)
    guidances = [1.0, float(cfg.generate.guidance_scale)]

    def record(arm: str, k: int, model: Any, seconds: float, count: int) -> None:
        for g in guidances:
            if (seed, arm, k, g) in done:
                continue
            t0 = time.time()
            row = {"seed": seed, "arm": arm, "steps": k, "guidance": g, "train_seconds": round(seconds, 1),
                   "triplets": triplets, **score(model, clf, g, count, n_attr, reference)}
            with open(scores_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            done.add((seed, arm, k, g))
            log.info("seed %d %s step %d g %g: tvd %.3f occ %.2f (%.0fs)", seed, arm, k, g, row["gender_tvd"],
                     row["occupation_accuracy"], time.time() - t0)

    record("base", 0, base_model(cfg), 0.0, n)
    for arm in arms:
        models, seconds = train_arm(cfg, arm, steps)
        last = max(models)
        for k in sorted(models):
            record(arm, k, models[k], seconds, n if k == last else n_mid)
        write_report(root, steps)


def write_report(root: Path, steps: list[int]) -> None:
    """docs/results/ablation.csv (every score) and ablation.md (means over seeds, then per seed)."""
    import pandas as pd

    from t2i_debias.provenance import git_commit

    rows = read_scores(root / "scores.jsonl")
    if not rows:
        raise SystemExit(f"{root / 'scores.jsonl'}: no scores recorded yet")
    df = pd.DataFrame(rows)
    out = ROOT / "docs" / "results"
    out.mkdir(parents=True, exist_ok=True)
    df[CSV_COLUMNS].to_csv(out / "ablation.csv", index=False, float_format="%.4f")
    order = {a: i for i, a in enumerate(["base", *ARMS])}
    g_eval = max(df["guidance"])
    seeds = sorted(df["seed"].unique())

    def fmt(v: Any, d: int = 3) -> str:
        return "n/a" if v is None or v != v else f"{v:.{d}f}"

    def table(sub: pd.DataFrame) -> list[str]:
        lines = [f"| arm | steps | train s | gender tvd g1 | gender tvd g{g_eval:g} | Δ vs base g{g_eval:g} | skin tvd g1 | "
                 f"skin tvd g{g_eval:g} | occ. acc g1 | occ. acc g{g_eval:g} | obeyed g1 | obeyed g{g_eval:g} | toy FID g{g_eval:g} | "
                 "images/occ |", "|" + "---|" * 14]
        keys = sorted({(r.arm, r.steps) for r in sub.itertuples()}, key=lambda k: (order.get(k[0], 99), k[1]))
        base = sub[(sub.arm == "base") & (sub.guidance == g_eval)]["gender_tvd"].mean()
        for arm, k in keys:
            cell = sub[(sub.arm == arm) & (sub.steps == k)]
            g1, ge = cell[cell.guidance == 1.0].mean(numeric_only=True), cell[cell.guidance == g_eval].mean(
                numeric_only=True)
            complete = all(set(cell[cell.guidance == g].seed) == set(sub.seed) for g in (1.0, g_eval))
            if ge.empty or g1.empty or ge.isna().all() or g1.isna().all() or not complete:
                continue  # a mean over seeds only where every seed has the row
            delta = f"{100 * (ge.gender_tvd / base - 1):+.0f}%" if base == base and base > 0 else "n/a"
            lines.append(f"| {arm} | {k} | {fmt(ge.train_seconds, 0)} | {fmt(g1.gender_tvd)} | {fmt(ge.gender_tvd)} | "
                         f"{delta} | {fmt(g1.race_tvd)} | {fmt(ge.race_tvd)} | {fmt(g1.occupation_accuracy, 2)} | "
                         f"{fmt(ge.occupation_accuracy, 2)} | {fmt(g1.obedience, 2)} | {fmt(ge.obedience, 2)} | "
                         f"{fmt(ge.toy_fid, 1)} | {int(ge.images_per_occupation)} |")
        return lines

    import tomllib

    toy = [tomllib.loads((root / f"seed{s}" / "config.toml").read_text())["toy"] for s in seeds
           if (root / f"seed{s}" / "config.toml").is_file()]
    base_line = (f"- Toy base: {toy[0]['base_steps']} training steps, VAE {toy[0]['vae_steps']} steps, "
                 f"{toy[0]['n_per_occupation']} people per occupation (`[toy]` of the runs' config.toml)."
                 if toy else "- Toy base: unknown (no config.toml under the run folders).")
    written = []
    for s in seeds:
        bal = root / f"seed{s}" / "enriched" / "balance.csv"
        if bal.is_file():
            b = pd.read_csv(bal)
            written.append(f"seed {s}: " + ", ".join(f"{r.occupation} {r.written}/{r.planned}" for r in b.itertuples()))
    enriched_line = ("- Triplets written to enriched/ (verified, [augment] on_unverified = \"drop\"), per occupation "
                     "written/planned: " + "; ".join(written) + "." if written else "")
    md = [
        "# Training ablation (toy world)",
        "",
        f"Generated by `python scripts/ablation.py` (commit {git_commit(ROOT, short=7, mark_dirty=False)}); every number is in `ablation.csv`.",
        "",
        f"- Toy seeds {', '.join(map(str, seeds))}: toy world -> mpii -> labels -> enriched (shared by the arms of "
        "a seed) -> models (the engine, `configs/toy.toml` + the arm's change).",
        base_line,
        enriched_line,
        f"- Step counts ({', '.join(map(str, sorted(set(df.steps) - {0})))}) of an arm are snapshots of one run "
        "(`[train] snapshot_steps`); `train s` is the wall time of the whole run (the last step count) on the "
        "shared 2-core machine, which other jobs were using too.",
        "- Scores: `toyworld.evaluate.score_pipeline`, the toy classifier on generated images; DDIM 20 steps; "
        "the same prompts and seeds (1000 + i) for every model; g1 = guidance 1, "
        f"g{g_eval:g} = the evaluation guidance. `images/occ` images per occupation for the tvds and occupation "
        "accuracy (fewer at intermediate step counts); 16 per gendered prompt for obedience "
        "('a photo of a female doctor' gives a woman).",
        "- gender tvd and skin tvd are means over the 4 occupations; Δ is against the base at the evaluation "
        "guidance; toy FID is on toy-classifier features against the toy data.",
        "",
        "Arms:",
        "",
    ]
    ran = set(df.arm)
    md += [f"- **{a}**: {d}" + ("" if a in ran else " — *not run: the session's compute ran out*")
           for a, (d, _) in ARMS.items()]
    md += ["", f"## Issue 12's end-to-end criteria (recommended at its last step count, guidance {g_eval:g})", "",
           "| seed | base gender tvd ≥ 0.25 | cut ≥ 50% | occupation ≥ 0.85 | skin tvd ≤ base | obeyed ≥ base − 0.1 |",
           "|---|---|---|---|---|---|"]
    for s in seeds:
        b = df[(df.seed == s) & (df.arm == "base") & (df.guidance == g_eval)]
        r = df[(df.seed == s) & (df.arm == "recommended") & (df.guidance == g_eval)]
        if b.empty or r.empty:
            continue
        b, r = b.iloc[0], r.sort_values("steps").iloc[-1]

        def ok(cond: bool, text: str) -> str:
            return f"{'pass' if cond else '**FAIL**'}: {text}"

        md.append(f"| {s} | {ok(b.gender_tvd >= 0.25, fmt(b.gender_tvd))} | "
                  f"{ok(r.gender_tvd <= 0.5 * b.gender_tvd, f'{100 * (1 - r.gender_tvd / b.gender_tvd):.0f}%')} | "
                  f"{ok(r.occupation_accuracy >= 0.85, fmt(r.occupation_accuracy, 2))} | "
                  f"{ok(r.race_tvd <= b.race_tvd, f'{fmt(r.race_tvd)} vs {fmt(b.race_tvd)}')} | "
                  f"{ok(r.obedience >= b.obedience - 0.1, f'{fmt(r.obedience)} vs {fmt(b.obedience)}')} |")
    md += ["", f"## Mean over seeds {', '.join(map(str, seeds))}", "", *table(df)]
    for s in seeds:
        md += ["", f"## Seed {s}", "", *table(df[df.seed == s])]
    (out / "ablation.md").write_text("\n".join(md) + "\n")
    log.info("wrote %s and %s", out / "ablation.md", out / "ablation.csv")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT / "runs" / "ablation", help="run folders and scores.jsonl")
    p.add_argument("--seeds", type=int, nargs="*", default=[0, 1])
    p.add_argument("--arms", nargs="*", default=list(ARMS), help=f"arms to run (default all: {list(ARMS)})")
    p.add_argument("--steps", type=int, nargs="*", default=[100, 200], help="step counts (snapshots of one run)")
    p.add_argument("--images", type=int, default=64, help="images per occupation at the last step count")
    p.add_argument("--images-mid", type=int, default=32, help="images per occupation at earlier step counts")
    p.add_argument("--attribute-images", type=int, default=16, help="images per gendered prompt (obedience)")
    p.add_argument("--report", action="store_true", help="only rewrite docs/results/ablation.{md,csv}")
    args = p.parse_args(argv)
    from t2i_debias.cli import setup_env, setup_logging

    setup_env()
    setup_logging()
    unknown = [a for a in args.arms if a not in ARMS]
    if unknown:
        p.error(f"unknown arms {unknown}; known: {list(ARMS)}")
    if args.report:
        write_report(args.root, args.steps)
        return
    import torch

    torch.set_num_threads(1)
    run(args.root, args.seeds, args.arms, sorted(set(args.steps)), args.images, args.images_mid,
        args.attribute_images)


if __name__ == "__main__":
    main()
