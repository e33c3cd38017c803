"""Run folders (DESIGN.md §6): atomic writes, per-stage `_manifest.json`, skip-if-complete.

Every file a stage writes goes to a temporary name in the same folder and is renamed into place,
so a killed run never leaves a half-written file; the manifest is written last.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from t2i_debias.errors import UserError

MANIFEST = "_manifest.json"
TRACKED_PACKAGES = (
    "t2i-debias", "torch", "diffusers", "transformers", "accelerate", "peft", "deepface",
    "torchmetrics", "torch-fidelity", "open_clip_torch", "numpy", "pandas", "scipy",
)

# Folder of each stage inside a run (DESIGN.md §6).
STAGE_DIRS: dict[str, str] = {
    "mpii": "mpii",
    "labels": "labels",
    "analysis": "analysis",
    "enriched": "enriched",
    "models": "models",
    "prompts": "prompts",
    "generated": "generated",
    "bias": "bias",
    "quality": "quality",
    "sota": "sota",
    "report": "report",
}


# ----------------------------------------------------------------------------- atomic writes
class DiskFullError(UserError, OSError):
    """A write that ran out of disk space (or quota); the message names the file being written."""

    def __str__(self) -> str:
        return str(self.strerror)


def _file_mode() -> int:
    """Mode of a newly created file under the current umask (mkstemp would make it owner-only 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary sibling of `path` for writing; on success fsync and rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, _FILE_MODE)
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT) and not isinstance(e, DiskFullError):
            raise DiskFullError(e.errno, f"no space left on the disk writing {path} ({e.strerror}); free space "
                                "and rerun: finished outputs are intact, the stage resumes") from e
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write bytes atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 text atomically."""
    with atomic_open(path, "w", encoding="utf-8", newline="") as fh:
        fh.write(text)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON (indented, keys sorted) atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n")


def atomic_write_csv(path: str | os.PathLike, df: Any) -> Path:
    """Write a pandas DataFrame as CSV (no index) atomically; text cells a spreadsheet would run are escaped."""
    from t2i_debias.csv_cells import escape_frame

    buf = io.StringIO()
    escape_frame(df).to_csv(buf, index=False)
    return atomic_write_text(path, buf.getvalue())


def atomic_save_image(path: str | os.PathLike, image: Any, format: str | None = None) -> Path:
    """Save a PIL image atomically; the format follows the suffix unless given."""
    path = Path(path)
    fmt = format or {".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower(), "PNG")
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return atomic_write_bytes(path, buf.getvalue())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "item"):  # numpy / torch scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ----------------------------------------------------------------------------- folder swaps
_AT_FDCWD, _RENAME_EXCHANGE = -100, 2
STAGING_MARK = ".staging"  # inside a folder being built beside its destination (Staged)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    rc = fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    if rc == 0:
        return True
    err = ctypes.get_errno()
    if err in (22, 38, 95):  # EINVAL / ENOSYS / EOPNOTSUPP: the file system cannot exchange
        return False
    raise OSError(err, os.strerror(err), f"{a} <-> {b}")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_dir(new: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Put the complete folder `new` at `dest` in one rename (an exchange when `dest` exists); remove the old one.

    A kill leaves `dest` either wholly old or wholly new. Where the file system cannot exchange, the
    old folder is renamed aside first (a kill between the two renames leaves `dest` missing).
    """
    import shutil

    new, dest = Path(new), Path(dest)
    if not dest.exists():
        os.rename(new, dest)
    elif _exchange(new, dest):
        shutil.rmtree(new)  # now the old version
    else:
        old = dest.with_name(f".{dest.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(dest, old)
        os.rename(new, dest)
        shutil.rmtree(old)
    _fsync_dir(dest.parent)
    return dest


class Staged:
    """A new version of folder `dest` built beside it (`.<name>.new`) and swapped in only when complete.

    The finished `dest` stays readable (and untouched) until `commit`; a killed build is resumed by
    the next `open(resume=True)` (the folder carries STAGING_MARK, so a swapped-out old version is not).
    """

    def __init__(self, dest: str | os.PathLike) -> None:
        self.dest = Path(dest)
        self.path = self.dest.parent / f".{self.dest.name}.new"

    def open(self, resume: bool = True) -> Path:
        """Create (or, with `resume`, reuse an unfinished) staging folder and return it."""
        import shutil

        with contextlib.suppress(FileNotFoundError):
            (self.dest / STAGING_MARK).unlink()  # left by a kill just after a commit's swap
        if self.path.exists() and not (resume and (self.path / STAGING_MARK).is_file()):
            shutil.rmtree(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        (self.path / STAGING_MARK).touch()
        return self.path

    def link_from_dest(self, copy: Iterable[str] = ()) -> int:
        """Hard-link the files of `dest` that the staging folder lacks (its manifest excepted); the names in
        `copy` (files appended to in place, like a journal) are copied instead. Returns how many."""
        import shutil

        copy = set(copy)
        n = 0
        if not self.dest.is_dir():
            return 0
        for f in sorted(self.dest.rglob("*")):
            rel = f.relative_to(self.dest)
            target = self.path / rel
            if not f.is_file() or f.name in (MANIFEST, STAGING_MARK) or target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if rel.as_posix() in copy:
                shutil.copy2(f, target)
            else:
                try:
                    os.link(f, target)
                except OSError:
                    shutil.copy2(f, target)
            n += 1
        return n

    def commit(self) -> Path:
        """Swap the staging folder in for `dest` (one rename) and drop the old version."""
        replace_dir(self.path, self.dest)
        with contextlib.suppress(FileNotFoundError):
            (self.dest / STAGING_MARK).unlink()
        return self.dest


# ----------------------------------------------------------------------------- hashing
def hash_bytes(data: bytes) -> str:
    """sha256 hex digest of bytes."""
    return hashlib.sha256(data).hexdigest()


def hash_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def hash_obj(obj: Any) -> str:
    """Stable hash of a JSON-able object (keys sorted): used for config hashes and cache keys."""
    return hash_bytes(json.dumps(obj, sort_keys=True, default=_json_default).encode())


def describe_path(path: str | os.PathLike) -> dict[str, Any]:
    """Size and content hash of a file, or of every file below a folder (a hash of their hashes)."""
    p = Path(path)
    if p.is_file():
        return {"path": str(p), "size": p.stat().st_size, "sha256": hash_file(p)}
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.name != MANIFEST)
        h = hashlib.sha256()
        size = 0
        for f in files:
            h.update(str(f.relative_to(p)).encode())
            h.update(hash_file(f).encode())
            size += f.stat().st_size
        return {"path": str(p), "size": size, "files": len(files), "sha256": h.hexdigest()}
    return {"path": str(p), "missing": True}


def safe_join(root: str | os.PathLike, rel: str) -> Path:
    """Join `rel` under `root`, rejecting absolute paths and anything that escapes `root`."""
    if not rel or os.path.isabs(rel) or rel.startswith(("/", "\\")):
        raise ValueError(f"path {rel!r} must be relative to {root}")
    parts = Path(rel).parts
    if ".." in parts:
        raise ValueError(f"path {rel!r} escapes {root}")
    root_p = Path(root).resolve()
    out = (root_p / rel).resolve()
    if root_p != out and root_p not in out.parents:
        raise ValueError(f"path {rel!r} escapes {root}")
    return out


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that shape results."""
    out = {"python": platform.python_version()}
    for n in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[n] = metadata.version(n)
    return out


# ----------------------------------------------------------------------------- stages
@dataclass
class Stage:
    """One stage of a run: knows its folder, decides whether to skip, and writes its manifest last.

    A stage is complete when its manifest exists and records the same config hash and input hashes.
    """

    name: str
    folder: Path
    config: dict[str, Any]
    inputs: list[Path] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    @property
    def config_hash(self) -> str:
        return hash_obj(self.config)

    def _inputs(self) -> list[dict[str, Any]]:
        return [describe_path(p) for p in self.inputs]

    def read_manifest(self) -> dict[str, Any] | None:
        """The stage's manifest, or None when missing or unreadable."""
        try:
            return json.loads(self.manifest_path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_complete(self) -> bool:
        """True when a manifest with the same config hash and the same inputs exists."""
        m = self.read_manifest()
        if not m or m.get("stage") != self.name or m.get("config_hash") != self.config_hash:
            return False
        want = {i["path"]: i.get("sha256") for i in self._inputs()}
        have = {i["path"]: i.get("sha256") for i in m.get("inputs", [])}
        if want != have:
            return False
        return all(Path(o["path"]).exists() for o in m.get("outputs", []))

    def begin(self) -> None:
        """Mark the stage as in progress: remove a stale manifest so a crash cannot look complete."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.manifest_path.unlink()
        self.started = time.time()

    def finish(self, outputs: Iterable[str | os.PathLike] = (), extra: dict[str, Any] | None = None) -> Path:
        """Write `_manifest.json` (last), recording config hash, inputs, outputs, versions and wall time."""
        manifest = {
            "stage": self.name,
            "config_hash": self.config_hash,
            "config": self.config,
            "inputs": self._inputs(),
            "outputs": [describe_path(o) for o in outputs],
            "versions": package_versions(),
            "argv": sys.argv,
            "wall_time_s": round(time.time() - self.started, 3),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        if extra:
            manifest["extra"] = extra
        return atomic_write_json(self.manifest_path, manifest)


def finished_manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a stage folder whose stage finished (manifest readable, its outputs present), else None."""
    try:
        m = json.loads((Path(folder) / MANIFEST).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    if not isinstance(m, dict) or not all(Path(o.get("path", "")).exists() for o in m.get("outputs", [])):
        return None
    return m


def require_finished(folder: str | os.PathLike, stage: str, run_dir: str | os.PathLike | None = None
                     ) -> dict[str, Any]:
    """The manifest of `folder`, or MissingInputError "<folder> is incomplete (no manifest): rerun the <stage> stage".

    A stage reads only inputs whose producing stage finished: a folder left by a killed or failed
    run (or one written by hand) has no manifest, and reading it would give silently wrong results.
    """
    from t2i_debias.errors import MissingInputError

    m = finished_manifest(folder)
    if m is None:
        p = Path(folder)
        shown = p
        if run_dir is not None:
            with contextlib.suppress(ValueError):
                shown = p.relative_to(run_dir)
        why = "no manifest" if not (p / MANIFEST).exists() else "manifest unreadable or outputs missing"
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
