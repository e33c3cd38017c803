"""The SOTA comparison stage (DESIGN.md §5): every method on the same base model, prompts, seeds,
classifier and metrics -> `sota/comparison.csv`, `sota/comparison.md` and plots.

- "base" and "ours" (each trained mode under models/) are the evaluation stage's own models: their
  images, bias and quality come from t2i_debias.sampling / metrics.summary / metrics.quality, per model.
- Each baseline in `sota.methods` generates into `generated/<method>/` with the same layout
  (images/<prompt_id>/<seed>.png + metadata.csv), through the same folder generator (resume and
  sharding included), then goes through the same bias and quality code as any model.
- A method that cannot run on this base (Shen et al. off SD 1.5) is a row with its reason, never a gap.
- Every row carries two paired comparisons on the same (prompt, seed) pairs: against the base (from its
  bias summary) and against ours (the last trained mode, computed here from the bias predictions).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from t2i_debias.baselines import METHODS, GenParams, NotApplicable, make_method
from t2i_debias.metrics.bias import METRIC_INFO
from t2i_debias.metrics.paired import NOT_COMPUTED
from t2i_debias.plots import plot_or_warn, whiskers
from t2i_debias.runs import Stage, atomic_write_csv, atomic_write_json, atomic_write_text
from t2i_debias.runs import run_stage as _run_stage

log = logging.getLogger(__name__)

ATTRIBUTES: tuple[str, ...] = ("gender", "race", "race4", "gender_race")
BIAS_METRICS: tuple[str, ...] = ("tvd", "pairwise", "kl", "entropy")
QUALITY_METRICS: tuple[str, ...] = ("fid", "kid", "clip_t", "clip_i")
HIGHER_IS_BETTER: frozenset[str] = frozenset({m for m, info in METRIC_INFO.items() if info.higher_is_better}
                                             | {"clip_t", "clip_i", "face_rate", "occupation_acc"})
# Columns of comparison.md (all bias/quality columns are in comparison.csv).
TABLE_COLUMNS: tuple[str, ...] = ("gender_tvd", "race_tvd", "gender_race_tvd", "gender_kl", "race_kl",
                                  "race4_pairwise", "face_rate", "fid", "kid", "clip_t", "clip_i")
# The toy world's: CLIP has random weights there, so occupation accuracy and the toy FID take its place.
TOY_QUALITY: tuple[str, ...] = ("occupation_acc", "toy_fid")
TOY_TABLE_COLUMNS: tuple[str, ...] = ("gender_tvd", "race_tvd", "gender_race_tvd", "gender_kl", "race_kl",
                                      "face_rate", *TOY_QUALITY)
TOY_NOTE = ("Toy world: quality is occupation accuracy (the toy classifier sees the prompted occupation; "
            "higher is better) and the toy FID (FID on toy-classifier features against the toy data; lower is "
            "better). CLIP-T/CLIP-I are left out: the toy world's CLIP has random weights.")


def table_columns(df: pd.DataFrame) -> tuple[str, ...]:
    """The columns comparison.md and report.html show: the toy world's when its quality columns are there."""
    if any(c in df.columns and df[c].map(_num).notna().any() for c in TOY_QUALITY):
        return TOY_TABLE_COLUMNS
    return TABLE_COLUMNS


# ----------------------------------------------------------------------------- generation of a baseline
class MethodPipe:
    """Makes a Method look like a diffusers pipeline to the shared folder generator.

    The generator calls `pipe(prompt=[...], generator=[...], ...)` with one CPU generator per image,
    seeded with that image's seed; the seed is read back (`initial_seed`) so the method sees it.
    """

    def __init__(self, method: Any, occupation_of: dict[str, str]) -> None:
        self.method = method
        self.occupation_of = occupation_of

    @property
    def scheduler(self) -> Any:
        """The sampler of the method's pipeline (recorded with its images)."""
        return getattr(getattr(self.method, "pipe", None), "scheduler", None)

    def __call__(self, prompt: Sequence[str], generator: Sequence[Any], num_inference_steps: int,
                 guidance_scale: float, height: int | None = None, width: int | None = None,
                 output_type: str = "pil", **kw: Any) -> Any:
        if kw:
            raise TypeError(f"unsupported pipeline arguments for a baseline: {sorted(kw)}")
        seeds = [int(g.initial_seed()) for g in generator]
        occs = [self.occupation_of[p] for p in prompt]
        gen = GenParams(batch_size=len(prompt), num_inference_steps=num_inference_steps,
                        guidance_scale=guidance_scale, height=height, width=width)
        return SimpleNamespace(images=self.method.generate(list(prompt), occs, seeds, gen))


def _device_dtype(cfg: Any) -> tuple[str, Any]:
    from t2i_debias.models import resolve_device, resolve_dtype

    device = resolve_device(cfg.run.device)
    return device, resolve_dtype(cfg.generate.dtype, device)


def load_base(cfg: Any) -> Any:
    """A fresh copy of the run's base pipeline (methods may change it in place)."""
    from t2i_debias.models import base_model, load_model

    device, dtype = _device_dtype(cfg)
    base = base_model(cfg)
    return load_model(base, base, device=device, dtype=dtype)


def build_method(cfg: Any, name: str, prompts: pd.DataFrame) -> MethodPipe:
    """Load the base, build method `name` on it, and prepare it for the run's occupations."""
    method = make_method(name, load_base(cfg), cfg)
    method.prepare(sorted(set(prompts["occupation"])))
    return MethodPipe(method, dict(zip(prompts["prompt"], prompts["occupation"], strict=True)))


def check_applicable(cfg: Any, name: str) -> str | None:
    """None when `name` can run here, else the reason (checked without generating anything)."""
    if name == "shen2024":
        from t2i_debias.baselines.shen2024 import missing_files

        reason = missing_files(cfg.sota.shen2024_dir)
        if reason:
            return reason
        try:  # the adapters' shapes against the base model's modules
            make_method(name, load_base(cfg), cfg)
        except NotApplicable as e:
            return str(e)
    return None


def method_config(cfg: Any, name: str) -> dict[str, Any]:
    """What determines a baseline's images: generation settings, the base model and the method's settings."""
    from t2i_debias.baselines.registry import method_params
    from t2i_debias.models import base_model
    from t2i_debias.sampling import generation_config

    conf = generation_config(cfg, name, base_model(cfg))
    conf["method"] = {"name": name, "params": method_params(name, cfg)}
    if name == "uce":  # its edit is tuned with the run's classifier
        conf["method"]["labels"] = cfg.section_dict("labels")["labels"]
        conf["method"]["uce"] = {k: getattr(cfg.sota, k) for k in ("uce_samples", "uce_steps")}
    return conf


def generate_method(cfg: Any, name: str, force: bool = False) -> Path:
    """generated/<name>/ for baseline `name` (same layout and seeds as every evaluated model)."""
    from t2i_debias.data.prompts import prompts_path, read_prompts
    from t2i_debias.sampling import SETTINGS, generate_folder

    out_dir = cfg.run_dir / "generated" / name
    config = method_config(cfg, name)
    stage = Stage(f"generated:{name}", out_dir, config, [prompts_path(cfg)])

    def body(st: Stage) -> Any:
        prompts = read_prompts(prompts_path(cfg))
        g = cfg.generate
        size = g.resolution or None
        settings = {"fingerprint": config["fingerprint"], "method": config["method"]}
        built: dict[str, MethodPipe] = {}

        def load() -> MethodPipe:
            built["pipe"] = build_method(cfg, name, prompts)
            return built["pipe"]

        meta = generate_folder(load, out_dir, prompts, name, g.images_per_prompt, g.base_seed, g.batch_size,
                               g.num_inference_steps, g.guidance_scale, size, size, settings=settings)
        extra: dict[str, Any] = {"n_images": len(prompts) * g.images_per_prompt}
        if "pipe" in built:  # what ran, e.g. UCE's measured ratios per tuning round
            extra["method"] = built["pipe"].method.info()
        return [meta, out_dir / SETTINGS], extra

    _run_stage(stage, body, force=force, log=log.info)
    return out_dir


# ----------------------------------------------------------------------------- per-model evaluation (E's code)
def ours_models(cfg: Any) -> dict[str, str]:
    """The evaluation stage's models: "base" and each trained mode ("text", "unet", "both", ...).

    The base is always one of them: every row is compared with it. A `[generate] models` list without a
    `base` entry gets the run's base model as "base" (first), not a KeyError in the middle of the stage.
    """
    from t2i_debias.models import base_model, models_to_evaluate

    models = models_to_evaluate(cfg)
    if "base" in models:
        return models
    log.info("[sota] [generate] models has no 'base' entry: the run's base model is generated as 'base' for the "
             "comparison")
    return {"base": base_model(cfg), **models}


def classify_model(cfg: Any, name: str, force: bool = False, factory: Any = None) -> None:
    """bias/<name>/ (predictions, per-prompt metrics, summary with CIs) with the evaluation stage's code."""
    from t2i_debias.metrics import summary

    summary.evaluate_model(cfg, name, factory, force=force)


# ----------------------------------------------------------------------------- the table
def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


# What a bias number was generated with (bias/<model>/summary.json "generation"); rows must agree.
SETTINGS_KEYS: tuple[str, ...] = ("guidance_scale", "sampler", "num_inference_steps", "resolution",
                                  "images_per_prompt")
SIG_MARK = {"less biased": "✓", "more biased": "✗"}


class MixedSettingsError(ValueError):
    """Rows of one comparison table were generated with different settings."""


def _pair(v: Any) -> tuple[Any, Any]:
    return tuple(v) if isinstance(v, list | tuple) and len(v) == 2 else (None, None)


# Column suffixes (after `<attribute>_<metric>`) of a paired comparison (row − reference): its difference, 95% CI,
# p-value and verdict. Against the base: bias/<model>/summary.json `paired_vs_base`; against ours: `paired_vs_ours`.
VS_BASE: dict[str, str] = {"diff": "_diff", "lo": "_diff_lo", "hi": "_diff_hi", "p": "_p", "verdict": "_verdict"}
VS_OURS: dict[str, str] = {"diff": "_vs_ours", "lo": "_vs_ours_lo", "hi": "_vs_ours_hi", "p": "_vs_ours_p",
                           "verdict": "_vs_ours_verdict"}
OURS_COLUMN = "ours_model"  # comparison.csv: the row every row is paired with as "ours" (empty: none trained)


def paired_cells(c: str, pm: dict[str, Any] | None, suffixes: dict[str, str]) -> dict[str, Any]:
    """Columns `<c><suffix>` of one paired result {diff, ci, p, verdict} of bias column `c` (None: all empty)."""
    pm = pm or {}
    lo, hi = _pair(pm.get("ci"))
    return {c + suffixes["diff"]: pm.get("diff"), c + suffixes["lo"]: lo, c + suffixes["hi"]: hi,
            c + suffixes["p"]: pm.get("p"), c + suffixes["verdict"]: pm.get("verdict")}


def paired_columns(paired: dict[str, Any] | None, suffixes: dict[str, str]) -> dict[str, Any]:
    """Flat columns `<attribute>_<metric><suffix>` from the `attributes` of a paired comparison (None: all empty)."""
    return {k: v for a in ATTRIBUTES for m in BIAS_METRICS
            for k, v in paired_cells(f"{a}_{m}", _get(paired, a, m), suffixes).items()}


def bias_columns(summary: dict[str, Any]) -> dict[str, Any]:
    """Flat columns from a bias/<model>/summary.json: `<attribute>_<metric>` with `_lo`/`_hi` (bootstrap CI),
    `_floor`/`_excess` (noise floor), the VS_BASE columns (paired against the base), the face-found and
    ambiguous rates, and the generation settings."""
    row: dict[str, Any] = {}
    attrs = summary.get("attributes", summary)
    for a in ATTRIBUTES:
        for m in BIAS_METRICS:
            c = f"{a}_{m}"
            row[c] = _get(attrs, a, "aggregate", m)
            row[f"{c}_lo"], row[f"{c}_hi"] = _pair(_get(attrs, a, "ci", m))
            row[f"{c}_floor"], row[f"{c}_excess"] = _get(attrs, a, "floor", m), _get(attrs, a, "excess", m)
            row.update(paired_cells(c, _get(summary, "paired_vs_base", "attributes", a, m), VS_BASE))
    row["face_rate"] = summary.get("face_rate", summary.get("face_found_rate"))
    row["ambiguous_rate"] = summary.get("ambiguous_rate")
    row["n_images"] = summary.get("n_images")
    gen = summary.get("generation") or {}
    for k in SETTINGS_KEYS:
        v = gen.get(k)
        row[k] = json.dumps(v) if isinstance(v, list) else v
    return row


def settings_flag(v: Any) -> str:
    """A row's `settings` cell as text ("" = same settings as the reference row; NaN when read from CSV)."""
    return v if isinstance(v, str) else ""


def _setting(v: Any) -> str:
    """A setting as text for comparing and printing (None: not recorded)."""
    x = _num(v)
    if x is not None:
        return f"{x:g}"
    return NOT_RECORDED if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def settings_of(row: Any) -> dict[str, str]:
    """The generation settings of one comparison row, as text."""
    return {k: _setting(row.get(k)) for k in SETTINGS_KEYS}


NOT_RECORDED = "not recorded"


def check_settings(df: pd.DataFrame, allow_mixed: bool = False) -> pd.DataFrame:
    """`df` with a `settings` column: "" where a row's generation settings match the base row's (else the
    first row that ran); "differs: ..." where a recorded setting differs, which raises MixedSettingsError
    unless `allow_mixed`; "unverified: ..." where a setting was not recorded (images made before settings
    were stored), which cannot be checked and is flagged, not refused."""
    df = df.copy()
    df["settings"] = ""
    status = df["status"] if "status" in df else pd.Series("ok", index=df.index)
    ran = df[status.fillna("ok") == "ok"]
    if ran.empty:
        return df
    ref_rows = ran[ran["method"] == "base"] if "method" in ran else ran
    ref_row = (ref_rows if len(ref_rows) else ran).iloc[0]
    ref = settings_of(ref_row)
    bad = []
    for i, r in ran.iterrows():
        mine = settings_of(r)
        unknown = [k for k in SETTINGS_KEYS if NOT_RECORDED in (mine[k], ref[k])]
        diff = [f"{k} {mine[k]} (vs {ref[k]})" for k in SETTINGS_KEYS if k not in unknown and mine[k] != ref[k]]
        flag = (["differs: " + "; ".join(diff)] if diff else []) + (
            [f"unverified: {', '.join(unknown)} not recorded"] if unknown else [])
        df.loc[i, "settings"] = " | ".join(flag)
        if diff:
            bad.append(f"{r['method']}: " + "; ".join(diff))
    if bad and not allow_mixed:
        raise MixedSettingsError(
            f"rows generated with other settings than {ref_row['method']} cannot share one table: "
            + " | ".join(bad) + ". Regenerate them with the same [generate] settings, or pass --allow_mixed "
            "([sota] allow_mixed = true) to put them in one table, flagged.")
    return df


def ours_name(names: Sequence[str], kinds: dict[str, str], skipped: dict[str, str]) -> str | None:
    """The row every row is paired with as "ours": the last trained mode that ran (both > unet > text), else None."""
    from t2i_debias.config import MODES

    trained = [n for n in names if kinds.get(n) == "ours" and n in MODES and n not in skipped]
    return max(trained, key=MODES.index) if trained else None


def paired_vs_ours(cfg: Any, summaries: dict[str, dict[str, Any]], ours: str | None) -> dict[str, dict[str, Any] | None]:
    """Model -> `evaluate.paired_comparison` of (model − ours) for every model of `summaries` but ours (None).

    Paired on the same (prompt, seed) pairs of the bias stage's bias/<model>/predictions.csv (no new images),
    with its bootstrap settings and class vocabulary, over the attributes both summaries have. Computed at
    table time because which model is ours is the comparison's choice, not the bias stage's; without ours
    (no trained mode ran) every verdict is NOT_COMPUTED.
    """
    from t2i_debias.metrics.summary import (
        bias_attributes,
        paired_comparison,
        race_classes_of,
        read_predictions,
    )

    if ours is None:
        missing = {"against": None, "attributes": {a: {m: {"verdict": NOT_COMPUTED} for m in BIAS_METRICS}
                                                   for a in ATTRIBUTES}}
        return {n: missing for n in summaries}

    def measured(name: str) -> set[str]:
        return set(summaries[name].get("attributes") or {})

    bias_dir, b, every = cfg.run_dir / "bias", cfg.bias, bias_attributes(race_classes_of(cfg))
    ours_pred = read_predictions(bias_dir / ours / "predictions.csv")
    out: dict[str, dict[str, Any] | None] = {}
    for name in summaries:
        if name == ours:
            out[name] = None
            continue
        attrs = {a: c for a, c in every.items() if a in measured(name) & measured(ours)}
        out[name] = paired_comparison(read_predictions(bias_dir / name / "predictions.csv"), ours_pred, attrs,
                                      b.n_bootstrap, cfg.run.seed, b.ci, b.paired_resample, against=ours)
    return out


def comparison_rows(cfg: Any, names: Sequence[str], skipped: dict[str, str], kinds: dict[str, str],
                    extra: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """One row per method: status, bias metrics with CIs and paired Δ against the base and ours (OURS_COLUMN),
    quality metrics (+ `extra[name]`, e.g. toy quality).

    `base_model` is the model as the config names it (`toy:base`, a hub id); `base_model_path` where it was loaded.
    """
    from t2i_debias.models import base_model, model_name

    summaries = {n: json.loads((cfg.run_dir / "bias" / n / "summary.json").read_text())
                 for n in names if n not in skipped}
    ours = ours_name(names, kinds, skipped)
    vs_ours = paired_vs_ours(cfg, summaries, ours)
    rows = []
    for name in names:
        row: dict[str, Any] = {"method": name, "kind": kinds.get(name, "baseline"), "base_model": model_name(cfg),
                               "base_model_path": base_model(cfg), OURS_COLUMN: ours}
        if name in skipped:
            row["status"] = f"not applicable: {skipped[name]}"
            rows.append(row)
            continue
        row["status"] = "ok"
        quality_path = cfg.run_dir / "quality" / f"{name}.json"
        row.update(bias_columns(summaries[name]))
        row.update(paired_columns(_get(vs_ours[name], "attributes"), VS_OURS))
        q = json.loads(quality_path.read_text()) if quality_path.is_file() else {}
        for m in QUALITY_METRICS:
            row[m] = q.get(m)
        row.update((extra or {}).get(name, {}))
        rows.append(row)
    return pd.DataFrame(rows)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def best_values(df: pd.DataFrame, columns: Sequence[str]) -> dict[str, float]:
    """Best value per column over the rows that ran (lowest, or highest for entropy/CLIP/face rate)."""
    out = {}
    for c in columns:
        rows = df[df["method"] != "base"] if c == "clip_i" and "method" in df else df  # base vs itself = 1
        vals = [v for v in (_num(x) for x in rows.get(c, [])) if v is not None]
        if vals:
            out[c] = max(vals) if c.rsplit("_", 1)[-1] in HIGHER_IS_BETTER or c in HIGHER_IS_BETTER else min(vals)
    return out


def settings_header(df: pd.DataFrame) -> str:
    """One sentence with the generation settings of the table's rows (those of the reference row when mixed)."""
    status = df["status"] if "status" in df else pd.Series("ok", index=df.index)
    ran = df[status.fillna("ok") == "ok"]
    if ran.empty or not any(k in df.columns for k in SETTINGS_KEYS):
        return "Generation settings: not recorded."
    flags = ran["settings"].map(settings_flag) if "settings" in ran else pd.Series("", index=ran.index)
    unflagged = ran[flags == ""]
    ref = (unflagged if len(unflagged) else ran).iloc[0]
    st = settings_of(ref)
    text = (f"guidance scale {st['guidance_scale']}, sampler {st['sampler']}, {st['num_inference_steps']} steps, "
            f"resolution {st['resolution']}, {st['images_per_prompt']} images per prompt")
    if flags.str.contains("differs").any():
        return (f"Generation settings: **mixed** (allowed with --allow_mixed): {text} for every row except those "
                "flagged ⚠ in the settings column.")
    if (flags != "").any():
        return (f"Generation settings: {text}; some rows could not be checked (settings not recorded), flagged ⚠ "
                "in the settings column.")
    return f"Generation settings (every row): {text}."


def _bias_cell(r: Any, c: str) -> str:
    """'; floor F, excess E' and the paired mark of one bias value (empty for other columns)."""
    out = ""
    f, e = _num(r.get(f"{c}_floor")), _num(r.get(f"{c}_excess"))
    if f is not None:
        out += f"; floor {f:.3f}, excess {e:+.3f}" if e is not None else f"; floor {f:.3f}"
    mark = SIG_MARK.get(str(r.get(f"{c}_verdict")))
    return out + (f" {mark}" if mark else "")


def md_cell(value: Any) -> str:
    """Text for one Markdown table cell: a `|` escaped (it would end the cell), line breaks as spaces."""
    return " ".join(str(value).splitlines()).replace("|", "\\|")


def paired_markdown(df: pd.DataFrame, cols: Sequence[str], suffixes: dict[str, str] = VS_BASE,
                    against: str = "base", title: str = "the base") -> list[str]:
    """Lines of a paired table: per method and bias column, Δ = method − `against` (columns `suffixes`), its
    95% CI and p-value."""
    d_, lo_, hi_, p_, v_ = (suffixes[k] for k in ("diff", "lo", "hi", "p", "verdict"))
    cols = [c for c in cols if c + d_ in df.columns and df[c + d_].map(_num).notna().any()]
    rows = [r for _, r in df.iterrows() if r.get("status", "ok") == "ok" and r.get("method") != against
            and any(_num(r.get(c + d_)) is not None for c in cols)]
    if not cols or not rows:
        return []
    lines = ["", f"## Paired comparison against {md_cell(title)}", "",
             f"Δ = method − {md_cell(against)} on the same (prompt, seed) pairs; 95% paired bootstrap CI in brackets; "
             f"two-sided bootstrap p. ✓ = significantly less biased than {md_cell(against)} (the CI excludes 0), ✗ = "
             "significantly more biased; no mark = no significant difference.", "",
             "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for r in rows:
        cells = []
        for c in cols:
            d = _num(r.get(c + d_))
            if d is None:
                cells.append("–")
                continue
            lo, hi, p = _num(r.get(c + lo_)), _num(r.get(c + hi_)), _num(r.get(c + p_))
            cell = f"{d:+.3f}" + (f" [{lo:+.3f}, {hi:+.3f}]" if lo is not None and hi is not None else "")
            cell += f" p={p:.3g}" if p is not None else ""
            mark = SIG_MARK.get(str(r.get(c + v_)))
            cells.append(cell + (f" {mark}" if mark else ""))
        lines.append(f"| {md_cell(r['method'])} | " + " | ".join(cells) + " |")
    return lines


def ours_of(df: pd.DataFrame) -> str | None:
    """The model the table pairs every row with as ours (OURS_COLUMN; None when none was trained or not recorded)."""
    return next((v for v in df.get(OURS_COLUMN, []) if isinstance(v, str) and v), None)


NO_OURS = "Δ against ours: not computed, this run trained no model of ours (no [train] mode ran)."


def ours_markdown(df: pd.DataFrame, cols: Sequence[str]) -> list[str]:
    """Lines of the paired table against ours (VS_OURS columns); a note saying so where the run trained none."""
    if OURS_COLUMN not in df.columns:
        return []
    ours = ours_of(df)
    if ours is None:
        return ["", "## Paired comparison against ours", "", NO_OURS]
    return paired_markdown(df, cols, VS_OURS, ours, f"ours ({ours})")


def to_markdown(df: pd.DataFrame, base: str, columns: Sequence[str] | None = None) -> str:
    """Method × metric table, best value per column in bold, CIs in brackets, the base model and the generation
    settings stated; each bias value with its noise floor and excess and ✓/✗ when the paired CI against the
    base excludes 0; then the paired tables against the base and against ours. Columns: `columns`, else `table_columns(df)` (the toy world's
    quality columns when present)."""
    columns = table_columns(df) if columns is None else columns
    cols = [c for c in columns if c in df.columns and df[c].map(_num).notna().any()]
    best = best_values(df, cols)
    ran = df[df.get("status", pd.Series("ok", index=df.index)).fillna("ok") == "ok"]
    for c in list(best):  # a column where every method ties (as printed) has no winner to bold
        vals = {f"{v:.3f}" for m, x in zip(ran["method"], ran[c], strict=True)
                if (v := _num(x)) is not None and not (c == "clip_i" and m == "base")}
        if len(vals) <= 1:
            del best[c]
    mixed = "settings" in df.columns and (df["settings"].map(settings_flag) != "").any()
    lines = [f"# SOTA comparison\n\nBase model of every method: `{md_cell(base)}`. Same prompts, seeds, classifier "
             f"and metrics for all rows. {settings_header(df)}\n\n"
             "Bias: lower is better (entropy, CLIP and face rate: higher); 95% bootstrap CI in brackets; floor = "
             "the expected value of a perfectly balanced model with as many labelled images (sampling noise), "
             "excess = value − floor; ✓ / ✗ = significantly less / more biased than the base (paired 95% CI "
             "of the difference excludes 0).\n" + (f"\n{TOY_NOTE}\n" if set(TOY_QUALITY) & set(cols) else ""),
             "| method | " + " | ".join(cols) + (" | settings |" if mixed else " |"),
             "|---|" + "---|" * (len(cols) + mixed)]
    for _, r in df.iterrows():
        flag = [f"⚠ {md_cell(settings_flag(r.get('settings')))}" if settings_flag(r.get("settings")) else "same"] if mixed else []
        if r.get("status", "ok") != "ok":
            lines.append(f"| {md_cell(r['method'])} | " + " | ".join(["n/a"] * len(cols) + (["–"] if mixed else [])) + " |")
            continue
        cells = []
        for c in cols:
            v = _num(r.get(c))
            if v is None:
                cells.append("–")
                continue
            s = f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
            if c in best and math.isclose(v, best[c], rel_tol=1e-9, abs_tol=1e-12) and not (
                    c == "clip_i" and r["method"] == "base"):
                s = f"**{s}**"
            lo, hi = _num(r.get(f"{c}_lo")), _num(r.get(f"{c}_hi"))
            if lo is not None and hi is not None:
                s += f" [{lo:.3f}, {hi:.3f}]"
            cells.append(s + _bias_cell(r, c))
        lines.append(f"| {md_cell(r['method'])} | " + " | ".join(cells + flag) + " |")
    lines += paired_markdown(df, cols) + ours_markdown(df, cols)
    notes = [f"- **{md_cell(r['method'])}**: {md_cell(r['status'])}" for _, r in df.iterrows() if r.get("status", "ok") != "ok"]
    if notes:
        lines += ["", "Not run:", *notes]
    return "\n".join(lines) + "\n"


def plot(df: pd.DataFrame, out_dir: Path) -> list[Path]:
    """Bar charts with CI whiskers: gender and race TVD per method; CLIP-T/CLIP-I per method (toy world:
    occupation accuracy and toy FID)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from t2i_debias.runs import atomic_open

    ok = df[df["status"] == "ok"] if "status" in df else df
    paths = []
    toy = table_columns(df) == TOY_TABLE_COLUMNS
    charts = [("bias_tvd.png", ["gender_tvd", "race_tvd", "gender_race_tvd"])]
    charts += ([("quality_occupation.png", ["occupation_acc"]), ("quality_toy_fid.png", ["toy_fid"])] if toy
               else [("quality_clip.png", ["clip_t", "clip_i"])])
    for fname, cols in charts:
        cols = [c for c in cols if c in ok and ok[c].map(_num).notna().any()]
        if not cols or ok.empty:
            continue
        fig, ax = plt.subplots(figsize=(1.2 + 0.9 * len(ok) * len(cols) / 2, 3.2))
        width = 0.8 / len(cols)
        for i, c in enumerate(cols):
            vals = ok[c].map(_num).fillna(0.0).to_numpy()
            lo = ok.get(f"{c}_lo", pd.Series([None] * len(ok))).map(_num)
            hi = ok.get(f"{c}_hi", pd.Series([None] * len(ok))).map(_num)
            err = None
            if lo.notna().all() and hi.notna().all():
                err = whiskers(vals, lo.to_numpy(dtype=float), hi.to_numpy(dtype=float))
            ax.bar([x + i * width for x in range(len(ok))], vals, width, yerr=err, capsize=2, label=c)
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(ok))], list(ok["method"]), rotation=30, ha="right")
        ax.legend(fontsize=7)
        ax.set_title(fname.removesuffix(".png").replace("_", " "))
        fig.tight_layout()
        path = out_dir / fname
        with atomic_open(path, "wb") as fh:
            fig.savefig(fh, format="png", dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------- the stage
def method_names(cfg: Any) -> tuple[list[str], dict[str, str]]:
    """Rows of the table in order: base, ours (each trained mode), then the baselines.

    Another model folder under models/ (e.g. the toy world's biased-data fine-tune) is a "control".
    """
    from t2i_debias.train.engine import MODES

    names: list[str] = []
    kinds: dict[str, str] = {}
    for n in ours_models(cfg):
        names.append(n)
        kinds[n] = "base" if n == "base" else ("ours" if n in MODES else "control")
    for m in cfg.sota.methods:
        if m not in METHODS:
            raise ValueError(f"[sota] methods: unknown method {m!r}; known: {', '.join(METHODS)}")
        if m not in names:
            names.append(m)
            kinds[m] = "base" if m == "base" else "baseline"
    return names, kinds


SKIPPED = "skipped.json"


def generate_all(cfg: Any, force: bool = False) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """generated/<name>/ for every row (base and ours via the evaluation stage); records the skips.

    `force` reruns the baselines' stages (their folder generator keeps valid images made with the same
    settings); base and ours are the generation stage's and are not remade here, so a forced pipeline
    run does not generate the same (model, prompt, seed) twice.
    """
    names, kinds = method_names(cfg)
    ours = ours_models(cfg)
    skipped: dict[str, str] = {}
    for name in names:
        if kinds[name] == "baseline":
            reason = check_applicable(cfg, name)
            if reason:
                log.warning("[sota] %s not applicable: %s", name, reason)
                skipped[name] = reason
                continue
            generate_method(cfg, name, force=force)
        else:  # the generation stage's own images: made once, not again under --force (their manifest decides)
            from t2i_debias.sampling import generate_model

            generate_model(cfg, name, ours[name], force=False)
    atomic_write_json(cfg.run_dir / "sota" / SKIPPED, skipped)
    return names, kinds, skipped


def _rows(cfg: Any) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """Rows, kinds and the skips recorded by `generate_all` (which must have run)."""
    names, kinds = method_names(cfg)
    path = cfg.run_dir / "sota" / SKIPPED
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run sota_evaluation/gen-images.py first")
    return names, kinds, json.loads(path.read_text())


def classify_all(cfg: Any, force: bool = False) -> None:
    """Classify the images of every row that ran (bias/<name>/)."""
    from t2i_debias.metrics.summary import base_first, classifier_factory_for

    names, kinds, skipped = _rows(cfg)
    factory = classifier_factory_for(cfg)  # one classifier for every method, built only if needed
    for n in base_first(names):  # the base first: every other row is paired with its predictions
        if n not in skipped:  # base and ours are the bias stage's (as in generate_all)
            classify_model(cfg, n, force=force and kinds[n] == "baseline", factory=factory)


def quality_all(cfg: Any, force: bool = False) -> None:
    """quality/<name>.json (+ .csv) for every row that ran, with the quality stage's per-model code:
    CLIP-T, CLIP-I against generated/base (same prompt and seed), FID/KID when [quality] reference is set.

    Its manifest is sota/quality/_manifest.json, apart from the evaluation stage's quality/ manifest.
    """
    from t2i_debias.metrics.quality import quality_for

    names, _, skipped = _rows(cfg)
    names = [n for n in names if n not in skipped]
    q = cfg.quality
    gen_root = cfg.run_dir / "generated"
    inputs = [gen_root / n / "metadata.csv" for n in names] + ([Path(q.reference)] if q.reference else [])
    config = {**cfg.section_dict("quality"), "smoke": cfg.run.smoke, "models": names}
    stage = Stage("sota:quality", cfg.run_dir / "sota" / "quality", config, inputs)

    def body(st: Stage) -> Any:
        return quality_for(cfg, names, cfg.run_dir / "quality"), {"models": names}

    _run_stage(stage, body, force=force, log=log.info)


def write_comparison(cfg: Any, force: bool = False) -> Path:
    """sota/comparison.csv, comparison.md, methods.json and plots from bias/ and quality/."""
    from t2i_debias.data.prompts import prompts_path
    from t2i_debias.models import model_name
    from t2i_debias.report.toy_quality import is_toy

    names, kinds, skipped = _rows(cfg)
    out = cfg.run_dir / "sota"
    inputs = [prompts_path(cfg), out / SKIPPED]
    for n in names:
        if n not in skipped:
            inputs += [cfg.run_dir / "bias" / n / f for f in ("summary.json", "predictions.csv")]  # + Δ vs ours
            inputs += [cfg.run_dir / "generated" / n / "metadata.csv"] if is_toy(cfg) else []
            q = cfg.run_dir / "quality" / f"{n}.json"
            inputs += [q] if q.is_file() else []
    config = {**cfg.section_dict("sota"), "rows": names, "base_model": model_name(cfg),
              "paired_vs_ours": {"n_bootstrap": cfg.bias.n_bootstrap, "ci": cfg.bias.ci,
                                 "resample": cfg.bias.paired_resample, "seed": cfg.run.seed}}
    if is_toy(cfg):
        config["toy_quality"] = {"images_dir": cfg.mpii.images_dir, "labels": cfg.section_dict("labels")["labels"]}
    stage = Stage("sota", out, config, inputs)

    def body(st: Stage) -> Any:
        ran = [n for n in names if n not in skipped]
        extra = None
        if is_toy(cfg):
            from t2i_debias.report.toy_quality import toy_quality

            extra = toy_quality(cfg, ran)
        df = check_settings(comparison_rows(cfg, names, skipped, kinds, extra), cfg.sota.allow_mixed)
        outs = [atomic_write_csv(out / "comparison.csv", df),
                atomic_write_text(out / "comparison.md", to_markdown(df, model_name(cfg))),
                atomic_write_json(out / "methods.json", {n: _method_info(n, kinds[n], skipped) for n in names}),
                out / SKIPPED]
        outs += plot_or_warn(lambda: plot(df, out), f"{out}/*.png") or []
        return outs, {"methods": names, "skipped": skipped}

    _run_stage(stage, body, force=force, log=log.info)
    return out / "comparison.csv"


def run_stage(cfg: Any, force: bool = False) -> None:
    """Generate, classify and measure every method, then write sota/comparison.{csv,md} and plots."""
    generate_all(cfg, force=force)
    classify_all(cfg, force=force)
    quality_all(cfg, force=force)
    write_comparison(cfg, force=force)


def _method_info(name: str, kind: str, skipped: dict[str, str]) -> dict[str, Any]:
    if kind != "baseline":
        return {"kind": kind}
    module, cls = METHODS[name]
    import importlib

    c = getattr(importlib.import_module(module), cls)
    return {"kind": kind, "citation": c.citation, "doc": (importlib.import_module(module).__doc__ or "").strip(),
            "skipped": skipped.get(name)}
