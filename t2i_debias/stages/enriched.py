"""The `enriched` stage: mpii/persons.csv + labels/labels.csv -> <run_dir>/enriched/ (DESIGN.md §1.4, §6).

The build itself (plan, generation, verification, files) is `t2i_debias.augment.build`; this module
checks the inputs, loads the generator and the verifying classifier, and swaps the finished folder in
under the stage's manifest ([augment] options were checked when the config was loaded).
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

from t2i_debias import models
from t2i_debias.augment.build import BuildSettings, build_enriched
from t2i_debias.augment.captions import CaptionComposer
from t2i_debias.augment.inputs import load_people
from t2i_debias.augment.planner import TripletPlanner
from t2i_debias.augment.schema import BALANCE, FIDELITY, JOURNAL, METADATA, REJECTED, SKIPPED
from t2i_debias.core.config import Config
from t2i_debias.core.files import Staged
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.stage import Stage, require_finished
from t2i_debias.core.stage import run_stage as _run_stage
from t2i_debias.models import load_pipeline, model_fingerprint, resolve_device

log = logging.getLogger(__name__)


def _stage_config(cfg: Config, generator: str) -> dict[str, Any]:
    """What the manifest's config hash covers: the [augment] section, the seed, the generator's identity."""
    conf: dict[str, Any] = {"augment": asdict(cfg.augment), "seed": cfg.run.seed,
                            "generator": model_fingerprint(generator),
                            "images_dir": str(cfg.mpii.images_dir), "heldout": sorted(cfg.prompts.heldout)}
    if cfg.augment.verify_attributes:
        conf["labels"] = asdict(cfg.labels)
    return conf


def run_stage(cfg: Config, force: bool = False) -> None:
    """Build <run_dir>/enriched/ from mpii/persons.csv + labels/labels.csv; skip when the manifest matches.

    The journal is kept under `force` too (its entries are keyed by everything that shapes a triplet, like
    the labels cache); delete enriched/ to generate every image again.
    """
    a = cfg.augment
    generator = models.resolve_model(a.generator, cfg) if a.generator else models.base_model(cfg)
    # metadata names the generator as the user gave it (hub id, folder, tiny:sd), not a cache path
    generator_name = a.generator or ("tiny:sd" if cfg.run.smoke else cfg.run.base_model)
    run_dir = cfg.run_dir
    lay = RunLayout(run_dir)
    persons_csv, labels_csv = lay.persons_csv, lay.labels_csv
    out_dir = lay.enriched
    stage = Stage("enriched", out_dir, _stage_config(cfg, generator), inputs=[persons_csv, labels_csv])

    def body(stage: Stage) -> tuple[list[Path], dict[str, Any]]:
        for folder, producer in ((persons_csv.parent, "mpii"), (labels_csv.parent, "labels")):
            if folder.exists():  # a missing input file gets load_people's message
                require_finished(folder, producer, run_dir)
        people, dropped = load_people(persons_csv, labels_csv, cfg.prompts.heldout)
        if a.max_triplets > 0:
            people = people[:a.max_triplets]
        composer = CaptionComposer.from_config(a)
        planner = TripletPlanner(composer, cfg.run.seed, a.change_age, a.races, a.negative_prompt)
        if not people:
            log.warning("no labelled person with an occupation in %s: enriched/ will be empty", labels_csv)
        device = resolve_device(cfg.run.device)
        classifier = None
        if a.verify_attributes:
            from t2i_debias.labels.registry import make_classifier

            classifier = make_classifier(cfg.labels, device=device, smoke=cfg.run.smoke)
        # A caption that names the age group must be verified on it too.
        settings = BuildSettings(
            generator_name, model_fingerprint(generator), a.resolution, a.num_inference_steps, a.guidance_scale,
            a.crop_scale, a.crop_shift, a.max_tries if classifier is not None else 1,
            classifier.describe() if classifier is not None else None, composer.with_age,
            a.on_unverified, a.retry_guidance_scale, a.generator_resolution,
        )
        pipe = load_pipeline(generator, device, a.dtype) if people else None
        # The new version is built beside the finished one (which stays intact until it is complete), reusing
        # its images through hard links and a copy of its journal; then one rename swaps it in.
        staged = Staged(out_dir)
        work = staged.open(resume=True)
        staged.link_from_dest(copy=(JOURNAL,))
        lo, hi = a.balance_band
        stats = build_enriched(people, planner, work, cfg.mpii.images_dir, pipe, settings, a.batch_size,
                               classifier, balance_band=(lo, hi), min_written_rate=a.min_written_rate)
        staged.commit()
        stats["dropped_inputs"] = dropped
        outputs = [out_dir / f for f in (METADATA, SKIPPED, REJECTED, FIDELITY, BALANCE)]
        return [*outputs, out_dir / "images"], stats

    _run_stage(stage, body, force=force, log=log.info)


__all__ = ["run_stage"]
