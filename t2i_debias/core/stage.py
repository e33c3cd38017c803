"""A run's stages (DESIGN.md §6): per-stage `_manifest.json`, written last, and skip-if-complete.

A stage is complete when its manifest records the same config hash and inputs and its outputs still
hold; a stage reads only inputs whose producing stage finished (require_finished).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from t2i_debias.core.errors import MissingInputError
from t2i_debias.core.files import (
    MANIFEST,
    atomic_write_json,
    describe_path,
    finish_exchange,
    hash_obj,
    remove_litter,
)
from t2i_debias.core.locks import locked_run_containing, take_claim

_log = logging.getLogger(__name__)
TRACKED_PACKAGES = (
    "t2i-debias", "torch", "diffusers", "transformers", "accelerate", "peft", "deepface",
    "torchmetrics", "torch-fidelity", "open_clip_torch", "numpy", "pandas", "scipy",
)

def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape results."""
    out = {"python": platform.python_version()}
    for n in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[n] = metadata.version(n)
    return out


def path_key(path: str | os.PathLike, root: str | os.PathLike) -> str:
    """How a manifest names `path`: relative to the run folder `root` (POSIX) when inside it, else absolute.

    Relative keys survive moving or copying the run and a relative `[run] root`; data outside the run
    (the MPII files, a reference set) keeps its absolute name, as it does not move with the run.
    """
    p, r = Path(os.path.abspath(path)), Path(os.path.abspath(root))
    try:
        return p.relative_to(r).as_posix()
    except ValueError:
        return str(p)


def _manifest_root(folder: Path, m: dict[str, Any]) -> Path:
    """The run folder a manifest's relative keys are relative to (its `root`, relative to the manifest)."""
    return folder / m.get("root", ".") if isinstance(m.get("root", "."), str) else folder


def _resolve_key(key: Any, root: Path) -> Path | None:
    """The path a manifest key names (None for a malformed key)."""
    if not isinstance(key, str) or not key:
        return None
    return Path(os.path.normpath(key if os.path.isabs(key) else os.path.join(os.path.abspath(root), key)))


def _tree_stats(p: Path) -> tuple[int, int, int]:
    """(total size, number of files, newest mtime_ns) of a file, or of every file below a folder but manifests."""
    if p.is_file():
        st = p.stat()
        return st.st_size, 1, st.st_mtime_ns
    size = n = newest = 0
    for f in p.rglob("*"):
        if f.is_file() and f.name != MANIFEST:
            st = f.stat()
            size, n, newest = size + st.st_size, n + 1, max(newest, st.st_mtime_ns)
    return size, n, newest


def describe_output(path: str | os.PathLike) -> dict[str, Any]:
    """describe_path plus the newest mtime_ns, so a finished output can be checked without rehashing it."""
    d = describe_path(path)
    if not d.get("missing"):
        d["mtime_ns"] = _tree_stats(Path(path))[2]
    return d


def output_problem(entry: Any, root: Path) -> str | None:
    """Why a manifest's output entry no longer holds (None when it does): missing, another size, or content.

    Size (and file count) are checked always; when the mtime differs from the recorded one, the content
    hash decides (so a copy that kept the bytes but not the times still counts).
    """
    path = _resolve_key(entry.get("path") if isinstance(entry, dict) else None, root)
    if path is None:
        return "malformed output entry"
    if not path.exists():
        return f"{path} is missing"
    size, n, mtime = _tree_stats(path)
    if entry.get("size") is not None and size != entry["size"] or path.is_dir() and n != entry.get("files", n):
        return f"{path} changed since the stage finished (size {size}, was {entry.get('size')})"
    if "mtime_ns" not in entry or entry["mtime_ns"] == mtime or "sha256" not in entry:
        return None  # an older manifest records no mtime: its size check is all there is
    if describe_path(path).get("sha256") != entry["sha256"]:
        return f"{path} changed since the stage finished (content differs)"
    return None


def _outputs_problem(folder: Path, m: dict[str, Any]) -> str | None:
    """The first output of manifest `m` (in `folder`) that no longer holds, or None."""
    outputs = m.get("outputs", [])
    if not isinstance(outputs, list):
        return "malformed outputs"
    root = _manifest_root(folder, m)
    for o in outputs:
        if (why := output_problem(o, root)) is not None:
            return why
    return None


def describe_stats(files: Iterable[str | os.PathLike], label: str, root: str | os.PathLike) -> dict[str, Any]:
    """One manifest input for many files identified by size and mtime (cheap for thousands of images)."""
    rows = []
    for f in files:
        try:
            st = os.stat(f)
            rows.append([path_key(f, root), st.st_size, st.st_mtime_ns])
        except OSError:
            rows.append([path_key(f, root), None, None])
    return {"path": label, "files": len(rows), "sha256": hash_obj(sorted(rows))}


@dataclass
class Stage:
    """One stage of a run: knows its folder, decides whether to skip, and writes its manifest last.

    A stage is complete when its manifest exists, records the same config hash and input hashes, and
    its outputs still hold (size, mtime, else content). Inputs and outputs are keyed relative to the
    run folder `root` (default: the folder holding the stage folder, or the run this process locked).
    `stat_inputs`: files (images) that count as inputs by size and mtime, under one manifest entry.
    """

    name: str
    folder: Path
    config: dict[str, Any]
    inputs: list[Path] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    root: Path | None = None
    stat_inputs: list[Path] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        take_claim(self.folder)
        if self.root is None:
            self.root = locked_run_containing(self.folder) or self.folder.parent

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    @property
    def config_hash(self) -> str:
        return hash_obj(self.config)

    def _inputs(self) -> list[dict[str, Any]]:
        out = [{**describe_path(p), "path": path_key(p, self.root)} for p in self.inputs]
        if self.stat_inputs:
            out.append(describe_stats(self.stat_inputs, f"{len(self.stat_inputs)} files by size and mtime",
                                      self.root))
        return out

    def read_manifest(self) -> dict[str, Any] | None:
        """The stage's manifest, or None when missing or unreadable (a malformed one is logged and rerun)."""
        finish_exchange(self.folder)
        try:
            m = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
            _log.warning("%s is unreadable (%s): the %s stage reruns", self.manifest_path, e, self.name)
            return None
        if not isinstance(m, dict):
            _log.warning("%s is not a manifest: the %s stage reruns", self.manifest_path, self.name)
            return None
        return m

    def _recorded_inputs(self, m: dict[str, Any]) -> dict[str, Any] | None:
        """The manifest's inputs as {resolved path or label: sha256}, or None when malformed."""
        root = _manifest_root(self.folder, m)
        out: dict[str, Any] = {}
        for i in m.get("inputs", []) if isinstance(m.get("inputs", []), list) else [None]:
            if not isinstance(i, dict) or not isinstance(i.get("path"), str):
                return None
            out[self._input_name(i, root)] = i.get("sha256")
        return out

    @staticmethod
    def _input_name(entry: dict[str, Any], root: Path) -> str:
        return entry["path"] if "files" in entry and "size" not in entry else str(_resolve_key(entry["path"], root))

    def incomplete_reason(self) -> str | None:
        """None when the stage is complete, else why it is not (for the log)."""
        m = self.read_manifest()
        if m is None:
            return "no usable manifest"
        if m.get("stage") != self.name or m.get("config_hash") != self.config_hash:
            return "another stage or config"
        want = {self._input_name(i, self.root): i.get("sha256") for i in self._inputs()}
        if want != self._recorded_inputs(m):
            return "inputs changed"
        return _outputs_problem(self.folder, m)

    def is_complete(self) -> bool:
        """True when a manifest with the same config hash and the same inputs exists and its outputs hold."""
        why = self.incomplete_reason()
        if why not in (None, "no usable manifest", "another stage or config", "inputs changed"):
            _log.warning("[%s] not complete: %s", self.name, why)
        if why is None and self._writer():
            m = self.read_manifest() or {}
            root = _manifest_root(self.folder, m)
            remove_litter(self.folder, [p for o in m.get("outputs", []) if isinstance(o, dict)
                                        and (p := _resolve_key(o.get("path"), root)) is not None], finished=True)
        return why is None

    def _writer(self) -> bool:
        """Whether this process holds the run's writer lock (only the writer removes litter)."""
        return locked_run_containing(self.folder) is not None

    def begin(self) -> None:
        """Mark the stage as in progress: remove a stale manifest so a crash cannot look complete."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.manifest_path.unlink()
        if self._writer():
            remove_litter(self.folder)
        self.started = time.time()

    def finish(self, outputs: Iterable[str | os.PathLike] = (), extra: dict[str, Any] | None = None) -> Path:
        """Write `_manifest.json` (last), recording config hash, inputs, outputs, versions and wall time."""
        outputs = list(outputs)
        manifest = {
            "stage": self.name,
            "config_hash": self.config_hash,
            "config": self.config,
            "root": Path(os.path.relpath(os.path.abspath(self.root), os.path.abspath(self.folder))).as_posix(),
            "inputs": self._inputs(),
            "outputs": [{**describe_output(o), "path": path_key(o, self.root)} for o in outputs],
            "versions": package_versions(),
            "argv": sys.argv,
            "wall_time_s": round(time.time() - self.started, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if extra:
            manifest["extra"] = extra
        written = atomic_write_json(self.manifest_path, manifest)
        if self._writer():
            remove_litter(self.folder, [Path(o) for o in outputs])
        return written


def finished_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a stage folder whose stage finished (manifest readable, its outputs as recorded), else None."""
    return _finished(Path(folder))[0]


def _finished(folder: Path) -> tuple[dict[str, Any] | None, str]:
    """(manifest, "") of a finished stage folder, else (None, why not)."""
    finish_exchange(folder)
    try:
        m = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return None, "no manifest"
    except (json.JSONDecodeError, UnicodeDecodeError, OSError):
        return None, "manifest unreadable"
    if not isinstance(m, dict):
        return None, "manifest unreadable"
    why = _outputs_problem(folder, m)
    return (m, "") if why is None else (None, why)


def require_finished(folder: str | os.PathLike, stage: str, run_dir: str | os.PathLike | None = None
                     ) -> dict[str, Any]:
    """The manifest of `folder`, or MissingInputError "<folder> is incomplete (no manifest): rerun the <stage> stage".

    A stage reads only inputs whose producing stage finished: a folder left by a killed or failed
    run (or one written by hand) has no manifest, and reading it would give silently wrong results.
    """
    m, why = _finished(Path(folder))
    if m is None:
        p = Path(folder)
        shown = p
        if run_dir is not None:
            with contextlib.suppress(ValueError):
                shown = p.relative_to(run_dir)
            why = why.replace(f"{os.path.abspath(run_dir)}{os.sep}", "")
        raise MissingInputError(f"{shown} is incomplete ({why}): rerun the {stage} stage")
    return m


def run_stage(stage: Stage, body: Any, force: bool = False, log: Any = print) -> bool:
    """Run `body(stage)` unless the stage is complete (then skip); return True when it ran.

    `body` returns the list of output paths, which go into the manifest.
    """
    if stage.is_complete() and not force:
        log(f"[{stage.name}] complete (manifest matches) - skipping; use --force to rerun")
        return False
    stage.begin()
    result = body(stage)
    outputs, extra = (result if isinstance(result, tuple) else (result, None))
    stage.finish(outputs or [], extra)
    log(f"[{stage.name}] done in {time.time() - stage.started:.1f}s -> {stage.folder}")
    return True
