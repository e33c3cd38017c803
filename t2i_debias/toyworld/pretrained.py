"""The toy world's pretrained models, shipped inside the package, and the loader that prefers them.

A real user downloads Stable Diffusion and DeepFace rather than training them; the toy world's analogue
is this folder: the toy VAE, the toy classifier and the toy base of seeds 0, 1 and 2 (seed 2 held out
for the method), each with its spec, spec hash and build record (`shipped.json`). The base's U-Net and
text encoder are stored in fp16 (the size budget) and upcast to fp32 when they are copied into the
cache; the gates in docs/results/toy_base.md are measured on exactly that copy.

`cached_or_shipped` is the one front door: a shipped copy whose spec hash equals the code's spec is
copied into the cache; a stale one is named with the command that rebuilds it (`make toy-models`),
and the model is then trained into the cache as before. `build_record` writes what a build cost
(`build.json`), which travels with the model into the cache and the shipped copy.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from t2i_debias.core.files import atomic_write_json
from t2i_debias.core.threads import all_cores
from t2i_debias.tiny.cache import cached_dir, spec_key

log = logging.getLogger(__name__)

PRETRAINED_DIR = Path(__file__).with_name("pretrained")
SHIPPED_JSON = "shipped.json"
REBUILD_HINT = "make toy-models"
# Sub-folders of a saved pipeline that are not shipped: rebuilt from the shipped VAE and the vendored
# CLIP vocabulary when the copy is made (they would triple the size of each base).
NOT_SHIPPED = ("vae", "tokenizer")
FP16_PARTS = ("unet", "text_encoder")
SHIPPED_SEEDS: tuple[int, ...] = (0, 1, 2)  # seed 2 is held out: no choice of the method's recipe is tuned on it
USE_SHIPPED = True  # False only while `make toy-models` retrains them from scratch


@contextmanager
def build_record(folder: Path, what: str) -> Iterator[dict[str, Any]]:
    """Time a model build on all cores and write `<folder>/build.json` (wall and CPU seconds, threads).

    The record travels with the cached model, so a results table can quote what training cost even
    when the model comes from the cache.
    """
    with all_cores() as n:
        rec: dict[str, Any] = {"what": what, "threads": n}
        t0, c0 = time.time(), time.process_time()
        yield rec
        rec |= {"wall_seconds": round(time.time() - t0, 1), "cpu_seconds": round(time.process_time() - c0, 1)}
    (Path(folder) / "build.json").write_text(json.dumps(rec, indent=2))


def read_build_record(folder: Path) -> dict[str, Any] | None:
    """The build record of a cached model folder, or None when it was built before records existed."""
    try:
        return json.loads((Path(folder) / "build.json").read_text())
    except FileNotFoundError:
        return None


def shipped_record(name: str, root: Path | None = None) -> dict[str, Any] | None:
    """The `shipped.json` of a shipped model, or None when none is shipped under `name`."""
    path = (root or PRETRAINED_DIR) / name / SHIPPED_JSON
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def _upcast(folder: Path) -> None:
    """Rewrite every fp16 safetensors file under `folder` in fp32 (the dtype the demo trains and samples in)."""
    import torch
    from safetensors.torch import load_file, save_file

    for f in folder.rglob("*.safetensors"):
        state = load_file(str(f))
        if any(v.dtype == torch.float16 for v in state.values()):
            save_file({k: v.float().contiguous() if v.dtype == torch.float16 else v for k, v in state.items()},
                      str(f), metadata={"format": "pt"})


def copy_shipped(src: Path, dst: Path, finish: Callable[[Path], None] | None = None) -> None:
    """Copy a shipped model into a (temporary) cache folder, upcast it, and let `finish` add the parts not shipped."""
    shutil.copytree(src, dst, dirs_exist_ok=True)
    _upcast(dst)
    if finish is not None:
        finish(dst)


def cached_or_shipped(kind: str, name: str, spec: dict[str, Any], build: Callable[[Path], None],
                      finish: Callable[[Path], None] | None = None, root: Path | None = None) -> Path:
    """Cache folder of `spec`: copied from the shipped model `name` when its spec hash matches, else built."""
    record = shipped_record(name, root) if USE_SHIPPED else None
    want = spec_key(spec)
    if record is not None and record.get("spec_hash") == want:
        src = (root or PRETRAINED_DIR) / name
        return cached_dir(kind, spec, lambda d: copy_shipped(src, d, finish))
    if record is not None:
        log.warning("the shipped toy model %r is stale: its spec hash %s differs from the code's %s; building it "
                    "into the cache instead (minutes). Rebuild the shipped models with `%s`.", name,
                    str(record.get("spec_hash"))[:16], want[:16], REBUILD_HINT)
    return cached_dir(kind, spec, build)


def ship(src: Path, name: str, spec: dict[str, Any], extra: dict[str, Any] | None = None,
         root: Path | None = None) -> Path:
    """Write the built model at `src` as the shipped model `name` (fp16 parts, no rebuilt parts, shipped.json).

    Built beside the old copy and swapped in, so a failure never leaves a half-written shipped model.
    """
    import torch
    from safetensors.torch import load_file, save_file

    from t2i_debias.core.files import replace_dir

    root = root or PRETRAINED_DIR
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{name}.new"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns(*NOT_SHIPPED, "*.tmp"))
    for part in FP16_PARTS:
        for f in (tmp / part).glob("*.safetensors"):
            state = load_file(str(f))
            save_file({k: v.half().contiguous() if v.dtype == torch.float32 else v for k, v in state.items()},
                      str(f), metadata={"format": "pt"})
    record = {"name": name, "spec_hash": spec_key(spec), "spec": spec, "build": read_build_record(src),
              "stored_fp16": [p for p in FP16_PARTS if (tmp / p).is_dir()], "not_shipped": list(NOT_SHIPPED)}
    atomic_write_json(tmp / SHIPPED_JSON, record | (extra or {}))
    replace_dir(tmp, root / name)
    return root / name


def shipped_size_bytes(root: Path | None = None) -> int:
    """Total size of every shipped file (the budget is 40 MB)."""
    return sum(f.stat().st_size for f in (root or PRETRAINED_DIR).rglob("*") if f.is_file())
