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
import logging
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from t2i_debias.errors import RunLockedError, UserError

_log = logging.getLogger(__name__)
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


def old_path(dest: str | os.PathLike) -> Path:
    """Where replace_dir puts the old version of `dest` aside on a file system that cannot exchange folders."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.old")


def finish_exchange(dest: str | os.PathLike) -> bool:
    """Finish a replace_dir that a kill cut between its two renames; True when it had to.

    Only replace_dir's fallback makes `.<name>.old`, and only while `dest` is missing: then the staged
    `.<name>.new` is the complete replacement (commit runs only on a finished build), so it is put in
    place, not rebuilt. Without it the old version goes back. A leftover `.old` beside `dest` is removed.
    """
    import shutil

    dest = Path(dest)
    old, new = old_path(dest), dest.parent / f".{dest.name}.new"
    if not old.is_dir() or old.is_symlink() or not _may_write(dest):
        return False
    if not dest.exists():
        os.rename(new if new.is_dir() else old, dest)
        _fsync_dir(dest.parent)
        with contextlib.suppress(FileNotFoundError):
            (dest / STAGING_MARK).unlink()  # as Staged.commit does after its swap
    shutil.rmtree(old, ignore_errors=True)
    return True


def replace_dir(new: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Put the complete folder `new` at `dest` in one rename (an exchange when `dest` exists); remove the old one.

    A kill leaves `dest` either wholly old or wholly new. Where the file system cannot exchange, the
    old folder is renamed aside first; a kill between the two renames leaves `dest` missing beside
    `.<name>.old`, and the next finish_exchange (every Staged and Stage runs it) completes the swap.
    """
    import shutil

    new, dest = Path(new), Path(dest)
    if not dest.exists():
        os.rename(new, dest)
    elif _exchange(new, dest):
        shutil.rmtree(new)  # now the old version
    else:
        old = old_path(dest)
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
        finish_exchange(self.dest)

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


# ----------------------------------------------------------------------------- litter
# A temporary file of atomic_open: "." + the target's name + "." + mkstemp's 8 random characters + ".tmp".
TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")


def remove_litter(folder: str | os.PathLike, outputs: Iterable[Path] = (), finished: bool = False) -> list[Path]:
    """Remove what killed runs of this stage left: atomic_open temp files in `folder` (any depth) and beside
    its `outputs`, and `.<folder>.old`; with `finished` (the stage is complete) also a staging `.<folder>.new`.

    Only the project's own temp names are touched, and only under the stage's folder and its outputs'
    folders. A `.new` that is the complete replacement of a cut exchange is put in place first
    (finish_exchange), never removed. One writer per run (lock_run) makes this safe. Returns what went.
    """
    import shutil

    folder = Path(folder)
    finish_exchange(folder)
    gone: list[Path] = []
    candidates: list[Path] = list(folder.rglob(".*.tmp")) if folder.is_dir() else []
    for o in outputs:
        o = Path(o)
        if o.parent.is_dir():
            candidates += [t for t in o.parent.glob(f".{glob_escape(o.name)}.*.tmp")]
    for t in sorted(set(candidates)):
        if TEMP_RE.match(t.name) and t.is_file() and not t.is_symlink():
            with contextlib.suppress(FileNotFoundError):
                t.unlink()
                gone.append(t)
    staging = folder.parent / f".{folder.name}.new"
    if finished and folder.is_dir() and staging.is_dir() and not staging.is_symlink():
        shutil.rmtree(staging)
        gone.append(staging)
    if gone:
        _log.info("removed %d temporary file(s) left by a killed run: %s", len(gone),
                  ", ".join(str(g) for g in gone[:3]) + (" ..." if len(gone) > 3 else ""))
    return gone


def glob_escape(name: str) -> str:
    """`name` with glob's special characters made literal."""
    return re.sub(r"([*?\[])", r"[\1]", name)


# ----------------------------------------------------------------------------- one writer per run
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


def _take_claim(path: str | os.PathLike) -> None:
    """Lock the claimed run folder holding `path`, if any (RunLockedError when another process writes it)."""
    p = os.path.abspath(path)
    for key in [k for k in _CLAIMED if _inside(p, k)]:
        _CLAIMED.remove(key)
        hold_run(key)


def _may_write(path: str | os.PathLike) -> bool:
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


# ----------------------------------------------------------------------------- stages
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
        _take_claim(self.folder)
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
    from t2i_debias.errors import MissingInputError

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
