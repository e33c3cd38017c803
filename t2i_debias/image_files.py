"""Open an image file as RGB, or fail with an error that names the file and says why (DESIGN.md §6).

Every stage reads images through `open_rgb`: a decompression bomb (a header claiming more pixels
than PIL allows), a truncated file, a file that is not an image, or any other decode error becomes
an `ImageReadError` whose `status` (attributes.IMAGE_STATUSES) a per-row stage records as the skip
reason, and whose message a whole-folder stage shows as is.
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError

from t2i_debias.attributes import (
    STATUS_MISSING_IMAGE,
    STATUS_NOT_AN_IMAGE,
    STATUS_TOO_LARGE,
    STATUS_TRUNCATED,
    STATUS_UNREADABLE,
)
from t2i_debias.errors import InputError


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
            return im.convert("RGB")
    except Image.DecompressionBombError as e:
        raise ImageReadError(STATUS_TOO_LARGE, f"{p}: too large to decode safely ({e})", p) from e
    except UnidentifiedImageError as e:
        raise ImageReadError(STATUS_NOT_AN_IMAGE, f"{p}: not an image file PIL can read", p) from e
    except (OSError, EOFError, SyntaxError, ValueError) as e:
        status = STATUS_TRUNCATED if isinstance(e, EOFError) or "truncat" in str(e).lower() else STATUS_UNREADABLE
        raise ImageReadError(status, f"{p}: {status.replace('_', ' ')}: {type(e).__name__}: {e}", p) from e
