"""Reading pictures from files or uploads, with every way one can be bad named plainly.

``read_image(source)`` -> HxWx3 uint8 RGB: a path or a binary file object, any format Pillow
reads, the EXIF orientation applied (camera photos), refused before decoding when it has more
than ``max_pixels`` pixels (a guard against decompression bombs: a small file that decodes to
gigabytes). Every failure is an ``ImageReadError`` (a ValueError) saying what is wrong and
what to do.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
from sam2kit.errors import ImageReadError

# Pillow's own default limit (PIL.Image.MAX_IMAGE_PIXELS when sam2kit was imported)
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


def read_image(source, max_pixels: int | None = DEFAULT_MAX_PIXELS, name: str | None = None) -> np.ndarray:
    """HxWx3 uint8 RGB array of a picture file.

    source: a path, or a binary file object (an upload); name: how to call it in messages.
    max_pixels: refuse pictures with more pixels than this (None: no limit of ours; Pillow's
    ``PIL.Image.MAX_IMAGE_PIXELS`` still refuses pictures over twice its value).
    """
    if name:
        label = repr(name)
    else:
        label = repr(str(source)) if isinstance(source, (str, Path)) else "the upload"
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise ImageReadError(f"image {label} does not exist; check the path")
        if path.is_dir():
            raise ImageReadError(f"{label} is a folder, not an image file; give an image (PNG, JPEG, ...)")
    try:
        with warnings.catch_warnings():  # our own limit below says more than Pillow's warning
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(source)
        with im:
            w, h = im.size
            if max_pixels is not None and w * h > max_pixels:
                raise ImageReadError(_too_big(label, w, h, max_pixels))
            im = ImageOps.exif_transpose(im)
            return np.array(im.convert("RGB"))
    except ImageReadError:
        raise
    except UnidentifiedImageError:
        raise ImageReadError(f"cannot read image {label}: not an image format Pillow recognises; "
                             "give a PNG, JPEG, WebP, TIFF or BMP file") from None
    except PermissionError:
        raise ImageReadError(f"cannot read image {label}: permission denied; make it readable "
                             "(chmod) or copy it somewhere readable") from None
    except Image.DecompressionBombError as e:
        raise ImageReadError(
            f"cannot read image {label}: {' '.join(str(e).split())} Pillow refuses pictures over twice "
            f"PIL.Image.MAX_IMAGE_PIXELS ({Image.MAX_IMAGE_PIXELS}) as possible decompression bombs; "
            "if you trust the file, raise that limit too (the command line's --max-pixels does), "
            "or scale the picture down") from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise ImageReadError(f"cannot read image {label}: {' '.join(str(e).split()) or type(e).__name__}; "
                             "the file is damaged or incomplete, export or download it again") from None


def _too_big(label: str, w: int, h: int, limit: int) -> str:
    return (f"image {label} is {w}x{h} = {w * h:,} pixels, over the limit of {limit:,} pixels (a guard "
            f"against decompression bombs); if you trust the file, raise the limit (max_pixels=, or "
            f"--max-pixels on the command line), or scale the picture down")


def allow_pixels(max_pixels: int | None) -> None:
    """Let Pillow open pictures of up to ``max_pixels`` pixels (raise its process-wide
    ``MAX_IMAGE_PIXELS`` where it is lower; None: no limit). For a program's own process
    (the command line, the server), like any process-wide setting."""
    if max_pixels is None:
        Image.MAX_IMAGE_PIXELS = None
    elif Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < max_pixels:
        Image.MAX_IMAGE_PIXELS = max_pixels
