"""The training ablation of docs/results/ablation.md: which ingredients of the recommended recipe earn their place.

For each toy seed it runs the real stages (toy world -> mpii -> labels -> enriched, shared by every arm
of the seed), then trains each arm with the engine from configs/toy.toml (`[train] preset = "recommended"`
plus the arm's changes), saving models at several step counts of one run (`[train] snapshot_steps`).
Each model is scored by `toyworld.evaluate.score_pipeline` (the toy classifier on generated images, the
same prompts, seeds and number of images for every arm) at guidance 1 and at the evaluation guidance.

    python scripts/ablation.py                      # every arm and baseline, seeds 0 and 1 (resumes: scores.jsonl)
    python scripts/ablation.py --arms recommended fair_diffusion --seeds 2   # the held-out seed, once
    python scripts/ablation.py --report             # rewrite ablation.md/.csv from the recorded scores

Scores are appended to <root>/scores.jsonl as they come, so a killed run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
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
    "reference (toy lr)": ("preset reference with the learning rate of every other arm (3e-4): what the paper's "
                           "contrastive terms do once they move the weights",
                           {"preset": "reference", "resolution": 32, "learning_rate": 3e-4,
                            "mode_learning_rates": {}}),
    "recommended": ("preset recommended (prior preservation λ = 1, every (occupation, gender, skin tone) cell "
                    "weighted the same)", {}),
    "- prior preservation": ("prior weight 0 (the recommended preset before prior preservation)",
                             {"weights": {"denoise": 1.0, "vision": 0.0, "prior": 0.0}}),
    "prior λ 0.3": ("prior weight 0.3 instead of 1", {"weights": {"denoise": 1.0, "vision": 0.0, "prior": 0.3}}),
    "- verification filter": ("enriched/ built with [augment] on_unverified = \"keep\" (unverified members kept, "
                              "captioned from what was measured) and [train] verified_only = false",
                              {"verified_only": False}),
    "- cell balance": ("uniform sampling", {"balance": "none"}),
    "- guidance target": ("plain denoising loss (guidance_target = 0)", {"guidance_target": 0.0}),
    "- attribute share": ("attribute_share = 0", {"attribute_share": 0.0}),
    "- caption dropout": ("caption_dropout = 0", {"caption_dropout": 0.0}),
    "+ lang": ("mode both: text encoder trained too, + 0.1·lang",
               {"modes": ["both"], "schedule": "joint",
                "weights": {"denoise": 1.0, "lang": 0.1, "vision": 0.0, "prior": 1.0}}),
    "- race balance": ("every (occupation, gender) cell weighted the same, skin tone left as the data has it "
                       "(the recommended preset before race balance)", {"balance_by": ["gender"]}),
}
# The SOTA baselines (t2i_debias.baselines), applied to the base of the seed as a user would apply them to
# every prompt, attribute prompts included; settings from configs/toy.toml's [sota].
BASELINES: tuple[str, ...] = ("fair_diffusion", "uce", "ethical_intervention", "debiasvl")
# Not run, with the reason (stated in ablation.md).
NOT_RUN: dict[str, str] = {
    "distribution-level (Shen et al. 2024)": (
        "a loop that samples with guidance every N steps, labels the samples and re-weights the cells needs "
        "~384 sampled images per re-weighting (the cost of one evaluation, ~35 s at 2 threads) on top of "
        "training; at N = 50 that quadruples an arm's cost, which this session's compute could not pay"),
}
# [augment] changes: the arm's enriched/ is built in a sibling run folder <seed>-<suffix>
AUGMENT_CHANGES: dict[str, tuple[str, dict[str, Any]]] = {
    "- verification filter": ("keep", {"on_unverified": "keep"}),
}
# The README's method table: these rows, from docs/results/ablation.csv, between these markers.
README_BEGIN = "<!-- toy-method:begin -->"
README_END = "<!-- toy-method:end -->"
README_ROWS: dict[str, str] = {"base": "base", "reference": "reference (paper's recipe)", "recommended": "ours",
                               "control": "control", "fair_diffusion": "Fair Diffusion", "uce": "UCE",
                               "ethical_intervention": "ethical intervention", "debiasvl": "debiasVL"}
# Every recorded score with its per-image gender codes, committed so that a fresh clone resumes and extends it.
COMMITTED_SCORES = ROOT / "docs" / "results" / "ablation_scores.jsonl"
TUNING_SEEDS: tuple[int, ...] = (0, 1)  # the recipe is chosen on these
HELDOUT_SEED = 2  # scored once with the chosen recipe, never tuned on
CSV_COLUMNS = ["seed", "arm", "steps", "guidance", "gender_tvd", "gender_floor", "paired_diff", "paired_lo",
               "paired_hi", "race_tvd", "heldout_gender_tvd", "occupation_accuracy", "obedience", "obedience_min",
               "skin_obedience", "skin_obedience_min", "ambiguous_rate", "toy_fid", "images_per_occupation",
               "attribute_images", "train_seconds", "train_cpu_seconds", "eval_seconds", "triplets"]


def seed_config(root: Path, seed: int) -> Any:
    """configs/toy.toml for one toy seed, its run folder under `root`."""
    from t2i_debias.core.config import load_config

    cfg = load_config(ROOT / "configs" / "toy.toml")
    cfg.run.root, cfg.run.name, cfg.run.seed, cfg.toy.seed = str(root), f"seed{seed}", seed, seed
    cfg.train.control = False
    data = root / f"data-{seed}"
    cfg.mpii.mat_file, cfg.mpii.images_dir = str(data / "toy.mat"), str(data / "images")
    cfg.mpii.occupation_map = str(ROOT / "t2i_debias" / "toyworld" / "occupations_toy.csv")
    return cfg


def arm_config(cfg: Any, arm: str, steps: list[int]) -> Any:
    """The seed's config with the arm's [train] changes (a preset first, replacing every [train] option it
    names, then the explicit options)."""
    from t2i_debias.core.presets import apply_presets

    c = copy.deepcopy(cfg)
    changes = dict(ARMS[arm][1])
    if "preset" in changes:
        c.train.preset = changes.pop("preset")
        apply_presets(c, {option for option in c.explicit if option[0] != "train"})
        c.train.control = False
    for k, v in changes.items():
        setattr(c.train, k, copy.deepcopy(v))
    if c.train.num_train_epochs == 0:
        c.train.max_train_steps = max(steps)
        c.train.snapshot_steps = sorted(s for s in steps if s < max(steps))
    c.train.checkpointing_steps = max(steps)  # a later run with more steps resumes from here
    c.train.checkpoints_total_limit = 1
    return c


def train_arm(cfg: Any, arm: str, steps: list[int]) -> tuple[dict[int, Path], float, float]:
    """Train one arm; returns {steps: model folder}, the wall and the CPU seconds of training (read back from
    its train_cost.json when the arm was trained before)."""
    from t2i_debias.core.files import MANIFEST
    from t2i_debias.core.layout import RunLayout
    from t2i_debias.core.options import modes_to_run
    from t2i_debias.models import base_model
    from t2i_debias.stages.models import train_control, train_stage

    c = arm_config(cfg, arm, steps)
    base = base_model(c)
    data = RunLayout(c.run_dir).enriched
    if arm in AUGMENT_CHANGES:
        from t2i_debias.pipeline import run_pipeline

        suffix, changes = AUGMENT_CHANGES[arm]
        other = copy.deepcopy(c)
        other.run.name = f"{c.run.name}-{suffix}"
        for k, v in changes.items():
            setattr(other.augment, k, v)
        run_pipeline(other, only=["mpii", "labels", "enriched"])
        data = RunLayout(other.run_dir).enriched
    out = c.run_dir / "arms" / arm_folder(arm)
    t0, cpu0 = time.time(), _cpu_seconds()
    if arm == "control":
        mode = modes_to_run(c.train)[-1]
        train_control(c, base, data, out, mode)
        folders = [out]
    else:
        folders = []
        for mode in modes_to_run(c.train):
            prev = folders[-1] if folders else None
            folders.append(out / mode)
            train_stage(c, mode, str(prev or base), data, folders[-1], origin=base,
                        prev_manifest=(prev / MANIFEST) if prev else None)
    seconds, cpu = time.time() - t0, _cpu_seconds() - cpu0
    cost = out / "train_cost.json"
    if seconds < 30 and cost.is_file():  # trained before (manifests matched): that run's cost
        seconds, cpu = (json.loads(cost.read_text())[k] for k in ("wall_s", "cpu_s"))
    elif seconds >= 30:
        cost.write_text(json.dumps({"wall_s": seconds, "cpu_s": cpu}))
    final = folders[-1]
    models = {_steps_of(final): final}
    for d in final.glob("step-*"):
        models[int(d.name.split("-")[1])] = d
    return models, seconds, cpu


# [train] options that set how long a run is or how it saves, not what it learns (a longer run resumes)
_NOT_RECIPE = ("max_train_steps", "snapshot_steps", "checkpointing_steps", "checkpoints_total_limit",
               "resume_from_checkpoint", "control")


def recipe_of(cfg: Any, arm: str, steps: list[int]) -> str:
    """Hash of what makes an arm's scores: its [train] options and data (trained arms), its [sota] settings
    (baselines) or the base; a recorded score counts as done only under the same recipe."""
    import dataclasses

    from t2i_debias.augment.schema import METADATA
    from t2i_debias.baselines.registry import method_params
    from t2i_debias.core.files import hash_file, hash_obj
    from t2i_debias.core.layout import RunLayout
    from t2i_debias.models import base_model
    from t2i_debias.stages.sota import method_inputs

    what: dict[str, Any] = {"seed": cfg.run.seed, "base": Path(base_model(cfg)).name}
    if arm in BASELINES:
        what["method"] = [arm, {k: v for k, v in method_params(arm, method_inputs(cfg)).items() if not callable(v)}]
    elif arm != "base":
        c = arm_config(cfg, arm, steps)
        what["train"] = {k: v for k, v in dataclasses.asdict(c.train).items() if k not in _NOT_RECIPE}
        what["control"] = arm == "control"
        meta = RunLayout(cfg.run_dir).enriched / METADATA
        what["data"] = hash_file(meta) if meta.is_file() else ""
        if arm in AUGMENT_CHANGES:
            what["augment"] = AUGMENT_CHANGES[arm]
    return hash_obj(what)[:12]


def arm_folder(arm: str) -> str:
    """The arm's folder name under <run>/arms/ ("- cell balance" -> "minus_cellbalance")."""
    return (arm.replace(" ", "").replace("+", "plus_").replace("-", "minus_").replace("(", "").replace(")", "")
            .replace("λ", "lambda").replace(".", "p"))


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process (all its threads) so far."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _steps_of(folder: Path) -> int:
    """The last step of a trained model folder's training_log.csv."""
    import csv

    with open(folder / "training_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    return int(rows[-1]["step"]) if rows else 0


def score(model: Any, clf: Any, guidance: float, n: int, n_attr: int, reference: list[Any],
          base_codes: dict[str, list[int]] | None) -> dict[str, Any]:
    """Toy scores of one model or baseline at one guidance (the same prompts and seeds for every model), with
    the noise floor of gender tvd and the paired bootstrap CI of (model − base) gender tvd."""
    import numpy as np

    from t2i_debias.metrics.floor import floor_value
    from t2i_debias.toyworld.evaluate import paired_gender_tvd, score_pipeline
    from t2i_debias.toyworld.render import MPII_OCCUPATIONS

    s = score_pipeline(model, clf, n, base_seed=1000, steps=20, guidance=guidance, n_attribute=n_attr,
                       reference=reference)
    attr = s.attribute
    skins = [r["skin_ok"] for r in attr if r["skin_ok"] is not None]
    row = {"gender_tvd": s.mpii_gender_tvd, "race_tvd": s.mpii_race_tvd, "heldout_gender_tvd": s.heldout_gender_tvd,
           "occupation_accuracy": s.occupation_accuracy, "obedience": s.attribute_following,
           "obedience_min": min((r["gender_ok"] for r in attr), default=None),
           "skin_obedience": float(np.mean(skins)) if skins else None, "skin_obedience_min": min(skins, default=None),
           "ambiguous_rate": float(np.mean(list(s.ambiguous_rate.values()))), "toy_fid": s.toy_fid,
           "images_per_occupation": n, "attribute_images": n_attr,
           "gender_floor": floor_value("tvd", n, 2), "male_share": s.male_share,
           "gender_codes": {o: s.gender_codes[o] for o in MPII_OCCUPATIONS}}
    if base_codes is not None:
        res = paired_gender_tvd(base_codes, row["gender_codes"])
        row["paired_diff"], (row["paired_lo"], row["paired_hi"]) = res["diff"], res["ci"]
    return row


def read_scores(path: Path) -> list[dict[str, Any]]:
    """Every recorded score row (scores.jsonl, one JSON object a line)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def run(root: Path, seeds: list[int], arms: list[str], steps: list[int], n: int, n_mid: int, n_attr: int,
        guidances: list[float], extra_guidances: list[float], extra_arms: list[str]) -> None:
    """Every arm of every seed (each model scored once: scores.jsonl is the resume point, started from the
    committed docs/results/ablation_scores.jsonl on a fresh machine)."""
    if not (root / "scores.jsonl").exists() and COMMITTED_SCORES.is_file():
        root.mkdir(parents=True, exist_ok=True)
        (root / "scores.jsonl").write_text(COMMITTED_SCORES.read_text())
        log.info("started %s from %s", root / "scores.jsonl", COMMITTED_SCORES)
    for seed in seeds:
        run_seed(root, seed, arms, steps, n, n_mid, n_attr, guidances, extra_guidances, extra_arms)
        write_report(root)


def reused_rows(every: list[dict[str, Any]], seed: int, arm: str, recipe: str, steps: list[int],
                guidances: list[float], done: set[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Scores `arm` inherits from rows of the same seed and recipe under another name (a renamed arm, or a preset
    that now equals another arm), for each (steps, guidance) not yet done: such an arm is not trained again."""
    by_recipe = {(r["recipe"], r["steps"], r["guidance"]): r for r in every if r["seed"] == seed and r.get("recipe")}
    out = []
    for g in guidances:
        for k in steps:
            old = by_recipe.get((recipe, k, g))
            if (seed, arm, k, g) not in done and old is not None:
                out.append({**old, "arm": arm, "reused_from": old.get("reused_from", old["arm"])})
    return out


def run_seed(root: Path, seed: int, arms: list[str], steps: list[int], n: int, n_mid: int, n_attr: int,
             guidances: list[float], extra_guidances: list[float], extra_arms: list[str]) -> None:
    """The shared stages of one toy seed, then the base, each arm (train, then score each of its step counts)
    and each baseline."""
    from PIL import Image

    from t2i_debias.augment.schema import METADATA
    from t2i_debias.baselines.registry import make_method
    from t2i_debias.core.layout import RunLayout
    from t2i_debias.models import base_model, load_pipeline
    from t2i_debias.pipeline import run_pipeline
    from t2i_debias.stages.sota import method_inputs
    from t2i_debias.toyworld.classifier import make_classifier

    scores_path = root / "scores.jsonl"
    cfg = seed_config(root, seed)
    run_pipeline(cfg, only=["toy", "mpii", "labels", "enriched"])
    recipes = {a: recipe_of(cfg, a, steps) for a in ("base", *arms)}
    # a score counts as done only under the arm's current recipe: a changed preset is scored again
    every = read_scores(scores_path)
    recorded = [r for r in every if r["seed"] != seed or r.get("recipe") == recipes.get(r["arm"])]
    done = {(r["seed"], r["arm"], r["steps"], r["guidance"]) for r in recorded}
    base_codes = {r["guidance"]: r["gender_codes"] for r in recorded if r["seed"] == seed and r["arm"] == "base"}
    clf = make_classifier(cfg.labels)
    reference = [Image.open(p).convert("RGB") for p in sorted(Path(cfg.mpii.images_dir).glob("*.jpg"))[:1024]]
    triplets = sum(1 for line in (RunLayout(cfg.run_dir).enriched / METADATA).read_text().splitlines() if line)

    def wanted(arm: str) -> list[float]:
        return guidances + (extra_guidances if arm in ("base", *extra_arms) else [])

    def reuse(arm: str) -> bool:
        """Record the arm's scores from rows of the same recipe under another name; True when none is missing."""
        for row in reused_rows(every, seed, arm, recipes[arm], steps, wanted(arm), done):
            with open(scores_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            done.add((seed, arm, row["steps"], row["guidance"]))
            log.info("seed %d %s step %d g %g: the score of %r, the same recipe", seed, arm, row["steps"],
                     row["guidance"], row["reused_from"])
        return all((seed, arm, max(steps), g) in done for g in wanted(arm))

    def record(arm: str, k: int, model: Any, seconds: float, cpu: float, count: int) -> None:
        for g in wanted(arm):
            if (seed, arm, k, g) in done:
                continue
            t0 = time.time()
            m = load_pipeline(model) if isinstance(model, (str, Path)) else model()
            row = {"seed": seed, "arm": arm, "steps": k, "guidance": g, "recipe": recipes[arm],
                   "train_seconds": round(seconds, 1),
                   "train_cpu_seconds": round(cpu, 1), "triplets": triplets,
                   **score(m, clf, g, count, n_attr, reference, base_codes.get(g))}
            row["eval_seconds"] = round(time.time() - t0, 1)
            if arm == "base":
                base_codes[g] = row["gender_codes"]
            with open(scores_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            done.add((seed, arm, k, g))
            log.info("seed %d %s step %d g %g: tvd %.3f occ %.2f obeyed %.2f (%.0fs)", seed, arm, k, g,
                     row["gender_tvd"], row["occupation_accuracy"], row["obedience"] or float("nan"),
                     row["eval_seconds"])

    record("base", 0, base_model(cfg), 0.0, 0.0, n)
    for arm in arms:
        if arm in BASELINES:
            def method(name: str = arm) -> Any:
                return make_method(name, load_pipeline(base_model(cfg)), method_inputs(cfg))

            record(arm, 0, method, 0.0, 0.0, n)
        elif not reuse(arm):
            models, seconds, cpu = train_arm(cfg, arm, steps)
            last = max(models)
            for k in sorted(models):
                record(arm, k, models[k], seconds, cpu, n if k == last else n_mid)
        write_report(root)


def readme_block(csv_path: Path) -> str:
    """The README's method table (markers included), rendered from the committed ablation.csv."""
    import pandas as pd

    df = pd.read_csv(csv_path)
    g = 4.0 if 4.0 in set(df.guidance) else float(df.guidance.max())
    df = df[df.guidance == g]
    lines = [README_BEGIN,
             f"<!-- generated by `python scripts/ablation.py --report` from {csv_path.relative_to(ROOT).as_posix()}; "
             "do not edit by hand -->",
             f"Guidance {g:g}, {'/'.join(map(str, sorted(set(df.images_per_occupation))))} images per occupation "
             "and " + "/".join(map(str, sorted(set(df.attribute_images)))) + " per attribute prompt, on the seeds "
             "1000 + i for every model; gender tvd, skin tvd "
             "and occupation accuracy over the 4 occupations of the toy MPII copy, held-out over pilot and teacher. "
             "`floor`: the tvd of a perfectly balanced model with as many images; Δ: (model − base) gender tvd with "
             f"its paired 95% bootstrap CI. Seed {HELDOUT_SEED} was scored once, after the recipe was chosen on "
             f"seeds {', '.join(map(str, TUNING_SEEDS))}. Every arm: `docs/results/ablation.md`.",
             "",
             "| seed | model | gender tvd (floor) | Δ vs base [95% CI] | skin tvd | held-out gender tvd | occ. acc | "
             "attr. obeyed mean / min | toy FID |", "|" + "---|" * 9]
    for seed in sorted(df.seed.unique()):
        for arm, name in README_ROWS.items():
            rows = df[(df.seed == seed) & (df.arm == arm)].sort_values("steps")
            if rows.empty:
                continue
            r = rows.iloc[-1]
            lines.append(f"| {seed} | {name} | {_fmt(r.gender_tvd)} ({_fmt(r.gender_floor)}) | {_ci(r)} | "
                         f"{_fmt(r.race_tvd)} | {_fmt(r.heldout_gender_tvd)} | {_fmt(r.occupation_accuracy, 2)} | "
                         f"{_fmt(r.obedience, 2)} / {_fmt(r.obedience_min, 2)} | {_fmt(r.toy_fid, 0)} |")
    return "\n".join([*lines, README_END])


def update_readme(check: bool = False) -> bool:
    """Write (or with `check`, only compare) the README's method table; True when it already matched."""
    from t2i_debias.core.files import atomic_write_text
    from t2i_debias.report.readme_block import replace_block

    readme = ROOT / "README.md"
    text = readme.read_text(encoding="utf-8")
    new = replace_block(text, readme_block(ROOT / "docs" / "results" / "ablation.csv"), str(readme),
                        README_BEGIN, README_END)
    if new != text and not check:
        atomic_write_text(readme, new)
    return new == text


def write_report(root: Path) -> None:
    """docs/results/ablation.csv (every score) and ablation.md (per seed, then means over the seeds)."""
    import pandas as pd

    from t2i_debias.core.files import atomic_write_text
    from t2i_debias.core.provenance import git_commit

    rows = read_scores(root / "scores.jsonl")
    if not rows:
        raise SystemExit(f"{root / 'scores.jsonl'}: no scores recorded yet")
    # a rescored model (changed recipe) appends a new row: the last one stands
    df = pd.DataFrame(rows).drop_duplicates(subset=["seed", "arm", "steps", "guidance"], keep="last")
    # rows under a retired arm name stay in the scores (reused by recipe) but not in the tables
    df = df[df.arm.isin(["base", *ARMS, *BASELINES])]
    for c in CSV_COLUMNS:
        if c not in df.columns:
            df[c] = None
    out = ROOT / "docs" / "results"
    out.mkdir(parents=True, exist_ok=True)
    df[CSV_COLUMNS].to_csv(out / "ablation.csv", index=False, float_format="%.4f")
    kept = {(r["seed"], r["arm"], r["steps"], r["guidance"]): r for r in rows}  # the last row stands, as above
    atomic_write_text(COMMITTED_SCORES, "".join(json.dumps(r) + "\n" for r in kept.values()))
    md = report_lines(df, root, git_commit(ROOT, short=7, mark_dirty=False))
    (out / "ablation.md").write_text("\n".join(md) + "\n")
    update_readme()
    log.info("wrote %s, %s and the README's method table", out / "ablation.md", out / "ablation.csv")


def _fmt(v: Any, d: int = 3) -> str:
    """A number with d decimals, "n/a" for None or NaN."""
    return "n/a" if v is None or v != v else f"{v:.{d}f}"


def _ci(r: Any) -> str:
    """(model − base) gender tvd with its paired CI, "–" where not computed (the base itself)."""
    if r.paired_lo is None or r.paired_lo != r.paired_lo:
        return "–"
    return f"{r.paired_diff:+.3f} [{r.paired_lo:+.3f}, {r.paired_hi:+.3f}]"


def seed_table(sub: Any, order: dict[str, int]) -> list[str]:
    """One seed's rows: every arm and step count at every guidance it was scored at."""
    lines = ["| arm | steps | guidance | gender tvd (floor) | paired Δ vs base [95% CI] | skin tvd | held-out gender tvd | "
             "occ. acc | obeyed mean / min | skin obeyed mean / min | ambiguous | toy FID | train s (CPU s) | "
             "images/occ, /attr. prompt |", "|" + "---|" * 14]
    sub = sub.assign(_o=sub.arm.map(lambda a: order.get(a, 99))).sort_values(["guidance", "_o", "steps"])
    for r in sub.itertuples():
        lines.append(f"| {r.arm} | {r.steps} | {r.guidance:g} | {_fmt(r.gender_tvd)} ({_fmt(r.gender_floor)}) | "
                     f"{_ci(r)} | {_fmt(r.race_tvd)} | {_fmt(r.heldout_gender_tvd)} | {_fmt(r.occupation_accuracy, 2)} | "
                     f"{_fmt(r.obedience, 2)} / {_fmt(r.obedience_min, 2)} | {_fmt(r.skin_obedience, 2)} / "
                     f"{_fmt(r.skin_obedience_min, 2)} | {_fmt(r.ambiguous_rate, 2)} | {_fmt(r.toy_fid, 0)} | "
                     f"{_fmt(r.train_seconds, 0)} ({_fmt(r.train_cpu_seconds, 0)}) | "
                     f"{r.images_per_occupation}, {r.attribute_images} |")
    return lines


def mean_table(df: Any, seeds: list[int], order: dict[str, int], g: float) -> list[str]:
    """Means over the seeds of the arms every seed has, at guidance g, with Δ against the base's mean."""
    sub = df[(df.guidance == g) & df.seed.isin(seeds)]
    lines = ["| arm | steps | gender tvd | Δ vs base | skin tvd | Δ skin | held-out gender tvd | Δ held-out | occ. acc | "
             "obeyed mean / min | toy FID | train s |", "|" + "---|" * 12]
    base = sub[sub.arm == "base"].mean(numeric_only=True)
    keys = sorted({(r.arm, r.steps) for r in sub.itertuples()}, key=lambda k: (order.get(k[0], 99), k[1]))
    for arm, k in keys:
        cell = sub[(sub.arm == arm) & (sub.steps == k)]
        if set(cell.seed) != set(seeds):
            continue  # a mean over seeds only where every seed has the row
        m = cell.mean(numeric_only=True)

        def delta(col: str, m: Any = m, arm: str = arm) -> str:
            return "–" if arm == "base" else f"{100 * (m[col] / base[col] - 1):+.0f}%"

        lines.append(f"| {arm} | {k} | {_fmt(m.gender_tvd)} | {delta('gender_tvd')} | {_fmt(m.race_tvd)} | "
                     f"{delta('race_tvd')} | {_fmt(m.heldout_gender_tvd)} | {delta('heldout_gender_tvd')} | "
                     f"{_fmt(m.occupation_accuracy, 2)} | {_fmt(m.obedience, 2)} / {_fmt(m.obedience_min, 2)} | "
                     f"{_fmt(m.toy_fid, 0)} | {_fmt(m.train_seconds, 0)} |")
    return lines


def goals_table(df: Any, seeds: list[int], g: float) -> list[str]:
    """Issue 21's goals for `recommended` at guidance g, per seed, against the best baseline of that seed."""
    lines = ["| seed | gender tvd ≤ best baseline's | occ. ≥ 0.95 | toy FID ≤ best baseline's | skin tvd cut ≥ 30% | "
             "obeyed mean, min ≥ base − 0.05 | held-out cut ≥ 30% |", "|---|---|---|---|---|---|---|"]
    for s in seeds:
        sub = df[(df.seed == s) & (df.guidance == g)]
        b, r = sub[sub.arm == "base"], sub[sub.arm == "recommended"].sort_values("steps")
        bl = sub[sub.arm.isin(BASELINES)]
        if b.empty or r.empty or bl.empty:
            continue
        b, r = b.iloc[0], r.iloc[-1]
        best = bl.sort_values("gender_tvd").iloc[0]

        def ok(cond: bool, text: str) -> str:
            return f"{'pass' if cond else '**miss**'}: {text}"

        lines.append(
            f"| {s} | {ok(r.gender_tvd <= best.gender_tvd, f'{_fmt(r.gender_tvd)} vs {_fmt(best.gender_tvd)} ({best.arm})')} | "
            f"{ok(r.occupation_accuracy >= 0.95, _fmt(r.occupation_accuracy, 2))} | "
            f"{ok(r.toy_fid <= bl.toy_fid.min(), f'{_fmt(r.toy_fid, 0)} vs {_fmt(bl.toy_fid.min(), 0)}')} | "
            f"{ok(r.race_tvd <= 0.7 * b.race_tvd, f'{100 * (1 - r.race_tvd / b.race_tvd):.0f}%')} | "
            f"{ok(r.obedience >= b.obedience - 0.05 and r.obedience_min >= b.obedience_min - 0.05, f'{_fmt(r.obedience, 2)}, {_fmt(r.obedience_min, 2)} vs {_fmt(b.obedience, 2)}, {_fmt(b.obedience_min, 2)}')} | "
            f"{ok(r.heldout_gender_tvd <= 0.7 * b.heldout_gender_tvd, f'{100 * (1 - r.heldout_gender_tvd / b.heldout_gender_tvd):.0f}%')} |")
    return lines


def report_lines(df: Any, root: Path, commit: str) -> list[str]:
    """The Markdown of ablation.md."""
    import tomllib

    order = {a: i for i, a in enumerate(["base", *ARMS, *BASELINES])}
    seeds = sorted(int(x) for x in df["seed"].unique())
    g_eval = 4.0 if 4.0 in set(df.guidance) else max(df.guidance)
    tuned = [s for s in seeds if s in TUNING_SEEDS]
    toy = [tomllib.loads((root / f"seed{s}" / "config.toml").read_text())["toy"] for s in seeds
           if (root / f"seed{s}" / "config.toml").is_file()]
    md = [
        "# Training ablation (toy world)",
        "",
        f"Generated by `python scripts/ablation.py` (commit {commit}); every number, and each model's per-image "
        "gender codes, is in `ablation.csv` and `ablation_scores.jsonl` (from which a rerun resumes).",
        "",
        f"- Toy seeds {', '.join(map(str, seeds))}, on the shipped toy bases ({toy[0]['base_steps']} steps)"
        if toy else f"- Toy seeds {', '.join(map(str, seeds))}",
        "  : toy world -> mpii -> labels -> enriched (shared by the arms of a seed) -> models (the engine, "
        "`configs/toy.toml` + the arm's change). Seeds "
        f"{', '.join(map(str, TUNING_SEEDS))} chose the recipe; seed {HELDOUT_SEED} was scored once, after.",
        "- Scores: `toyworld.evaluate.score_pipeline`, the toy classifier on generated images; DDIM 20 steps; the same "
        "prompts and seeds (1000 + i) for every model. gender tvd, skin tvd and occupation accuracy are over the 4 "
        "occupations of the toy MPII copy; held-out gender tvd over pilot and teacher (never in the training data). "
        "`floor`: the gender tvd of a perfectly balanced model at that many images. The paired Δ is (model − base) "
        "gender tvd, its 95% CI from 1,000 paired bootstrap resamples of the seeds (`metrics/paired.py`).",
        "- Obedience: the share of images giving the asked gender over the 48 attribute prompts (6 occupations × 2 "
        "genders × (no skin tone + 3)), mean and minimum over prompts; skin obedience over the 36 that name a skin "
        "tone. Baselines are applied to these prompts as a user would apply them to every prompt.",
        "- `train s`: wall seconds of the arm's training on the 2-core machine (CPU seconds beside it); other jobs "
        "may have shared the machine (the load is not recorded), so read them as rough.",
        "",
        "Arms:",
        "",
    ]
    ran = set(df.arm)
    md += [f"- **{a}**: {d}" + ("" if a in ran else " — *not run*") for a, (d, _) in ARMS.items()]
    md += [f"- **{b}**: the SOTA baseline, `[sota]` settings of configs/toy.toml" + ("" if b in ran else " — *not run*")
           for b in BASELINES]
    md += [f"- **{a}**: not run: {why}" for a, why in NOT_RUN.items()]
    md += ["", f"## Issue 21's goals (recommended, guidance {g_eval:g})", "", *goals_table(df, seeds, g_eval)]
    if tuned:
        md += ["", f"## Mean over the tuning seeds {', '.join(map(str, tuned))} (guidance {g_eval:g})", "",
               *mean_table(df, tuned, order, g_eval)]
    for s in seeds:
        md += ["", f"## Seed {s}" + (" (held out: scored once, after the recipe was chosen)" if s == HELDOUT_SEED
                                     else ""), "", *seed_table(df[df.seed == s], order)]
    return md


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", type=Path, default=ROOT / "runs" / "ablation", help="run folders and scores.jsonl")
    p.add_argument("--seeds", type=int, nargs="*", default=list(TUNING_SEEDS))
    p.add_argument("--arms", nargs="*", default=[*ARMS, *BASELINES],
                   help=f"arms to run (default all: {[*ARMS, *BASELINES]})")
    p.add_argument("--steps", type=int, nargs="*", default=[200], help="step counts (snapshots of one run)")
    p.add_argument("--images", type=int, default=64, help="images per occupation at the last step count")
    p.add_argument("--images-mid", type=int, default=32, help="images per occupation at earlier step counts")
    p.add_argument("--attribute-images", type=int, default=8, help="images per attribute prompt (obedience)")
    p.add_argument("--guidance", type=float, nargs="*", default=[4.0], help="guidance scales of every arm")
    p.add_argument("--extra-guidance", type=float, nargs="*", default=[],
                   help="more guidance scales for the base and --extra-arms")
    p.add_argument("--extra-arms", nargs="*", default=["control", "recommended"],
                   help="arms also scored at --extra-guidance")
    p.add_argument("--report", action="store_true", help="only rewrite docs/results/ablation.{md,csv}")
    args = p.parse_args(argv)
    from t2i_debias.cli import setup_env, setup_logging
    from t2i_debias.toyworld import plugin

    setup_env()
    setup_logging()
    plugin.register()  # `toy:base` and the "toy" labels backend, also where a step runs outside run_pipeline
    unknown = [a for a in [*args.arms, *args.extra_arms] if a not in ARMS and a not in BASELINES]
    if unknown:
        p.error(f"unknown arms {unknown}; known: {[*ARMS, *BASELINES]}")
    if args.report:
        write_report(args.root)
        return
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "0")) or torch.get_num_threads())
    run(args.root, args.seeds, args.arms, sorted(set(args.steps)), args.images, args.images_mid,
        args.attribute_images, args.guidance, args.extra_guidance, args.extra_arms)


if __name__ == "__main__":
    main()
