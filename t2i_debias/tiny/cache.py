"""Content-keyed cache folders for the offline builders: build into a temp folder, then rename."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from t2i_debias.core.files import hash_obj

BUILDER_VERSION = 1


def cache_root() -> Path:
    """Root of the offline model cache ($T2I_DEBIAS_CACHE, default ./.cache/t2i_debias)."""
    return Path(os.environ.get("T2I_DEBIAS_CACHE", Path.cwd() / ".cache" / "t2i_debias"))


def spec_key(spec: dict[str, Any]) -> str:
    """The content hash of a builder spec: it names the spec's cache folder (its first 16 digits)."""
    return hash_obj({"v": BUILDER_VERSION, **spec})


def cached_dir(kind: str, spec: dict[str, Any], build: Callable[[Path], None], root: Path | None = None) -> Path:
    """Return `<root>/<kind>-<hash(spec)>`, building it with `build(tmpdir)` then renaming when missing."""
    root = Path(root) if root is not None else cache_root()
    final = root / f"{kind}-{spec_key(spec)[:16]}"
    if final.exists():
        return final
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=root))
    try:
        build(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process built it first
            if not final.exists():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
