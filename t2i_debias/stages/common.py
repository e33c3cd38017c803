"""Helpers shared by the stages that read the generated images."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def finished_generated(cfg: Any, models: Any) -> list[str]:
    """The models whose generated/<model>/ finished (manifest); an unfinished folder is an error, a missing one
    is skipped with a warning, and no folder at all is an error."""
    from t2i_debias.core.errors import MissingInputError
    from t2i_debias.core.stage import require_finished

    root = cfg.run_dir / "generated"
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
