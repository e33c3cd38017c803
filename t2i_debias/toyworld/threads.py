"""Torch threads for the toy world's one-process training, and the build record of each trained model.

A `make demo` trains the toy models in one process, so it should use every core it may run on;
tests run several workers at once, one thread each (tests/conftest.py), and must stay that way.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

THREADS_ENV = "T2I_DEBIAS_THREADS"


def training_threads() -> int:
    """Threads for a toy training run: $T2I_DEBIAS_THREADS if set, 1 under pytest, else the usable cores."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if value:
        try:
            n = int(value)
        except ValueError:
            raise ValueError(f"${THREADS_ENV} must be a whole number of threads, got {value!r}") from None
        if n < 1:
            raise ValueError(f"${THREADS_ENV} must be >= 1, got {n}")
        return n
    if "PYTEST_CURRENT_TEST" in os.environ or "PYTEST_XDIST_WORKER" in os.environ:
        return 1
    from t2i_debias.threads import available_cores

    return available_cores()


@contextmanager
def all_cores() -> Iterator[int]:
    """Run the block with `training_threads()` torch threads, then restore the previous setting."""
    import torch

    before = torch.get_num_threads()
    n = training_threads()
    torch.set_num_threads(n)
    try:
        yield n
    finally:
        torch.set_num_threads(before)


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
