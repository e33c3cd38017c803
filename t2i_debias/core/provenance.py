"""Which code made a result: the git commit of a checkout, recorded beside models and results tables."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(root: Path, short: int | None = 12, mark_dirty: bool = True) -> str:
    """Commit of the checkout at `root` (`short` hex digits, all 40 with None), `+dirty` when tracked files
    differ and `mark_dirty`; "unknown" outside git."""
    args = ["git", "rev-parse", f"--short={short}" if short else "HEAD"] + (["HEAD"] if short else [])
    try:
        sha = subprocess.run(args, cwd=root, capture_output=True, text=True, check=True).stdout.strip()
        dirty = mark_dirty and subprocess.run(["git", "diff", "--quiet", "HEAD", "--"], cwd=root,
                                              capture_output=True).returncode != 0
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")
