"""What a pixel means: every image mode and array dtype we accept, and how it becomes uint8 RGB.

The cache stores uint8 (3, S, S). Anything else is converted here, by one documented rule, or
refused with one line naming the file or key, its mode or dtype, and its value range. Never
clipped silently: Pillow's own ``convert("RGB")`` clips 16-bit and 32-bit images to 255, which
turns a 16-bit TIFF tile into a blank white image.

Files are first turned upright by their orientation tag (EXIF ``Orientation`` in a JPEG, the TIFF
``Orientation`` tag), as Pillow's ``ImageOps.exif_transpose`` does and as image viewers show
them: phone and scanner apps store a photo sideways and record the rotation in this tag only.

Files (Pillow modes):

==========================  ===============================================================
mode                        rule
==========================  ===============================================================
``RGB``, ``L``, ``P``,      Pillow's ``convert("RGB")`` (palette expanded, grey replicated,
``CMYK``, ``YCbCr``,        CMYK/YCbCr/LAB/HSV converted, alpha dropped, ``1`` -> 0/255)
``LAB``, ``HSV``, ``RGBA``,
``LA``, ``PA``, ``1``, ...
``I;16`` (any byte order)   16-bit: ``round(v * 255 / 65535)``, the full 16-bit range (as
                            scikit-image's ``img_as_ubyte``); refused when every value is
                            <= 255 (8-bit data in a 16-bit container: ambiguous)
``I`` (32-bit integer)      treated as 16-bit when its values lie in 0..65535 (Pillow opens
                            some 16-bit files as ``I``); otherwise refused
``F`` (32-bit float)        values in [0, 1]: ``round(v * 255)``; otherwise refused
multi-frame files           refused (a stack or a pyramid is not one tile)
==========================  ===============================================================

Arrays (``.npz``): ``uint8`` as is; ``bool`` -> 0/255; ``uint16`` as 16-bit above; other integer
dtypes when every value is in 0..255; floats when every value is in [0, 1]; anything else
(negative values, NaN/inf, a wider range, complex, object) is refused with the key, the dtype
and the range.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError

SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N", "I;16S")


def _range(a: np.ndarray) -> str:
    if a.size == 0:
        return "empty"
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        return "contains NaN or inf"
    lo, hi = a.min(), a.max()
    return f"values {lo:g}..{hi:g}" if np.issubdtype(a.dtype, np.floating) else f"values {int(lo)}..{int(hi)}"


def _sixteen(a: np.ndarray, what: str) -> np.ndarray:
    """16-bit values (0..65535) -> uint8 over the full 16-bit range."""
    if a.size and int(a.max()) <= 255:
        raise DataError(f"{what}: 16-bit image with {_range(a)}: looks like 8-bit data stored as 16-bit "
                        "(scaled over the 16-bit range it would be black); save it as 8-bit")
    return np.rint(a.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)


def _unit_float(a: np.ndarray, what: str) -> np.ndarray:
    """Floats in [0, 1] -> uint8."""
    if not np.isfinite(a).all() or a.min() < 0 or a.max() > 1:
        raise DataError(f"{what}: floating-point image with {_range(a)}; accepted: floats in [0, 1]")
    return np.rint(a.astype(np.float32) * 255.0).astype(np.uint8)


ORIENTATION = 0x0112  # the EXIF/TIFF Orientation tag (PIL.ExifTags.Base.Orientation)


def upright(im):
    """``im`` turned by its orientation tag (Pillow's ``ImageOps.exif_transpose``); ``im`` itself
    when it has none, or the tag says it is upright (1) or holds no orientation Pillow knows."""
    from PIL import ImageOps

    if im.getexif().get(ORIENTATION, 1) == 1:
        return im
    return ImageOps.exif_transpose(im)


def pil_to_rgb8(im, what: str) -> np.ndarray:
    """A Pillow image as uint8 (H, W, 3) by the rules in this module's docstring, upright by its
    orientation tag (``upright``).

    Raises:
        DataError: the mode cannot be converted without losing what the pixels mean; the message
            names ``what`` (the file), the mode and the value range.
    """
    if getattr(im, "n_frames", 1) > 1:
        raise DataError(f"{what}: has {im.n_frames} frames (mode {im.mode}); one image per file is read")
    im = upright(im)
    mode = im.mode
    if mode in SIXTEEN_BIT or mode == "I":
        a = np.asarray(im)
        if mode == "I" and a.size and (int(a.min()) < 0 or int(a.max()) > 65535):
            raise DataError(f"{what}: 32-bit integer image (mode I) with {_range(a)}; accepted: 8-bit, "
                            "16-bit, or mode I within 0..65535 (scaled as 16-bit)")
        return np.repeat(_sixteen(a, f"{what} (mode {mode})")[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        return np.repeat(_unit_float(a, f"{what} (mode F)")[..., None], 3, axis=2)
    try:
        rgb = im if mode == "RGB" else im.convert("RGB")
    except ValueError as exc:
        raise DataError(f"{what}: image mode {mode} cannot be converted to RGB ({exc})") from None
    out = np.asarray(rgb, dtype=np.uint8)
    if out.ndim != 3 or out.shape[2] != 3:  # pragma: no cover - Pillow's RGB is always (H, W, 3)
        raise DataError(f"{what}: mode {mode} decoded to shape {out.shape}, not (H, W, 3)")
    return out


def array_to_uint8(a: np.ndarray, what: str) -> np.ndarray:
    """Image values of any numeric dtype as uint8, by the rules in this module's docstring.

    Raises:
        DataError: naming ``what`` (the ``.npz`` key), the dtype and the value range.
    """
    dt = a.dtype
    if dt == np.uint8:
        return a
    if dt == np.bool_:
        return a.astype(np.uint8) * 255
    if dt == np.uint16:
        return _sixteen(a, f"{what} (dtype uint16)")
    if np.issubdtype(dt, np.integer):
        if a.size and (int(a.min()) < 0 or int(a.max()) > 255):
            raise DataError(f"{what}: dtype {dt} with {_range(a)}; accepted: uint8, uint16 (scaled from 16 bits), "
                            "bool, other integers within 0..255, floats within [0, 1]")
        return a.astype(np.uint8)
    if np.issubdtype(dt, np.floating):
        return _unit_float(a, f"{what} (dtype {dt})")
    raise DataError(f"{what}: dtype {dt} is not an image dtype; accepted: uint8, uint16, bool, integers within "
                    "0..255, floats within [0, 1]")
