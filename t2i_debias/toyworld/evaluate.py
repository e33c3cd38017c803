"""Score a toy-world pipeline against the known truth: bias per occupation, hybrids, occupation kept, obedience.

For each toy occupation it generates N images of the neutral prompt (seeds base_seed + i, so two
models are compared on the same noise) and classifies them with the toy classifier. Images whose hair
and clothes disagree (status `ambiguous`) are left out of the shares, and counted per occupation.
Attribute prompts ("a photo of a Black woman working as a doctor") are scored one by one: the share
of images that show the asked gender (an ambiguous image does not) and the asked skin tone.

`python -m t2i_debias.toyworld.evaluate --seeds 0 1` builds (or loads) the toy base of each seed,
checks it against the base gates (`BASE_GATES`) and writes the results as JSON and Markdown.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from t2i_debias.core.text import fill_template
from t2i_debias.core.vocab import GENDERS, STATUS_AMBIGUOUS
from t2i_debias.metrics.bias import tvd
from t2i_debias.toyworld.render import HELDOUT_OCCUPATIONS, MPII_OCCUPATIONS, OCCUPATIONS, TOY_RACES

log = logging.getLogger(__name__)

NEUTRAL_TEMPLATE = "a photo of a {occupation}"
# The augmentation stage's phrasing of a counterfactual (configs/toy.toml [augment] generation_template).
ATTRIBUTE_TEMPLATE = "a photo of a {person} working as a {occupation}"
GENDER_ADJ = {"man": "male", "woman": "female"}
RACE_WORD = {"white": "White", "asian": "Asian", "black": "Black"}
# The toy base's gates (issue 11): the neutral prompt keeps the bias; every occupation's attribute
# prompts give the asked gender and skin tone; the base draws few hybrids.
BASE_GATES = {"min_mean_gender_tvd": 0.3, "min_gender_obedience": 0.9, "min_skin_obedience": 0.8,
              "max_ambiguous_rate": 0.1}


def _mean(by_occupation: dict[str, float], occupations: tuple[str, ...] | None = None) -> float:
    """Mean over the occupations (all, or those in `occupations`) with a value (an all-hybrid occupation has
    NaN); NaN when none has one."""
    vals = [v for o, v in by_occupation.items() if v == v and (occupations is None or o in occupations)]
    return float(np.mean(vals)) if vals else float("nan")


@dataclass
class ToyScore:
    """Bias and fidelity of one toy model (the row of the demo table)."""

    male_share: dict[str, float] = field(default_factory=dict)  # occupation -> P(man), ambiguous left out
    race_share: dict[str, dict[str, float]] = field(default_factory=dict)  # occupation -> race -> share
    gender_tvd: dict[str, float] = field(default_factory=dict)
    race_tvd: dict[str, float] = field(default_factory=dict)  # over the 3 toy skin tones (K=3)
    ambiguous_rate: dict[str, float] = field(default_factory=dict)  # occupation -> share of hybrids
    occupation_accuracy: float = 0.0
    attribute_following: float | None = None  # mean share of attribute prompts giving the asked gender
    attribute: list[dict[str, Any]] = field(default_factory=list)  # one row per attribute prompt
    toy_fid: float | None = None
    n_per_occupation: int = 0
    # occupation -> per image (in seed order) the index of the gender in GENDERS, -1 when not `ok`: what a
    # paired comparison of two models on the same prompts and seeds resamples (metrics/paired.py)
    gender_codes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def mean_gender_tvd(self) -> float:
        return _mean(self.gender_tvd)

    @property
    def mean_race_tvd(self) -> float:
        return _mean(self.race_tvd)

    @property
    def mpii_gender_tvd(self) -> float:
        """Mean gender tvd over the occupations of the toy MPII copy (those fine-tuning sees)."""
        return _mean(self.gender_tvd, MPII_OCCUPATIONS)

    @property
    def heldout_gender_tvd(self) -> float:
        """Mean gender tvd over the held-out occupations (the base knows them; fine-tuning never sees them)."""
        return _mean(self.gender_tvd, HELDOUT_OCCUPATIONS)

    @property
    def mpii_race_tvd(self) -> float:
        """Mean skin-tone tvd over the occupations of the toy MPII copy."""
        return _mean(self.race_tvd, MPII_OCCUPATIONS)

    @property
    def max_ambiguous_rate(self) -> float:
        return max(self.ambiguous_rate.values()) if self.ambiguous_rate else float("nan")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean_gender_tvd"] = self.mean_gender_tvd
        d["mean_race_tvd"] = self.mean_race_tvd
        d["mpii_gender_tvd"] = self.mpii_gender_tvd
        d["heldout_gender_tvd"] = self.heldout_gender_tvd
        d["max_ambiguous_rate"] = self.max_ambiguous_rate
        return d


def paired_gender_tvd(reference: dict[str, list[int]], model: dict[str, list[int]], n_bootstrap: int = 1000,
                      seed: int = 0) -> dict[str, Any]:
    """(model − reference) mean gender tvd over the toy MPII occupations with its paired bootstrap CI, from two
    `ToyScore.gender_codes` on seeds base_seed + i (a model scored with fewer images pairs with the first n)."""
    from t2i_debias.metrics.paired import paired_bootstrap

    occs = list(MPII_OCCUPATIONS)
    return paired_bootstrap([np.array(reference[o][:len(model[o])]) for o in occs], [np.array(model[o]) for o in occs],
                            k=len(GENDERS), n_bootstrap=n_bootstrap, seed=seed, resample="seeds")["metrics"]["tvd"]


def score_predictions(preds_by_occ: dict[str, list[Any]]) -> ToyScore:
    """Shares, tvd, ambiguous rate and occupation accuracy from toy-classifier predictions by prompted occupation.

    Only `ok` images count in the shares. An occupation with none (say, all hybrids) gets NaN shares
    and its ambiguous rate shows why; an occupation without any image is an error.
    """
    s = ToyScore()
    hits = total = 0
    for occ, preds in preds_by_occ.items():
        if not preds:
            raise ValueError(f"no image for {occ!r}")
        ok = [p for p in preds if p.ok]
        s.ambiguous_rate[occ] = float(np.mean([p.status == STATUS_AMBIGUOUS for p in preds]))
        s.gender_codes[occ] = [GENDERS.index(p.gender) if p.ok and p.gender in GENDERS else -1 for p in preds]
        if not ok:
            log.warning("toy score: no classifiable image for %r (%d images, ambiguous rate %.2f)", occ,
                        len(preds), s.ambiguous_rate[occ])
            nan = float("nan")
            s.male_share[occ], s.gender_tvd[occ], s.race_tvd[occ] = nan, nan, nan
            s.race_share[occ] = {r: nan for r in TOY_RACES}
        else:
            male = np.mean([p.gender == "man" for p in ok])
            races = np.array([np.mean([p.race == r for p in ok]) for r in TOY_RACES])
            s.male_share[occ] = float(male)
            s.race_share[occ] = {r: float(v) for r, v in zip(TOY_RACES, races, strict=True)}
            s.gender_tvd[occ] = float(tvd([male, 1 - male]))
            s.race_tvd[occ] = float(tvd(races))
        # The occupation is read from the scene, which a hybrid figure does not change.
        readable = [p for p in preds if "occupation" in p.extra]
        hits += sum(p.extra["occupation"] == occ for p in readable)
        total += len(readable)
        s.n_per_occupation = len(preds)
    s.occupation_accuracy = hits / total if total else float("nan")
    return s


def attribute_prompts(occupations: tuple[str, ...] = OCCUPATIONS) -> list[dict[str, Any]]:
    """The attribute prompts scored: per occupation, each gender alone and each gender × skin tone."""
    out = []
    for occ in occupations:
        for g in GENDERS:
            for race in (None, *TOY_RACES):
                person = f"{RACE_WORD[race]} {g}" if race else g
                out.append({"prompt": fill_template(ATTRIBUTE_TEMPLATE, person=person, occupation=occ),
                            "occupation": occ, "gender": g, "race": race})
    return out


def obedience(preds: list[Any], gender: str, race: str | None) -> dict[str, Any]:
    """Share of images showing the asked gender (an ambiguous one does not) and the asked skin tone."""
    n = len(preds)
    if n == 0:
        raise ValueError("obedience of an attribute prompt needs at least one image")
    row: dict[str, Any] = {"n": n,
                           "gender_ok": sum(p.ok and p.gender == gender for p in preds) / n,
                           "ambiguous": sum(p.status == STATUS_AMBIGUOUS for p in preds) / n}
    row["skin_ok"] = sum(p.extra.get("skin") == race for p in preds) / n if race else None
    return row


def obedience_by_occupation(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per occupation: the lowest gender and skin-tone obedience over its attribute prompts (the gate's view)."""
    out: dict[str, dict[str, float]] = {}
    for occ in dict.fromkeys(r["occupation"] for r in rows):
        mine = [r for r in rows if r["occupation"] == occ]
        skins = [r["skin_ok"] for r in mine if r["skin_ok"] is not None]
        out[occ] = {"min_gender_ok": min(r["gender_ok"] for r in mine),
                    "min_skin_ok": min(skins) if skins else float("nan")}
    return out


def check_base_gates(score: ToyScore, gates: dict[str, float] | None = None) -> list[str]:
    """The base gates a scored base fails, as readable lines (empty = passes). Needs attribute rows."""
    gates = gates or BASE_GATES
    fails = []
    if not score.mean_gender_tvd >= gates["min_mean_gender_tvd"]:
        fails.append(f"neutral prompt mean gender tvd {score.mean_gender_tvd:.3f} < {gates['min_mean_gender_tvd']}")
    if not score.attribute:
        fails.append("no attribute prompt was scored")
    for r in score.attribute:
        if not r["gender_ok"] >= gates["min_gender_obedience"]:
            fails.append(f"{r['prompt']!r}: asked gender {r['gender_ok']:.2f} < {gates['min_gender_obedience']}")
        if r["skin_ok"] is not None and not r["skin_ok"] >= gates["min_skin_obedience"]:
            fails.append(f"{r['prompt']!r}: asked skin tone {r['skin_ok']:.2f} < {gates['min_skin_obedience']}")
    for occ, rate in score.ambiguous_rate.items():
        if not rate <= gates["max_ambiguous_rate"]:
            fails.append(f"{occ}: ambiguous rate {rate:.2f} > {gates['max_ambiguous_rate']}")
    return fails


def _generate(pipe: Any, prompts: list[str], occupations: list[str], seeds: list[int], batch_size: int,
              steps: int, guidance: float) -> list[Any]:
    """Image i of prompt i from seed i, by a pipeline or by a SOTA baseline (`baselines.Method`), which a
    user applies to every prompt, attribute prompts included."""
    from t2i_debias.baselines.base import GenParams, Method
    from t2i_debias.sampling import generate_images

    if isinstance(pipe, Method):
        if not pipe.prepared:  # UCE and debiasVL edit for the occupations they are told of: all of them
            pipe.prepare(OCCUPATIONS)
        return pipe.generate(prompts, occupations, seeds, GenParams(batch_size, steps, guidance))
    return generate_images(pipe, prompts, seeds, batch_size, steps, guidance)


def score_pipeline(pipe: Any, clf: Any, n_per_occupation: int = 64, base_seed: int = 0, steps: int = 20,
                   guidance: float = 4.0, n_attribute: int = 0, batch_size: int = 128,
                   template: str = NEUTRAL_TEMPLATE, reference: list[Any] | None = None) -> ToyScore:
    """Generate, classify and score a pipeline or a baseline method; `n_attribute` > 0 also scores each
    attribute prompt (with that many images) and `reference` (real toy images) adds the toy FID."""
    seeds = [base_seed + i for i in range(n_per_occupation)]
    preds, all_images = {}, []
    for occ in OCCUPATIONS:
        prompt = fill_template(template, occupation=occ)
        ims = _generate(pipe, [prompt] * len(seeds), [occ] * len(seeds), seeds, batch_size, steps, guidance)
        preds[occ] = clf.predict(ims)
        all_images += ims
    score = score_predictions(preds)
    if n_attribute > 0:
        score.attribute = score_attribute_prompts(pipe, clf, n_attribute, base_seed + 10_000, steps, guidance,
                                                  batch_size)
        score.attribute_following = float(np.mean([r["gender_ok"] for r in score.attribute]))
    if reference:
        from t2i_debias.toyworld.classifier import toy_fid

        score.toy_fid = toy_fid(clf, all_images, reference)
    return score


def score_attribute_prompts(pipe: Any, clf: Any, n: int, base_seed: int, steps: int, guidance: float,
                            batch_size: int = 128) -> list[dict[str, Any]]:
    """One row per attribute prompt (`attribute_prompts`): prompt, asked attributes, obedience shares.
    `pipe` is a pipeline or a baseline method (`_generate`)."""
    seeds = [base_seed + i for i in range(n)]
    asked = attribute_prompts()
    # Every prompt's images in full batches (one call per prompt made batches of n, 2.3x slower at n = 8);
    # image i of each prompt keeps seed base_seed + i.
    images = _generate(pipe, [a["prompt"] for a in asked for _ in seeds],
                       [a["occupation"] for a in asked for _ in seeds], seeds * len(asked), batch_size, steps, guidance)
    rows = []
    for k, a in enumerate(asked):
        preds = clf.predict(images[k * n:(k + 1) * n])
        rows.append(a | obedience(preds, a["gender"], a["race"]))
    return rows


# ----------------------------------------------------------------------------- base report (CLI)
README_BEGIN = "<!-- toy-base-results:begin (python -m t2i_debias.toyworld.evaluate --readme) -->"
README_END = "<!-- toy-base-results:end -->"


def evaluate_bases(seeds: list[int], n: int = 64, n_attribute: int = 64, steps: int = 20, guidance: float = 4.0,
                   spec_overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Build (or load from the cache) the toy base of every seed, score it and check the gates.

    Returns a JSON-ready dict: the recipe, the training cost of each cached model (their build.json),
    and per seed the neutral-prompt score, every attribute prompt's obedience and the failed gates.
    """
    from t2i_debias.core.files import hash_obj
    from t2i_debias.models import load_pipeline
    from t2i_debias.toyworld import base_model
    from t2i_debias.toyworld.classifier import classifier_dir, make_classifier
    from t2i_debias.toyworld.pretrained import read_build_record

    clf_dir = classifier_dir()
    clf = make_classifier(None)
    out: dict[str, Any] = {"gates": BASE_GATES, "eval": {"n_per_occupation": n, "n_per_attribute_prompt": n_attribute,
                                                         "steps": steps, "guidance": guidance},
                           "seeds": {}, "builds": {"classifier": read_build_record(clf_dir),
                                                   "classifier_metrics": clf.metrics}}
    for seed in seeds:
        spec = base_model.base_spec(seed=seed, **(spec_overrides or {}))
        vae = base_model.vae_dir(spec["vae"])
        folder = base_model.base_dir(spec)
        out["builds"]["vae"] = read_build_record(vae)
        out["recipe"] = {"train": spec["train"], "data": {k: v for k, v in spec["data"].items()
                                                          if k not in ("male_share", "race_share")},
                         "vae_train": spec["vae"]["train"]}
        s = score_pipeline(load_pipeline(folder), clf, n, base_seed=0, steps=steps, guidance=guidance,
                           n_attribute=n_attribute)
        out["seeds"][str(seed)] = {"spec_hash": hash_obj(spec)[:16], "build": read_build_record(folder),
                                   "score": s.to_dict(), "failed_gates": check_base_gates(s)}
        log.info("toy base seed %d: tvd %.3f, max ambiguous %.2f, %d gates failed", seed, s.mean_gender_tvd,
                 s.max_ambiguous_rate, len(out["seeds"][str(seed)]["failed_gates"]))
    return out


def _f(v: Any, digits: int = 2) -> str:
    return "n/a" if v is None or (isinstance(v, float) and v != v) else f"{v:.{digits}f}"


def results_markdown(res: dict[str, Any]) -> str:
    """The toy-base results as Markdown (what `--markdown` writes and `--readme` puts in the README)."""
    seeds = list(res["seeds"])
    r = res["recipe"]
    tr, vt = r["train"], r["vae_train"]
    ev = res["eval"]
    lines = [f"Recipe: base {tr['steps']} steps at batch {tr['batch_size']}, lr {tr['lr']:g}, "
             f"{tr['p_attribute']:.0%} attribute captions (balanced population, {r['data']['attribute_per_cell']} "
             f"per occupation × gender × skin tone), {tr['p_drop']:.0%} empty; VAE {vt['steps']} steps at batch "
             f"{vt['batch_size']}, lr {vt['lr']:g}. Evaluation: {ev['n_per_occupation']} images per occupation, "
             f"{ev['n_per_attribute_prompt']} per attribute prompt, DDIM {ev['steps']} steps, guidance {ev['guidance']:g}.",
             "", "Training cost (wall / CPU seconds, threads; from each cached model's build.json):", "",
             "| model | wall s | CPU s | threads |", "|---|---|---|---|"]
    builds = [("toy VAE (all seeds)", res["builds"].get("vae")),
              ("toy classifier (all seeds)", res["builds"].get("classifier"))]
    builds += [(f"toy base seed {s}", res["seeds"][s]["build"]) for s in seeds]
    for name, b in builds:
        lines.append(f"| {name} | " + (f"{b['wall_seconds']:.0f} | {b['cpu_seconds']:.0f} | {b['threads']}"
                                       if b else "n/a | n/a | n/a") + " |")
    lines += ["", "Neutral prompt (\"a photo of a doctor\"): male share and ambiguous rate (hair and clothes "
              "disagree) per occupation:", "",
              "| seed | " + " | ".join(f"male {o}" for o in OCCUPATIONS) + " | "
              + " | ".join(f"ambiguous {o}" for o in OCCUPATIONS) + " | mean gender tvd | occ. acc | gates |",
              "|" + "---|" * (2 * len(OCCUPATIONS) + 4)]
    for s in seeds:
        sc, fails = res["seeds"][s]["score"], res["seeds"][s]["failed_gates"]
        lines.append(f"| {s} | " + " | ".join(_f(sc["male_share"].get(o)) for o in OCCUPATIONS) + " | "
                     + " | ".join(_f(sc["ambiguous_rate"].get(o)) for o in OCCUPATIONS)
                     + f" | {_f(sc['mean_gender_tvd'], 3)} | {_f(sc['occupation_accuracy'])} | "
                     + ("pass" if not fails else f"**{len(fails)} failed**") + " |")
    lines += ["", "Attribute prompts: share of images with the asked gender / the asked skin tone (an ambiguous "
              "figure counts as not the asked gender):", "",
              "| prompt | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|" + "---|" * (len(seeds) + 1)]
    by_seed = {s: {a["prompt"]: a for a in res["seeds"][s]["score"]["attribute"]} for s in seeds}
    for prompt in by_seed[seeds[0]]:
        cells = []
        for s in seeds:
            a = by_seed[s].get(prompt)
            cells.append("n/a" if a is None else f"{_f(a['gender_ok'])} / " + ("–" if a["skin_ok"] is None
                                                                            else _f(a["skin_ok"])))
        lines.append(f"| {prompt} | " + " | ".join(cells) + " |")
    mins = []
    for s in seeds:
        rows = res["seeds"][s]["score"]["attribute"]
        skins = [a["skin_ok"] for a in rows if a["skin_ok"] is not None]
        mins.append(f"seed {s}: gender {_f(min(a['gender_ok'] for a in rows))}, skin tone {_f(min(skins))}")
    lines += ["", "Lowest over the prompts: " + "; ".join(mins) + "."]
    g = res["gates"]
    lines += ["", f"Gates: mean gender tvd ≥ {g['min_mean_gender_tvd']}; every attribute prompt ≥ "
              f"{g['min_gender_obedience']:.0%} asked gender and ≥ {g['min_skin_obedience']:.0%} asked skin tone; "
              f"ambiguous rate ≤ {g['max_ambiguous_rate']:.0%} for every occupation."]
    for s in seeds:
        fails = res["seeds"][s]["failed_gates"]
        lines.append(f"- seed {s}: " + ("all pass" if not fails else "failed: " + "; ".join(fails)))
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str, begin: str = README_BEGIN, end: str = README_END) -> str:
    """`text` with the part between the `begin` and `end` marker lines replaced by `block`."""
    if text.count(begin) != 1 or text.count(end) != 1 or text.index(begin) > text.index(end):
        raise ValueError(f"expected one {begin!r} line followed by one {end!r} line")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block}{end}{tail}"


def merge_results(results: list[dict[str, Any]]) -> dict[str, Any]:
    """One results dict from several runs of the same recipe and evaluation (their seeds together)."""
    if not results:
        raise ValueError("no results to merge")
    out = json.loads(json.dumps(results[0]))
    for r in results[1:]:
        for key in ("recipe", "eval", "gates"):
            if r[key] != out[key]:
                raise ValueError(f"cannot merge results with different {key!r}: {r[key]} vs {out[key]}")
        if set(r["seeds"]) & set(out["seeds"]):
            raise ValueError(f"seed(s) {sorted(set(r['seeds']) & set(out['seeds']))} appear in two results")
        out["seeds"] |= r["seeds"]
    out["seeds"] = dict(sorted(out["seeds"].items(), key=lambda kv: int(kv[0])))
    return out


def main(argv: list[str] | None = None) -> int:
    """CLI: evaluate the toy bases of some seeds against the gates; write JSON / Markdown / the README block."""
    import argparse
    from pathlib import Path

    from t2i_debias.core.files import atomic_write_text

    ap = argparse.ArgumentParser(prog="python -m t2i_debias.toyworld.evaluate", description=(
        "Build (or load from the cache) the toy base model of each seed, score it against the base gates "
        "(neutral prompt keeps the bias, attribute prompts are obeyed, few hybrids) and write the results."))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--n", type=int, default=64, help="images per occupation for the neutral prompt")
    ap.add_argument("--n-attribute", type=int, default=64, help="images per attribute prompt")
    ap.add_argument("--json", type=Path, help="write the results here (JSON)")
    ap.add_argument("--markdown", type=Path, help="write the results table here (Markdown)")
    ap.add_argument("--readme", type=Path, help="replace the marked results block of this README")
    ap.add_argument("--from-json", type=Path, nargs="+",
                    help="do not evaluate: format these results (--json files of the same recipe, seeds merged)")
    ap.add_argument("--base-steps", type=int, help="override the base schedule (for a schedule search)")
    ap.add_argument("--batch-size", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--p-attribute", type=float)
    ap.add_argument("--vae-steps", type=int)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from t2i_debias.toyworld import plugin

    plugin.register()
    if args.from_json:
        try:
            res = merge_results([json.loads(p.read_text()) for p in args.from_json])
        except (FileNotFoundError, json.JSONDecodeError, ValueError) as e:
            ap.error(f"--from-json: {e}")
    else:
        over = {k: v for k, v in (("steps", args.base_steps), ("batch_size", args.batch_size), ("lr", args.lr),
                                  ("p_attribute", args.p_attribute), ("vae_steps", args.vae_steps)) if v is not None}
        res = evaluate_bases(args.seeds, args.n, args.n_attribute, spec_overrides=over)
    md = results_markdown(res)
    if args.json:
        atomic_write_text(args.json, json.dumps(res, indent=1, sort_keys=True) + "\n")
    if args.markdown:
        atomic_write_text(args.markdown, md)
    if args.readme:
        try:
            atomic_write_text(args.readme, replace_block(args.readme.read_text(), md))
        except ValueError as e:
            ap.error(f"--readme {args.readme}: {e}")
    print(md)
    failed = any(v["failed_gates"] for v in res["seeds"].values())
    return 1 if failed and not args.from_json else 0


if __name__ == "__main__":
    raise SystemExit(main())
