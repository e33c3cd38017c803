"""Atomic file writes, whole-folder swaps, content hashes and safe paths for run folders (DESIGN.md §6).

Every file a stage writes goes to a temporary name in the same folder and is renamed into place,
so a killed run never leaves a half-written file; a folder is rebuilt beside itself and swapped in.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from t2i_debias.core.errors import UserError
from t2i_debias.core.locks import may_write

_log = logging.getLogger(__name__)
MANIFEST = "_manifest.json"  # a stage's manifest (core.stage), written last; not part of the stage's content


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
    from t2i_debias.core.csv_cells import escape_frame

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
    if not old.is_dir() or old.is_symlink() or not may_write(dest):
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
