"""Mask maths in numpy: overlaps, resizing to and from mini masks, pasting.

Masks are ``[H, W, N]`` bool arrays (instances last), boxes are pixel
``(y1, x1, y2, x2)`` with y2/x2 exclusive.
"""
from __future__ import annotations

import warnings
from typing import Optional, Sequence, Tuple

import numpy as np
import scipy.ndimage

from mrcnn.core.image import resize


def compute_overlaps_masks(masks1: np.ndarray, masks2: np.ndarray) -> np.ndarray:
    """Pairwise mask IoU.

    Args:
        masks1: [H, W, N1], masks2: [H, W, N2] (bool, or float thresholded at 0.5).
    Returns:
        [N1, N2] float32 IoU; an all-zero [N1, N2] float64 matrix when either is empty.
    """
    if masks1.shape[-1] == 0 or masks2.shape[-1] == 0:
        return np.zeros((masks1.shape[-1], masks2.shape[-1]))
    m1 = np.reshape(masks1 > .5, (-1, masks1.shape[-1])).astype(np.float32)
    m2 = np.reshape(masks2 > .5, (-1, masks2.shape[-1])).astype(np.float32)
    area1 = np.sum(m1, axis=0)
    area2 = np.sum(m2, axis=0)
    inter = np.dot(m1.T, m2)
    union = area1[:, None] + area2[None, :] - inter
    return inter / union


def resize_mask(mask: np.ndarray, scale: float, padding, crop: Optional[Sequence[int]] = None) -> np.ndarray:
    """Resize masks the way :func:`mrcnn.core.image.resize_image` resized their image.

    Args:
        mask: [H, W, N]; scale, padding, crop: as returned by ``resize_image``.
    Returns:
        The resized, padded or cropped masks (nearest neighbour, so still binary).
    """
    with warnings.catch_warnings():
        # scipy warns about output shape rounding; the rounding is what Matterport relied on.
        warnings.simplefilter("ignore")
        mask = scipy.ndimage.zoom(mask, zoom=[scale, scale, 1], order=0)
    if crop is not None:
        y, x, h, w = crop
        return mask[y:y + h, x:x + w]
    return np.pad(mask, padding, mode="constant", constant_values=0)


def minimize_mask(bbox: np.ndarray, mask: np.ndarray, mini_shape: Tuple[int, int]) -> np.ndarray:
    """Crop each mask to its box and resize it to ``mini_shape`` (saves memory in training).

    Args:
        bbox: [N, 4] pixel boxes; mask: [H, W, N]; mini_shape: ``(h, w)``.
    Returns:
        [h, w, N] bool mini masks.
    Raises:
        ValueError: a box has zero area.
    """
    mini_mask = np.zeros(tuple(mini_shape) + (mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = bbox[i][:4]
        m = mask[:, :, i].astype(bool)[y1:y2, x1:x2]
        if m.size == 0:
            raise ValueError(f"Invalid bounding box with area of zero for instance {i}: {bbox[i]}")
        # float64 in, as skimage < 0.19 converted bool itself; keeps Matterport's results.
        m = resize(m.astype(np.float64), mini_shape)
        mini_mask[:, :, i] = np.around(m).astype(bool)
    return mini_mask


def expand_mask(bbox: np.ndarray, mini_mask: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`minimize_mask`: paste mini masks back at their boxes.

    Returns:
        [image_shape[0], image_shape[1], N] bool masks.
    """
    mask = np.zeros(tuple(image_shape[:2]) + (mini_mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = bbox[i][:4]
        m = resize(mini_mask[:, :, i].astype(np.float64), (y2 - y1, x2 - x1))
        mask[y1:y2, x1:x2, i] = np.around(m).astype(bool)
    return mask


def mold_mask(mask, config):  # Matterport declares it and leaves it empty; kept for API parity.
    raise NotImplementedError("mold_mask was never implemented in Matterport's mrcnn either")


def unmold_mask(mask: np.ndarray, bbox: Sequence[int], image_shape: Sequence[int]) -> np.ndarray:
    """Paste one predicted (soft) mask into a full image-sized bool mask.

    Args:
        mask: [h, w] float mask from the mask head (e.g. 28x28), values in [0, 1].
        bbox: pixel box ``(y1, x1, y2, x2)`` in the image it is pasted into.
        image_shape: ``(H, W[, C])``.
    Returns:
        [H, W] bool mask, thresholded at 0.5 after a bilinear resize to the box.
    """
    y1, x1, y2, x2 = bbox
    m = resize(mask, (y2 - y1, x2 - x1))
    full_mask = np.zeros(tuple(image_shape[:2]), dtype=bool)
    full_mask[y1:y2, x1:x2] = m >= 0.5
    return full_mask


def unmold_masks(masks: np.ndarray, boxes: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """Paste many soft masks at once; same result as :func:`unmold_mask` per instance.

    skimage's resize costs ~1 ms per instance; here each mask is resized by two 1-D
    linear interpolations (rows, then columns) with pixel-centre alignment and a zero
    border, which is what ``skimage.transform.resize(order=1, mode="constant")`` computes.
    Plain indexing and multiply-adds, no BLAS: tiny matrix products spread over threads
    were slower than the interpolation itself.

    Args:
        masks: [N, h, w] float masks in [0, 1].
        boxes: [N, 4] int pixel boxes ``(y1, x1, y2, x2)`` in the target image.
        image_shape: ``(H, W[, C])``.
    Returns:
        [H, W, N] bool masks.
    """
    H, W = int(image_shape[0]), int(image_shape[1])
    n = masks.shape[0]
    # Instance-major buffer: each paste writes contiguous rows. Returned as an [H, W, N] view.
    full = np.zeros((n, H, W), dtype=bool)
    for i in range(n):
        y1, x1, y2, x2 = (int(v) for v in boxes[i])
        bh, bw = y2 - y1, x2 - x1
        if bh <= 0 or bw <= 0:
            continue
        ys, xs = max(y1, 0), max(x1, 0)
        ye, xe = min(y2, H), min(x2, W)
        if ye <= ys or xe <= xs:
            continue
        # A zero row/column on each side stands for skimage's constant-0 border.
        m = np.pad(masks[i].astype(np.float32), 1)
        lo, frac = _lerp_params(bh, masks.shape[1])
        m = m[lo] * (1.0 - frac)[:, None] + m[lo + 1] * frac[:, None]
        lo, frac = _lerp_params(bw, masks.shape[2])
        m = m[:, lo] * (1.0 - frac)[None, :] + m[:, lo + 1] * frac[None, :]
        # Clip the paste region to the image: boxes from the network can leave it.
        full[i, ys:ye, xs:xe] = m[ys - y1:ye - y1, xs - x1:xe - x1] >= 0.5
    return full.transpose(1, 2, 0)


def resize_crops_bilinear(image: np.ndarray, output_shape: Sequence[int], dtype=np.float64) -> np.ndarray:
    """``skimage.transform.resize(order=1, mode="constant", anti_aliasing=False)`` in numpy.

    Two 1-D linear interpolations (rows, then columns) with pixel-centre alignment and a
    zero border, the mapping skimage's ``ndi.zoom(grid_mode=True, mode="grid-constant")``
    uses. Only the input rows/columns an output pixel reads are gathered and converted, so
    shrinking a large crop costs about the output size. No clipping or dtype restore.

    Args:
        image: [h, w] or [h, w, C] array (bool, integer or float).
        output_shape: ``(H, W)``; dtype: float type of the arithmetic and the result
            (float64 reproduces skimage to rounding; float32 is ~2x faster).
    Returns:
        [H, W(, C)] array of ``dtype``.
    """
    image = np.asarray(image)
    extra = (None,) * (image.ndim - 2)
    ia, ib, wa, wb = _lerp_taps(int(output_shape[0]), image.shape[0], dtype)
    shape = (slice(None), None) + extra
    m = image[ia].astype(dtype) * wa[shape] + image[ib].astype(dtype) * wb[shape]
    ia, ib, wa, wb = _lerp_taps(int(output_shape[1]), image.shape[1], dtype)
    shape = (None, slice(None)) + extra
    return m[:, ia] * wa[shape] + m[:, ib] * wb[shape]


def _lerp_taps(out_size: int, in_size: int, dtype):
    """Unpadded indices and weights of the two taps per output pixel; a tap off the input
    (skimage's zero border) gets weight 0 and a clipped index."""
    lo, frac = _lerp_params(out_size, in_size, dtype)
    ia, ib = lo - 1, lo  # indices into the unpadded input
    wa = (1 - frac) * ((ia >= 0) & (ia < in_size))
    wb = frac * (ib < in_size)
    return np.clip(ia, 0, in_size - 1), np.clip(ib, 0, in_size - 1), wa.astype(dtype), wb.astype(dtype)


_LERP_CACHE: dict = {}


def _lerp_params(out_size: int, in_size: int, dtype=np.float32):
    """Indices into the zero-padded input and weights for one axis of a bilinear resize.

    Output pixel i samples input coordinate ``(i + 0.5) * in / out - 0.5``; index ``lo``
    (shifted by the one-pixel pad) and ``lo + 1`` are blended with weight ``frac``.
    """
    key = (out_size, in_size, np.dtype(dtype).str)
    cached = _LERP_CACHE.get(key)
    if cached is None:
        coords = (np.arange(out_size) + 0.5) * (in_size / out_size) - 0.5
        lo = np.floor(coords)
        frac = (coords - lo).astype(dtype)
        lo = np.clip(lo.astype(np.int64) + 1, 0, in_size)  # +1 for the pad; clip keeps lo+1 in range
        cached = (lo, frac)
        if len(_LERP_CACHE) > 4096:
            _LERP_CACHE.clear()
        _LERP_CACHE[key] = cached
    return cached
