"""Image resizing, molding and the image-meta vector.

``resize_image`` reproduces Matterport's modes exactly (``none``, ``square``,
``pad64``, ``crop``); the ``window`` it returns is the pixel box ``(y1, x1, y2, x2)``
(y2/x2 exclusive) of the real image inside the padded one.
"""
from __future__ import annotations

import functools
import random
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import skimage.transform

RESIZE_MODES = ("none", "square", "pad64", "crop")


def resize(image: np.ndarray, output_shape, order: int = 1, mode: str = "constant", cval: float = 0,
           clip: bool = True, preserve_range: bool = False, anti_aliasing: bool = False,
           anti_aliasing_sigma=None) -> np.ndarray:
    """``skimage.transform.resize`` with Matterport's defaults (no anti-aliasing).

    skimage turns anti-aliasing on by default when downsampling; Matterport's results
    (and the weights trained on them) assume it is off.
    """
    return skimage.transform.resize(
        image, output_shape, order=order, mode=mode, cval=cval, clip=clip,
        preserve_range=preserve_range, anti_aliasing=anti_aliasing,
        anti_aliasing_sigma=anti_aliasing_sigma)


def resize_image(image: np.ndarray, min_dim: Optional[int] = None, max_dim: Optional[int] = None,
                 min_scale: Optional[float] = None, mode: str = "square", rng=None):
    """Resize (and pad or crop) an image for the network.

    Args:
        image: [H, W, C] array.
        min_dim: scale up so the short side is at least this.
        max_dim: in ``square`` mode, cap the long side at this and pad to ``max_dim``².
        min_scale: never scale by less than this.
        mode: ``none`` (unchanged), ``square`` (scale + pad to max_dim × max_dim),
            ``pad64`` (scale + pad each side to a multiple of 64; min_dim must be a
            multiple of 64), ``crop`` (random min_dim × min_dim crop, for training;
            draws from Python's ``random``, or from ``rng`` (a ``random.Random``) if given).
    Returns:
        image (same dtype as input; float results are truncated, not rounded),
        window ``(y1, x1, y2, x2)`` of the image inside the output, scale,
        padding ``[(top, bottom), (left, right), (0, 0)]``, crop ``(y, x, h, w)`` or None.
    """
    image_dtype = image.dtype
    h, w = image.shape[:2]
    window = (0, 0, h, w)
    scale = 1
    padding = [(0, 0), (0, 0), (0, 0)]
    crop = None

    if mode not in RESIZE_MODES:
        raise ValueError(f"Unknown resize mode {mode!r}; expected one of {RESIZE_MODES}")
    if mode == "none":
        return image, window, scale, padding, crop

    if min_dim:
        scale = max(1, min_dim / min(h, w))
    if min_scale and scale < min_scale:
        scale = min_scale
    if max_dim and mode == "square":
        image_max = max(h, w)
        if round(image_max * scale) > max_dim:
            scale = max_dim / image_max
    if scale != 1:
        image = resize(image, (round(h * scale), round(w * scale)), preserve_range=True)

    if mode == "square":
        h, w = image.shape[:2]
        top = (max_dim - h) // 2
        left = (max_dim - w) // 2
        padding = [(top, max_dim - h - top), (left, max_dim - w - left), (0, 0)]
        image = np.pad(image, padding, mode="constant", constant_values=0)
        window = (top, left, h + top, w + left)
    elif mode == "pad64":
        h, w = image.shape[:2]
        if min_dim is None or min_dim % 64 != 0:
            raise ValueError(f"pad64 mode needs min_dim divisible by 64, got {min_dim}")
        top, bottom = _pad_to_64(h)
        left, right = _pad_to_64(w)
        padding = [(top, bottom), (left, right), (0, 0)]
        image = np.pad(image, padding, mode="constant", constant_values=0)
        window = (top, left, h + top, w + left)
    elif mode == "crop":
        h, w = image.shape[:2]
        draw = (rng or random).randint
        y = draw(0, (h - min_dim))
        x = draw(0, (w - min_dim))
        crop = (y, x, min_dim, min_dim)
        image = image[y:y + min_dim, x:x + min_dim]
        window = (0, 0, min_dim, min_dim)
    return image.astype(image_dtype), window, scale, padding, crop


def _pad_to_64(size: int) -> Tuple[int, int]:
    if size % 64 == 0:
        return 0, 0
    total = size - (size % 64) + 64 - size
    return total // 2, total - total // 2


def mold_image(images: np.ndarray, config) -> np.ndarray:
    """Subtract the mean pixel: uint8 RGB → float network input. Accepts MEAN_PIXEL via a Config."""
    return images.astype(np.float32) - config.MEAN_PIXEL


def mold_table(mean_pixel) -> np.ndarray:
    """float32 ``[256, C]``: row ``v`` is ``v - MEAN_PIXEL`` computed in float64 and rounded to
    float32, i.e. what :func:`mold_image` gives a uint8 pixel of value ``v`` once fed to the
    network as float32. A lookup in it molds bit-identically without a float64 temporary.
    Cached per mean; read-only."""
    return _mold_table(tuple(float(m) for m in np.asarray(mean_pixel, dtype=np.float64).reshape(-1)))


@functools.lru_cache(maxsize=8)
def _mold_table(mean: tuple) -> np.ndarray:
    table = np.arange(256, dtype=np.float64)[:, None] - np.asarray(mean, dtype=np.float64)[None, :]
    table = table.astype(np.float32)
    table.flags.writeable = False
    return table


def unmold_image(normalized_images: np.ndarray, config) -> np.ndarray:
    """Inverse of :func:`mold_image` (truncating to uint8)."""
    return (normalized_images + config.MEAN_PIXEL).astype(np.uint8)


def compose_image_meta(image_id: int, original_image_shape: Sequence[int], image_shape: Sequence[int],
                       window: Sequence[int], scale: float, active_class_ids: Sequence[int]) -> np.ndarray:
    """Pack per-image attributes into one vector (layout below; see :func:`parse_image_meta`).

    ``[image_id, orig_H, orig_W, orig_C, H, W, C, wy1, wx1, wy2, wx2, scale, active_class_ids...]``;
    the window is in pixels of the molded image. Length ``12 + NUM_CLASSES``.
    """
    return np.array([image_id] + list(original_image_shape) + list(image_shape) + list(window)
                    + [scale] + list(active_class_ids))


def parse_image_meta(meta: np.ndarray) -> Dict[str, np.ndarray]:
    """Unpack a batch of image-meta vectors [B, 12 + NUM_CLASSES] into a dict of arrays."""
    return {
        "image_id": meta[:, 0].astype(np.int32),
        "original_image_shape": meta[:, 1:4].astype(np.int32),
        "image_shape": meta[:, 4:7].astype(np.int32),
        "window": meta[:, 7:11].astype(np.int32),
        "scale": meta[:, 11].astype(np.float32),
        "active_class_ids": meta[:, 12:].astype(np.int32),
    }
