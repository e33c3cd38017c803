"""The mpii stage: the MPII release -> mpii/persons.csv and load_report.json (`data.mpii`, `data.persons`)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from t2i_debias.core.config import Config
from t2i_debias.core.files import atomic_write_json, atomic_write_text, hash_obj
from t2i_debias.core.layout import RunLayout
from t2i_debias.core.stage import Stage
from t2i_debias.core.stage import run_stage as _run
from t2i_debias.data.mpii import load_release
from t2i_debias.data.occupations import load_occupation_map, packaged_map_path
from t2i_debias.data.persons import MissingImagesError, image_listing, rows_to_csv, select_persons

log = logging.getLogger(__name__)


def run_stage(cfg: Config, force: bool = False) -> None:
    """mpii stage: write <run>/mpii/persons.csv, missing_images.txt and load_report.json."""
    sec = cfg.mpii
    mat = Path(sec.mat_file)
    if not mat.is_file():
        raise FileNotFoundError(f"MPII annotation file not found: {mat} (set --mat_file or [mpii] mat_file)")
    map_path = Path(sec.occupation_map) if sec.occupation_map else packaged_map_path()
    present = image_listing(sec.images_dir)
    config = {**cfg.section_dict("mpii"), "images_listing_sha256": hash_obj(sorted(present))}
    lay = RunLayout(cfg.run_dir)
    stage = Stage("mpii", lay.mpii, config, [mat, map_path])

    def body(st: Stage) -> tuple[list[Path], dict[str, Any]]:
        occ_map = load_occupation_map(map_path)
        release = load_release(mat, sec.reader)
        rows, report = select_persons(release, occ_map, sec.split, sec.occupations_only, present)
        missing = report.pop("_missing")
        missing_path = atomic_write_text(lay.missing_images, "".join(f"{m}\n" for m in missing))
        report_path = atomic_write_json(lay.load_report, report)
        if not present:
            log.warning("images folder %s is missing or empty: every image is reported missing", sec.images_dir)
        if missing:
            msg = (f"{len(missing)} image(s) referenced by {report['persons_with_missing_image']} person(s) "
                   f"are missing from {sec.images_dir}; list: {missing_path}")
            if sec.strict:
                raise MissingImagesError(msg + " (strict: fatal)")
            log.warning(msg)
        if report["bad_image_names"]:
            log.warning("%d person(s) skipped as bad_image_name (a name that is not a plain file name), e.g. %s; "
                        "all listed in %s", report["not_written"]["bad_image_name"],
                        ", ".join(report["bad_image_names"][:3]), report_path)
        if report["unmapped_activities"]:
            log.warning("%d activity string(s) are not in the occupation map %s (e.g. %r); counted as "
                        "unmapped_activity", len(report["unmapped_activities"]), map_path,
                        next(iter(report["unmapped_activities"])))
        persons_path = atomic_write_text(lay.persons_csv, rows_to_csv(rows))
        log.info("mpii: %d of %d persons written (%s); %d occupations", report["persons_written"],
                 report["persons_in_file"], ", ".join(f"{k}={v}" for k, v in report["not_written"].items() if v),
                 report["occupations"])
        return [persons_path, missing_path, report_path], report

    _run(stage, body, force=force, log=log.info)
