"""The toy world: a CPU-sized world with a planted bias, where "the method reduces bias" has a known truth.

- `render`      32×32 people: occupation by the scene, gender by hair + clothes, skin tone (race analogue);
- `dataset`     the biased population and its MPII-format copy (via data.mpii_fixture);
- `classifier`  the "toy" labels backend (three small CNNs) and toy-FID features;
- `base_model`  a tiny StableDiffusionPipeline trained from scratch on the biased data ("toy:base");
- `evaluate`    bias / occupation / attribute-prompt scores of a pipeline against the truth;
- `summary`     the demo's closing table;
- `plugin`      `register()`: the `toy:` model prefix and the "toy" labels backend, plugged in from above.

`ensure_toy_world(mpii, toy)` prepares everything a toy run needs before the pipeline's first stage; the
pipeline stages "toy" and "toy_summary" are `t2i_debias.stages.toy` and `t2i_debias.stages.toy_summary`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from t2i_debias.core.config import MpiiSection, ToySection

log = logging.getLogger(__name__)

DATA_VERSION = 1


def data_spec(toy: ToySection) -> dict[str, Any]:
    """What the MPII-format toy data depends on (a stamp next to the data records it)."""
    from t2i_debias.toyworld.dataset import MALE_SHARE, RACE_SHARE

    return {"version": DATA_VERSION, "seed": toy.seed, "n_per_occupation": toy.n_per_occupation,
            "male_share": MALE_SHARE, "race_share": {k: list(v) for k, v in RACE_SHARE.items()}}


def ensure_toy_data(mpii: MpiiSection, toy: ToySection) -> tuple[Path, Path]:
    """Write the biased toy data in MPII format at [mpii] mat_file / images_dir unless already there.

    The images folder must be `images/` beside the `.mat` (the fixture writer's layout). A stamp
    `toy_world.json` (written last) records the data spec, so a changed seed or size rewrites it.
    """
    import json

    from t2i_debias.core.files import atomic_write_csv, atomic_write_json, hash_obj
    from t2i_debias.toyworld.dataset import biased_population, truth_table, write_mpii

    mat = Path(mpii.mat_file)
    out = mat.parent
    images = Path(mpii.images_dir)
    if images.resolve() != (out / "images").resolve():
        raise ValueError(f"toy world: [mpii] images_dir must be {out / 'images'} (beside mat_file {mat}), "
                         f"got {images}")
    spec = data_spec(toy)
    stamp = out / "toy_world.json"
    try:
        done = json.loads(stamp.read_text()).get("hash") == hash_obj(spec) and mat.is_file()
    except (FileNotFoundError, json.JSONDecodeError):
        done = False
    if done:
        return mat, images
    import pandas as pd

    samples = biased_population(toy.n_per_occupation, toy.seed)
    log.info("toy world: writing %d biased people in MPII format to %s", len(samples), out)
    mat_path, images_dir = write_mpii(out, samples, mat_name=mat.name)
    atomic_write_csv(out / "truth.csv", pd.DataFrame(truth_table(samples)))
    atomic_write_json(stamp, {"hash": hash_obj(spec), "spec": spec})
    return mat_path, images_dir


def ensure_toy_world(mpii: MpiiSection, toy: ToySection) -> dict[str, Any]:
    """Data, classifier and base model of the toy world (each built once and cached); returns their paths."""
    from t2i_debias.toyworld import base_model
    from t2i_debias.toyworld.classifier import classifier_dir

    mat, images = ensure_toy_data(mpii, toy)
    clf = classifier_dir()
    base = base_model.base_dir(base_model.spec_from_toy(toy))
    # The biased-data control is trained by the engine in the models stage ([train] control).
    return {"mat_file": mat, "images_dir": images, "classifier": clf, "base_model": base}

