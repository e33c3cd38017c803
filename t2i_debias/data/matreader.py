"""A small, fast reader for MATLAB v5 `.mat` files into plain Python values.

Why: `scipy.io.loadmat` builds a numpy array for each of the ~2 million leaf values of the MPII
annotation file (mostly keypoints) and takes 10-20 s. This reader walks the same bytes with
`struct.unpack_from`, builds plain Python values and can skip whole struct fields (e.g.
`annopoints`) by their byte length without decoding them.

Value mapping (column-major order, like MATLAB's linear indexing):
  struct array -> list[dict[field, value]] (a 1x1 struct is a one-element list; 0x0 -> [])
  cell array   -> list of values
  char array   -> str (one row) or list[str] (several rows); empty -> ""
  numeric      -> int/float when 1 element, tuple when several, () when empty
  skipped field-> SKIPPED
Sparse, function-handle and opaque (MATLAB class object) values raise MatFormatError; callers
may fall back to scipy.io.loadmat.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Collection
from pathlib import Path
from typing import Any

# Data element types (MAT-file format, Table 1-1).
MI_INT8, MI_UINT8, MI_INT16, MI_UINT16, MI_INT32, MI_UINT32 = 1, 2, 3, 4, 5, 6
MI_SINGLE, MI_DOUBLE, MI_INT64, MI_UINT64 = 7, 9, 12, 13
MI_MATRIX, MI_COMPRESSED, MI_UTF8, MI_UTF16, MI_UTF32 = 14, 15, 16, 17, 18
_NUM_CODES = {MI_INT8: "b", MI_UINT8: "B", MI_INT16: "h", MI_UINT16: "H", MI_INT32: "i", MI_UINT32: "I",
              MI_SINGLE: "f", MI_DOUBLE: "d", MI_INT64: "q", MI_UINT64: "Q"}
_SIZES = {c: struct.calcsize(c) for c in _NUM_CODES.values()}
# Array classes (Table 1-3).
MX_CELL, MX_STRUCT, MX_OBJECT, MX_CHAR, MX_SPARSE = 1, 2, 3, 4, 5
MX_DOUBLE, MX_SINGLE = 6, 7
MX_NUMERIC = frozenset(range(6, 16))
_FLOAT_CLASSES = frozenset((MX_DOUBLE, MX_SINGLE))


class MatFormatError(ValueError):
    """The file is not a MATLAB v5 file this reader understands; the message names file and offset."""


class MatVariableError(MatFormatError):
    """The file reads as MAT v5 but lacks a requested variable; the message lists the variables it has."""


class _Skipped:
    def __repr__(self) -> str:
        return "SKIPPED"


SKIPPED = _Skipped()


class _Reader:
    """Walks one decompressed MAT v5 element buffer."""

    def __init__(self, buf: bytes, endian: str, where: str, skip_fields: Collection[str]) -> None:
        self.buf = buf
        self.e = endian
        self.where = where
        self.skip = frozenset(skip_fields)
        self._u32 = struct.Struct(endian + "I").unpack_from
        self._head = struct.Struct(endian + "IIIIIIIIiiI").unpack_from
        self._scalar = {c: struct.Struct(endian + c).unpack_from for c in _NUM_CODES.values()}

    def fail(self, pos: int, msg: str) -> MatFormatError:
        return MatFormatError(f"{self.where}: byte {pos}: {msg}")

    def tag(self, pos: int) -> tuple[int, int, int, int]:
        """(type, nbytes, data start, next element start) of the element at `pos`."""
        v = self._u32(self.buf, pos)[0]
        if v >> 16:  # small data element: type and size packed into 4 bytes, data in the next 4
            return v & 0xFFFF, v >> 16, pos + 4, pos + 8
        n = self._u32(self.buf, pos + 4)[0]
        return v, n, pos + 8, pos + 8 + ((n + 7) & ~7)

    def matrix(self, pos: int) -> tuple[Any, int]:
        """Parse the miMATRIX element at `pos`; return (value, next position)."""
        buf = self.buf
        if pos + 48 <= len(buf):
            # Fast path: the header of a 2-D array (tag, flags, dims, name tag) in one unpack.
            mtype, n, ft, fn, flags, _, dt, dn, d0, d1, nm = self._head(buf, pos)
            if mtype != MI_MATRIX:
                raise self.fail(pos, f"expected miMATRIX (14), found data type {mtype}")
            nxt = pos + 8 + ((n + 7) & ~7)
            if n == 0:
                return (), nxt
            if ft == MI_UINT32 and fn == 8 and dt == MI_INT32 and dn == 8:
                dims: tuple[int, ...] = (d0, d1)
                numel = d0 * d1
                p = pos + 48 if nm >> 16 else pos + 48 + ((self._u32(buf, pos + 44)[0] + 7) & ~7)
                return self._body(pos, p, flags, dims, numel, pos + 8 + n), nxt
        mtype, n, d, nxt = self.tag(pos)
        if mtype != MI_MATRIX:
            raise self.fail(pos, f"expected miMATRIX (14), found data type {mtype}")
        if n == 0:
            return (), nxt
        _, _, fd, p = self.tag(d)  # array flags
        flags = self._u32(buf, fd)[0]
        _, dn, dd, p = self.tag(p)  # dimensions
        dims = struct.unpack_from(f"{self.e}{dn // 4}i", buf, dd)
        numel = 1
        for k in dims:
            numel *= k
        _, _, _, p = self.tag(p)  # array name (unused inside containers)
        return self._body(pos, p, flags, dims, numel, d + n), nxt

    def _body(self, pos: int, p: int, flags: int, dims: tuple[int, ...], numel: int, end: int) -> Any:
        """The value of a miMATRIX whose sub-elements after the name start at `p`."""
        cls = flags & 0xFF
        if cls in MX_NUMERIC:
            return self._numeric(p, cls, numel)
        if cls == MX_CHAR:
            return self._char(p, dims, numel)
        if cls == MX_CELL:
            out = []
            for _ in range(numel):
                v, p = self.matrix(p)
                out.append(v)
            return out
        if cls in (MX_STRUCT, MX_OBJECT):
            if cls == MX_OBJECT:
                _, _, _, p = self.tag(p)  # class name
            return self._struct(p, numel, end)
        raise self.fail(pos, f"unsupported MATLAB array class {cls} (sparse/function/opaque)")

    def _numeric(self, p: int, cls: int, numel: int) -> Any:
        """Real part only (an imaginary part, if any, is ignored)."""
        v = self._u32(self.buf, p)[0]
        if v >> 16:
            mtype, n, d = v & 0xFFFF, v >> 16, p + 4
        else:
            mtype, n, d = v, self._u32(self.buf, p + 4)[0], p + 8
        code = _NUM_CODES.get(mtype)
        if code is None:
            raise self.fail(p, f"unsupported numeric storage type {mtype}")
        if numel == 0:
            return ()
        if n != numel * _SIZES[code]:
            raise self.fail(p, f"numeric data of {n} bytes for {numel} elements of type {mtype}")
        if numel == 1:
            x = self._scalar[code](self.buf, d)[0]
            if cls in _FLOAT_CLASSES:
                return float(x) if code not in "fd" else x
            return int(x) if code in "fd" else x
        vals = struct.unpack_from(f"{self.e}{numel}{code}", self.buf, d)
        if cls in _FLOAT_CLASSES:
            return tuple(float(x) for x in vals) if code not in "fd" else vals
        return tuple(int(x) for x in vals) if code in "fd" else vals

    def _char(self, p: int, dims: tuple[int, ...], numel: int) -> Any:
        mtype, n, d, _ = self.tag(p)
        raw = self.buf[d:d + n]
        if mtype in (MI_UINT16, MI_UTF16):
            text = raw.decode("utf-16-le" if self.e == "<" else "utf-16-be")
        elif mtype == MI_UTF8 or mtype in (MI_UINT8, MI_INT8):
            text = raw.decode("utf-8" if mtype == MI_UTF8 else "latin-1")
        elif mtype in (MI_UTF32, MI_UINT32, MI_INT32):
            text = raw.decode("utf-32-le" if self.e == "<" else "utf-32-be")
        else:
            raise self.fail(p, f"unsupported char storage type {mtype}")
        if numel == 0:
            return ""
        rows = dims[0] if dims else 1
        if rows <= 1:
            return text
        cols = len(text) // rows  # column-major: row r is text[r::rows]
        return [text[r::rows][:cols] for r in range(rows)]

    def _struct(self, p: int, numel: int, end: int) -> list[dict[str, Any]]:
        _, _, d, p = self.tag(p)
        name_len = struct.unpack_from(self.e + "i", self.buf, d)[0]
        _, n, d, p = self.tag(p)
        names = [self.buf[d + k:d + k + name_len].split(b"\0", 1)[0].decode("ascii")
                 for k in range(0, n, name_len)] if name_len else []
        out: list[dict[str, Any]] = []
        skip = self.skip
        for _ in range(numel):
            rec: dict[str, Any] = {}
            for f in names:
                if f in skip:
                    _, _, _, p = self.tag(p)
                    rec[f] = SKIPPED
                else:
                    rec[f], p = self.matrix(p)
            out.append(rec)
        if p > end:
            raise self.fail(p, "struct data runs past its element")
        return out


def read_mat(path: str | Path, variables: Collection[str] | None = None,
             skip_fields: Collection[str] = ()) -> dict[str, Any]:
    """The variables of a MATLAB v5 file (all, or those named) as plain Python values.

    skip_fields: struct field names whose values are not decoded (they read as SKIPPED).
    """
    path = Path(path)
    data = path.read_bytes()
    if len(data) < 128:
        raise MatFormatError(f"{path}: too short for a MATLAB v5 file")
    endian = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if endian is None:
        raise MatFormatError(f"{path}: not a MATLAB v5 file (no endian indicator in the header)")
    version = struct.unpack_from(endian + "H", data, 124)[0]
    if version != 0x0100:
        raise MatFormatError(f"{path}: MAT-file version {version:#06x} is not v5 (v7.3/HDF5 files are not supported)")
    out: dict[str, Any] = {}
    names: list[str] = []
    pos = 128
    u32x2 = struct.Struct(endian + "II").unpack_from
    if len(data) > pos and len(data) < pos + 8:
        raise MatFormatError(f"{path}: truncated: {len(data)} bytes end inside the first element's tag")
    while pos + 8 <= len(data):
        mtype, n = u32x2(data, pos)
        if pos + 8 + n > len(data):
            raise MatFormatError(f"{path}: truncated: the element at byte {pos} needs {n} bytes, the file has "
                                 f"{len(data) - pos - 8} more (an interrupted copy or download?)")
        if mtype == MI_COMPRESSED:
            try:
                buf = zlib.decompress(data[pos + 8:pos + 8 + n])
            except zlib.error as e:
                raise MatFormatError(f"{path}: byte {pos}: bad compressed element: {e}") from e
            pos += 8 + n
            start = 0
        elif mtype == MI_MATRIX:
            buf, start = data, pos
            pos += 8 + ((n + 7) & ~7)
        else:
            pos += 8 + ((n + 7) & ~7)
            continue
        rd = _Reader(buf, endian, str(path), skip_fields)
        name = _element_name(rd, start)
        names.append(name)
        if variables is not None and name not in variables:
            continue
        out[name] = rd.matrix(start)[0]
    if variables is not None and (missing := set(variables) - set(out)):
        raise MatVariableError(f"{path}: variable(s) not found: {', '.join(sorted(missing))} "
                               f"(found: {', '.join(names) or 'no variables'})")
    return out


def _element_name(rd: _Reader, pos: int) -> str:
    """The array name of the top-level miMATRIX element at `pos`."""
    mtype, n, d, _ = rd.tag(pos)
    if mtype != MI_MATRIX or n == 0:
        return ""
    _, _, _, p = rd.tag(d)
    _, _, _, p = rd.tag(p)
    _, nn, nd, _ = rd.tag(p)
    return rd.buf[nd:nd + nn].decode("ascii", errors="replace")
