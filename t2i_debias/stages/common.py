"""What the stages that generate, score and compare the run's models share: which models a run evaluates
(`models_to_evaluate`, with the stale folders it leaves out), their finished generated/ folders, and the
order that scores the base first."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from t2i_debias.core.config import Config, TrainSection
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.options import MODES, modes_to_run
from t2i_debias.models import base_model, is_lora_dir, is_pipeline_dir, resolve_model

log = logging.getLogger(__name__)


def finished_generated(cfg: Config, models: Iterable[str]) -> list[str]:
    """The models whose generated/<model>/ finished (manifest); an unfinished folder is an error, a missing one
    is skipped with a warning, and no folder at all is an error."""
    from t2i_debias.core.errors import MissingInputError
    from t2i_debias.core.layout import RunLayout
    from t2i_debias.core.stage import require_finished

    root = RunLayout(cfg.run_dir).generated
    names = []
    for n in models:
        if not (root / n).exists():
            log.warning("no generated/%s: model %s is not evaluated (run the generated stage for it)", n, n)
            continue
        require_finished(root / n, "generated", cfg.run_dir)
        names.append(n)
    if not names:
        raise MissingInputError(f"no generated images under {root}: run the generated stage first")
    return names


def base_first(names: list[str]) -> list[str]:
    """The base model first, so every other model's paired comparison finds its predictions."""
    return sorted(names, key=lambda n: n != "base")


# ----------------------------------------------------------------------------- the run's models
def models_to_evaluate(cfg: Config) -> dict[str, str]:
    """Name -> model spec: `generate.models` (NAME=SPEC) if set, else "base" plus each trained mode found.

    A trained mode is a folder `<run_dir>/models/<mode>/` holding a pipeline (model_index.json) or
    LoRA weights (applied on the base model when loaded). A mode folder whose training did not
    finish (no manifest) is an error, never a model to load.
    """
    from t2i_debias.core.stage import require_finished

    if cfg.generate.models:
        out: dict[str, str] = {}
        for item in cfg.generate.models:
            if "=" not in item:
                raise ValueError(f"generate.models entry {item!r} must be NAME=SPEC")
            name, spec = (x.strip() for x in item.split("=", 1))
            _check_name(name)
            out[name] = resolve_model(spec, cfg)
        return out
    out = {"base": base_model(cfg)}
    models_dir = RunLayout(cfg.run_dir).models
    if models_dir.is_dir():
        stale = stale_models(cfg)
        for name, why in stale.items():
            if (str(cfg.run_dir), name) not in _WARNED_STALE:
                _WARNED_STALE.add((str(cfg.run_dir), name))
                log.warning("models/%s is stale (%s): not generated, scored or shown", name, why)
        dirs = [d for d in models_dir.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name not in stale]
        for d in dirs:
            require_finished(d, "models", cfg.run_dir)
        found = [d for d in dirs if is_pipeline_dir(d) or is_lora_dir(d)]
        order = {m: i for i, m in enumerate(MODES)}
        for d in sorted(found, key=lambda d: (order.get(d.name, len(order)), d.name)):
            _check_name(d.name)
            out[d.name] = str(d)
    return out


_WARNED_STALE: set[tuple[str, str]] = set()  # (run folder, model): each stale folder is warned about once


def current_modes(train: TrainSection) -> list[str]:
    """The model folders a [train] section trains under models/: each of its modes (in schedule order), and
    "control" when `control` is on."""
    return modes_to_run(train) + (["control"] if train.control else [])


def stale_models(cfg: Config) -> dict[str, str]:
    """models/<name>/ folders the current config does not train -> why: left by an earlier config, never evaluated.

    Empty when `[generate] models` names the models (then nothing under models/ is looked at).
    """
    models_dir = RunLayout(cfg.run_dir).models
    if cfg.generate.models or not models_dir.is_dir():
        return {}
    current = current_modes(cfg.train)
    why = (f"not in [train] modes = {list(cfg.train.modes)} (schedule {cfg.train.schedule!r})"
           + ("" if cfg.train.control else " and [train] control is off"))
    return {d.name: why for d in sorted(models_dir.iterdir())
            if d.is_dir() and not d.name.startswith((".", "_")) and d.name not in current}


def _check_name(name: str) -> None:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"bad model name {name!r}: it names a folder")
