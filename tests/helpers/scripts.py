"""Load a stage script of a top-level folder (finetune/, evaluation/, bench/, ...) as a module, by path.

The script folders are not packages; loading by path keeps sys.path untouched for the rest of the session."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def load_script(relative: str) -> ModuleType:
    """The module of ROOT/`relative` (e.g. "finetune/finetune_sd.py"), executed once per call."""
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
