"""How many torch threads one process gets: every available core, shared out among the processes of a launch.

A user's `OMP_NUM_THREADS` wins (the tests set 1: one thread per xdist worker). Otherwise a single
process (`make demo`) takes every core it may run on, and under `accelerate launch` / `torchrun`
the cores are split among the `LOCAL_WORLD_SIZE` processes of the machine.

The toy world's one-process model builds (`training_threads`, `all_cores`) follow `$T2I_DEBIAS_THREADS`
instead, else one thread under pytest, else every available core. Every variable is read by one parser.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

log = logging.getLogger(__name__)

THREADS_ENV = "T2I_DEBIAS_THREADS"


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, which containers and `taskset` narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _positive_int(env: Mapping[str, str], name: str) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number; unset it or give e.g. {name}=4") from None
    if value < 1:
        raise ValueError(f"{name}={raw!r} must be at least 1")
    return value


def default_threads(env: Mapping[str, str] | None = None, cores: int | None = None) -> int:
    """`OMP_NUM_THREADS` when set, else the available cores divided by the local process count (at least 1)."""
    env = os.environ if env is None else env
    asked = _positive_int(env, "OMP_NUM_THREADS")
    if asked is not None:
        return asked
    cores = available_cores() if cores is None else cores
    local = _positive_int(env, "LOCAL_WORLD_SIZE") or 1
    return max(1, cores // local)


def use_available_cores() -> int:
    """Set torch's intra-op threads to `default_threads()` and return that number."""
    import torch

    n = default_threads()
    torch.set_num_threads(n)
    log.info("torch uses %d thread%s (%d core%s available)", n, "" if n == 1 else "s", available_cores(),
             "" if available_cores() == 1 else "s")
    return n


def training_threads(env: Mapping[str, str] | None = None, cores: int | None = None) -> int:
    """Threads for a toy model build: $T2I_DEBIAS_THREADS if set, 1 under pytest, else the available cores."""
    env = os.environ if env is None else env
    asked = _positive_int(env, THREADS_ENV)
    if asked is not None:
        return asked
    if "PYTEST_CURRENT_TEST" in env or "PYTEST_XDIST_WORKER" in env:
        return 1
    return available_cores() if cores is None else cores


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
