"""Open an image file as RGB, or fail with an error that names the file and says why (DESIGN.md §6).

Every stage reads images through `open_rgb`: a decompression bomb (a header claiming more pixels
than PIL allows), a truncated file, a file that is not an image, or any other decode error becomes
an `ImageReadError` whose `status` (core.vocab.IMAGE_STATUSES) a per-row stage records as the skip
reason, and whose message a whole-folder stage shows as is.

Grey images of more than 8 bits are scaled to 8 bits by their range, not clipped (PIL's own
convert("RGB") turns a 16-bit PNG white and a float TIFF black): `I;16` by 65535; `I` (32-bit int)
as is when its values lie in 0..255, by 65535 when in 0..65535, else from its minimum to its maximum;
`F` (float) by 1 when in 0..1, as is when in 0..255, else from its minimum to its maximum (NaN and
infinities count as 0). `is_constant` tells a picture with nothing in it (one colour everywhere).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from t2i_debias.core.errors import InputError
from t2i_debias.core.vocab import (
    STATUS_MISSING_IMAGE,
    STATUS_NOT_AN_IMAGE,
    STATUS_TOO_LARGE,
    STATUS_TRUNCATED,
    STATUS_UNREADABLE,
)


class ImageReadError(InputError):
    """An image file that cannot be used; `status` is the skip reason, the message starts with the path."""

    def __init__(self, status: str, message: str, path: str | Path | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.path = Path(path) if path is not None else None


def open_rgb(path: str | Path) -> Image.Image:
    """The image at `path`, decoded and converted to RGB; ImageReadError (naming the file) otherwise."""
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(STATUS_MISSING_IMAGE, f"{p}: no such file", p)
    try:
        with Image.open(p) as im:
            im.load()
            return to_rgb(im)
    except Image.DecompressionBombError as e:
        raise ImageReadError(STATUS_TOO_LARGE, f"{p}: too large to decode safely ({e})", p) from e
    except UnidentifiedImageError as e:
        raise ImageReadError(STATUS_NOT_AN_IMAGE, f"{p}: not an image file PIL can read", p) from e
    except (OSError, EOFError, SyntaxError, ValueError) as e:
        status = STATUS_TRUNCATED if isinstance(e, EOFError) or "truncat" in str(e).lower() else STATUS_UNREADABLE
        raise ImageReadError(status, f"{p}: {status.replace('_', ' ')}: {type(e).__name__}: {e}", p) from e


def to_rgb(im: Image.Image) -> Image.Image:
    """`im` as 8-bit RGB; grey modes of more than 8 bits (I;16*, I, F) are scaled by their range, not clipped."""
    if im.mode.startswith("I;16"):
        grey = np.asarray(im, dtype=np.float64) / 65535.0
    elif im.mode in ("I", "F"):
        a = np.nan_to_num(np.asarray(im, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if im.mode == "F" and lo >= 0.0 and hi <= 1.0:
            grey = a
        elif lo >= 0.0 and hi <= 255.0:
            grey = a / 255.0
        elif im.mode == "I" and lo >= 0.0 and hi <= 65535.0:
            grey = a / 65535.0
        else:
            grey = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    else:
        return im.convert("RGB")
    return Image.fromarray(np.round(np.clip(grey, 0.0, 1.0) * 255.0).astype(np.uint8), "L").convert("RGB")


def is_constant(im: Image.Image) -> bool:
    """True when every pixel of `im` has the same value in every band (an empty image counts too)."""
    if im.width == 0 or im.height == 0:
        return True
    ext = im.getextrema()
    bands = ext if isinstance(ext[0], tuple) else (ext,)
    return all(lo == hi for lo, hi in bands)
