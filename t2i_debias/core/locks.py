"""One writer per run folder (DESIGN.md §6): an fcntl lock on `<run>/.lock`, held until the process exits.

A process claims the run folders it will write when it parses its flags; the first stage it starts
there takes the lock, so a second process writing the same run fails at once, naming the holder.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from t2i_debias.core.errors import RunLockedError, UserError

LOCK_FILE = ".lock"
_HELD: dict[str, IO[str]] = {}  # run folder (absolute) -> its open, locked lock file


def check_run_dir(run_dir: str | os.PathLike) -> Path:
    """Refuse a run folder that is a symlink: two names for one run let a config meant for one overwrite the other."""
    p = Path(run_dir)
    if p.is_symlink():
        raise UserError(f"run folder {p} is a symlink (to {os.path.realpath(p)}); a run is written only through "
                        "its real folder: use that path as --run_dir, or copy the run to make a new one")
    return p


def _rank() -> int:
    """This process's rank under accelerate/torchrun (0 when not distributed)."""
    ranks = [0]
    for var in ("RANK", "LOCAL_RANK"):
        with contextlib.suppress(ValueError):
            ranks.append(int(os.environ.get(var, "0") or 0))
    return max(ranks)


def hold_run(run_dir: str | os.PathLike) -> Path | None:
    """Take this process's writer lock on `run_dir` until it exits (an fcntl lock on `<run_dir>/.lock`).

    A second process fails at once with RunLockedError naming the holder (pid and command line).
    Re-entrant within a process; processes of rank > 0 of a distributed launch share rank 0's lock.
    Returns the lock file, or None when not taken (rank > 0).
    """
    import fcntl

    p = check_run_dir(run_dir)
    key = os.path.abspath(p)
    with contextlib.suppress(ValueError):
        _CLAIMED.remove(key)
    if key in _HELD:
        return Path(key) / LOCK_FILE
    if _rank() != 0:
        return None
    p.mkdir(parents=True, exist_ok=True)
    lock = p / LOCK_FILE
    fh = open(lock, "a+", encoding="utf-8")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        holder = fh.read().strip() or "another process"
        fh.close()
        raise RunLockedError(f"run folder {p} is in use by {holder}; wait for it to finish (or stop it), "
                             "or use another run folder") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()} ({' '.join(sys.argv) or sys.executable})\n")
    fh.flush()
    _HELD[key] = fh
    return lock


def release_run(run_dir: str | os.PathLike) -> None:
    """Give up this process's writer lock on `run_dir` (no-op when not held)."""
    fh = _HELD.pop(os.path.abspath(run_dir), None)
    if fh is not None:
        fh.close()


@contextlib.contextmanager
def lock_run(run_dir: str | os.PathLike) -> Iterator[None]:
    """Hold the writer lock on `run_dir` for a block (kept when the process held it already)."""
    held = os.path.abspath(run_dir) in _HELD
    hold_run(run_dir)
    try:
        yield
    finally:
        if not held:
            release_run(run_dir)


_CLAIMED: list[str] = []  # run folders this process will write (cli.parse); locked by the first Stage inside


def claim_run(run_dir: str | os.PathLike) -> None:
    """Declare that this process writes `run_dir`: refuse a symlink now, take the lock when a stage first starts
    there (so parsing alone creates nothing, and the check comes before any stage reads or writes)."""
    check_run_dir(run_dir)
    key = os.path.abspath(run_dir)
    if key not in _HELD and key not in _CLAIMED:
        _CLAIMED.append(key)


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def take_claim(path: str | os.PathLike) -> None:
    """Lock the claimed run folder holding `path`, if any (RunLockedError when another process writes it)."""
    p = os.path.abspath(path)
    for key in [k for k in _CLAIMED if _inside(p, k)]:
        _CLAIMED.remove(key)
        hold_run(key)


def may_write(path: str | os.PathLike) -> bool:
    """Whether this process may change `path`: it holds its run's lock, or no process does (or it is in no run)."""
    import fcntl

    if locked_run_containing(path) is not None:
        return True
    for folder in Path(os.path.abspath(path)).parents:
        lock = folder / LOCK_FILE
        if lock.is_file():
            try:
                with open(lock, "a", encoding="utf-8") as fh:
                    fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: nobody writes the run (closing unlocks)
                return True
            except BlockingIOError:
                return False
    return True


def locked_run_containing(path: str | os.PathLike) -> Path | None:
    """The run folder this process holds that contains `path`, if any (the deepest)."""
    p = os.path.abspath(path)
    found = [r for r in _HELD if _inside(p, r)]
    return Path(max(found, key=len)) if found else None
