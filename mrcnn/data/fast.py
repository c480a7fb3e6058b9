"""Fast per-image path of the training pipeline (same results as :func:`load_image_gt`).

Matterport's path zooms the full ``[H, W, N]`` mask stack, resizes the image and every
mini mask with skimage and computes the IoU of every anchor with every box in float64.
This module does the same work cheaper:

* image: a separable bilinear resize in numpy with skimage's pixel-centre mapping and
  zero border (``order=1, mode="constant"``), written straight into the padded canvas.
  Computed in float32, so a pixel can differ from skimage's by one grey level (float
  truncation), never more.
* masks: ``scipy.ndimage.zoom(order=0)`` is separable, so its output is
  ``mask[rows][:, cols]`` for two index maps (computed once per shape by zooming
  ``arange``); each instance is gathered only inside its box, and its mini mask is
  resized from that crop. Boxes are exactly Matterport's.
* RPN targets: :func:`mrcnn.data.targets.build_rpn_targets` with an
  :class:`~mrcnn.core.anchors.AnchorIndex`, so IoUs are computed (in float64, the same
  values) only for anchors that intersect a box.

Boxes are pixel ``(y1, x1, y2, x2)``, y2/x2 exclusive. Users' ``Dataset`` subclasses are
used through ``load_image``/``load_mask`` only.
"""
from __future__ import annotations

import functools

import random
import warnings
from typing import Optional, Tuple

import numpy as np
import scipy.ndimage

from mrcnn.core.boxes import extract_bboxes
from mrcnn.core.image import compose_image_meta, resize_image
from mrcnn.core.masks import resize_crops_bilinear
from mrcnn.data.augment import augment as _augment
from mrcnn.data.loader import _check_augmented, _reference
from mrcnn.data.validate import SampleError, check_sample

_INDEX_CACHE: dict = {}


def _load_raw(dataset, config, image_id: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``load_image`` + ``load_mask`` + :func:`mrcnn.data.validate.check_sample`, as in :func:`load_image_gt`.

    Returns the checked sample: image [H, W, C], bool masks [H, W, N], int32 class ids [N]
    (empty-mask instances already dropped). Raises ``SampleError`` naming the image id and path.
    """
    reference = _reference(dataset, image_id)
    image = dataset.load_image(image_id)
    loaded = dataset.load_mask(image_id)
    if not isinstance(loaded, (tuple, list)) or len(loaded) != 2:
        raise SampleError(f"image id {image_id} ({reference}): load_mask must return (masks, class_ids), "
                          f"got {type(loaded).__name__}")
    return check_sample(image, loaded[0], loaded[1], config, image_id, reference)


def zoom_index(size: int, scale: float) -> np.ndarray:
    """Source index of each output pixel of ``scipy.ndimage.zoom(order=0)`` along one axis.

    Zooming ``arange(size)`` gives the map itself; the output length ``round(size * scale)``
    and the mapping depend only on the sizes, so it holds for every axis of a mask stack.
    """
    key = (int(size), float(scale))
    idx = _INDEX_CACHE.get(key)
    if idx is None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            idx = scipy.ndimage.zoom(np.arange(size, dtype=np.float64), scale, order=0)
        idx = np.rint(idx).astype(np.intp)
        if len(_INDEX_CACHE) > 256:
            _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = idx
    return idx


def resize_image_fast(image: np.ndarray, config, rng=None):
    """:func:`mrcnn.core.image.resize_image` for uint8 images, by a separable numpy lerp.

    Returns the same ``(image, window, scale, padding, crop)``; pixels within one grey level
    of skimage's. Other dtypes (and ``mode="none"``) go through ``resize_image`` itself.
    """
    mode = config.IMAGE_RESIZE_MODE
    if image.dtype != np.uint8 or image.ndim != 3 or mode not in ("square", "pad64", "crop"):
        return resize_image(image, min_dim=config.IMAGE_MIN_DIM, min_scale=config.IMAGE_MIN_SCALE,
                            max_dim=config.IMAGE_MAX_DIM, mode=mode, rng=rng)
    # Geometry from resize_image on a 1x1-channel stand-in would cost a resize; recompute it.
    h, w = image.shape[:2]
    scale = _scale(h, w, config)
    if scale == 1:
        return resize_image(image, min_dim=config.IMAGE_MIN_DIM, min_scale=config.IMAGE_MIN_SCALE,
                            max_dim=config.IMAGE_MAX_DIM, mode=mode, rng=rng)
    oh, ow = round(h * scale), round(w * scale)
    if mode == "crop":
        resized = _lerp_image(image, oh, ow)
        min_dim = config.IMAGE_MIN_DIM
        draw = (rng or random).randint
        y = draw(0, (oh - min_dim))
        x = draw(0, (ow - min_dim))
        return (resized[y:y + min_dim, x:x + min_dim], (0, 0, min_dim, min_dim), scale,
                [(0, 0), (0, 0), (0, 0)], (y, x, min_dim, min_dim))
    if mode == "square":
        max_dim = config.IMAGE_MAX_DIM
        top, left = (max_dim - oh) // 2, (max_dim - ow) // 2
        padding = [(top, max_dim - oh - top), (left, max_dim - ow - left), (0, 0)]
    else:  # pad64
        from mrcnn.core.image import _pad_to_64
        if config.IMAGE_MIN_DIM is None or config.IMAGE_MIN_DIM % 64 != 0:
            raise ValueError(f"pad64 mode needs min_dim divisible by 64, got {config.IMAGE_MIN_DIM}")
        padding = [_pad_to_64(oh), _pad_to_64(ow), (0, 0)]
        top, left = padding[0][0], padding[1][0]
    canvas = np.zeros((oh + sum(padding[0]), ow + sum(padding[1]), image.shape[2]), np.uint8)
    canvas[top:top + oh, left:left + ow] = _lerp_image(image, oh, ow)
    return canvas, (top, left, oh + top, ow + left), scale, padding, None


def _scale(h: int, w: int, config) -> float:
    """The scale :func:`resize_image` picks (same expressions, same order)."""
    scale = 1
    if config.IMAGE_MIN_DIM:
        scale = max(1, config.IMAGE_MIN_DIM / min(h, w))
    if config.IMAGE_MIN_SCALE and scale < config.IMAGE_MIN_SCALE:
        scale = config.IMAGE_MIN_SCALE
    if config.IMAGE_MAX_DIM and config.IMAGE_RESIZE_MODE == "square":
        if round(max(h, w) * scale) > config.IMAGE_MAX_DIM:
            scale = config.IMAGE_MAX_DIM / max(h, w)
    return scale


def _lerp_image(image: np.ndarray, oh: int, ow: int) -> np.ndarray:
    """Bilinear resize of a uint8 [H, W, C] image to [oh, ow, C], truncated to uint8 as skimage+astype."""
    out = resize_crops_bilinear(image, (oh, ow), dtype=np.float32)
    # skimage's clip=True clips to the input's own range (the zero border can pull edge
    # pixels below it); astype then truncates like resize_image.
    np.clip(out, image.min(), image.max(), out=out)
    return out.astype(np.uint8)


def load_image_gt_fast(dataset, config, image_id: int, augmentation=None, use_mini_mask: Optional[bool] = None,
                       rng: Optional[random.Random] = None, augment_seed: Optional[int] = None):
    """Same contract and results as :func:`mrcnn.data.loader.load_image_gt` (see module doc).

    Returns:
        image [H, W, 3] uint8, image_meta [12 + NUM_CLASSES], class_ids [N] int32,
        bbox [N, 4] int32, masks [h, w, N] bool mini masks (or [H, W, N] full masks).
    """
    if use_mini_mask is None:
        use_mini_mask = config.USE_MINI_MASK
    image, mask, class_ids = _load_raw(dataset, config, image_id)
    original_shape = image.shape
    image, window, scale, padding, crop = resize_image_fast(image, config, rng=rng)
    H, W = image.shape[:2]
    rows = zoom_index(mask.shape[0], scale)
    cols = zoom_index(mask.shape[1], scale)
    # Position of zoomed pixel 0 in the output (padding) or of the output's pixel 0 in the zoom (crop).
    oy, ox = (padding[0][0], padding[1][0]) if crop is None else (-crop[0], -crop[1])

    if augmentation:
        full = _full_masks(mask, rows, cols, oy, ox, H, W)
        image, full = _augment(image, full, augmentation, seed=augment_seed)
        image, full = _check_augmented(image, full, image_id, _reference(dataset, image_id))
        keep = np.any(full, axis=(0, 1))
        full, class_ids = full[:, :, keep], class_ids[keep]
        bbox = extract_bboxes(full)
        crops = [full[y1:y2, x1:x2, i] for i, (y1, x1, y2, x2) in enumerate(bbox)]
    else:
        bbox, crops, keep = _instance_crops(mask, rows, cols, oy, ox, H, W)
        class_ids = class_ids[keep]

    active_class_ids = np.zeros([dataset.num_classes], dtype=np.int32)
    source = dataset.image_info[image_id]["source"]
    active_class_ids[dataset.source_class_ids[source]] = 1
    if use_mini_mask:
        out = np.zeros(tuple(config.MINI_MASK_SHAPE) + (len(crops),), dtype=bool)
        for i, c in enumerate(crops):
            # float64 and np.around as minimize_mask: ties at 0.5 round the same way.
            out[:, :, i] = np.around(resize_crops_bilinear(c, config.MINI_MASK_SHAPE, dtype=np.float64)) > 0
    else:
        out = np.zeros((H, W, len(crops)), dtype=bool)
        for i, (c, (y1, x1, y2, x2)) in enumerate(zip(crops, bbox)):
            out[y1:y2, x1:x2, i] = c
    image_meta = compose_image_meta(image_id, original_shape, image.shape, window, scale, active_class_ids)
    return image, image_meta, class_ids, bbox, out


def _full_masks(mask, rows, cols, oy, ox, H, W) -> np.ndarray:
    """The [H, W, N] masks ``resize_mask`` would give, by gathering (no zoom)."""
    out = np.zeros((H, W, mask.shape[-1]), dtype=bool)
    ys, xs = np.arange(H) - oy, np.arange(W) - ox  # zoomed coordinate of each output pixel
    vy = (ys >= 0) & (ys < rows.shape[0])
    vx = (xs >= 0) & (xs < cols.shape[0])
    y0, y1 = np.flatnonzero(vy)[[0, -1]]
    x0, x1 = np.flatnonzero(vx)[[0, -1]]
    src = mask.astype(bool, copy=False)
    out[y0:y1 + 1, x0:x1 + 1] = src[rows[ys[y0:y1 + 1]]][:, cols[xs[x0:x1 + 1]]]
    return out


def _instance_crops(mask, rows, cols, oy, ox, H, W):
    """Per instance: the tight output box and the zoomed mask inside it.

    Only the rows/columns of the instance's own extent are gathered. Returns
    ``(bbox [K, 4] int32, crops (list of K [h, w] bool), keep [N] bool)``; instances with
    no pixel left in the output are dropped (``keep`` False), as in Matterport's path.
    """
    n = mask.shape[-1]
    keep = np.zeros(n, dtype=bool)
    boxes, crops = [], []
    src = mask.astype(bool, copy=False)
    row_any = src.any(axis=1)  # [H0, N]
    col_any = src.any(axis=0)  # [W0, N]
    for i in range(n):
        zr = np.flatnonzero(row_any[rows, i])  # zoomed rows holding pixels of instance i
        zc = np.flatnonzero(col_any[cols, i])
        if zr.size == 0 or zc.size == 0:
            continue
        # Output range of the instance's extent, clipped to the output (crop mode).
        ya, yb = max(zr[0] + oy, 0), min(zr[-1] + 1 + oy, H)
        xa, xb = max(zc[0] + ox, 0), min(zc[-1] + 1 + ox, W)
        if ya >= yb or xa >= xb:
            continue
        crop = src[rows[ya - oy:yb - oy], :, i][:, cols[xa - ox:xb - ox]]
        r = np.flatnonzero(crop.any(axis=1))
        if r.size == 0:
            continue
        c = np.flatnonzero(crop.any(axis=0))
        keep[i] = True
        boxes.append((ya + r[0], xa + c[0], ya + r[-1] + 1, xa + c[-1] + 1))
        crops.append(crop[r[0]:r[-1] + 1, c[0]:c[-1] + 1])
    bbox = np.array(boxes, dtype=np.int32).reshape(-1, 4)
    return bbox, crops, keep


def mold_image_fast(image: np.ndarray, config, out: Optional[np.ndarray] = None) -> np.ndarray:
    """``mold_image(image, config).astype(float32)`` for uint8 [H, W, C]: one table lookup per pixel.

    The table holds exactly the float64 ``value - MEAN_PIXEL`` rounded to float32, so the
    result is bit-identical without a float64 temporary of the whole image. OpenCV's
    ``LUT`` (installed with imgaug) does the lookup in ~2 ms for a 1024x1024x3 image on this
    machine, 7x less than the float64 subtraction; without OpenCV (or for more than 4
    channels) numpy does it one channel at a time (~8 ms).

    ``out``: a float32 C-contiguous array of the image's shape to write into (e.g. a worker's
    shared-memory slot); returned.
    """
    from mrcnn.core.image import mold_image, mold_table
    mean = np.asarray(config.MEAN_PIXEL, dtype=np.float64)
    if image.dtype != np.uint8 or image.ndim != 3 or mean.shape != (image.shape[2],):
        molded = mold_image(image, config).astype(np.float32)
        if out is None:
            return molded
        out[...] = molded
        return out
    lut = mold_table(mean)  # [256, C]
    channels = image.shape[2]
    cv2 = _opencv()
    if cv2 is not None and channels in (3, 4):
        src = np.ascontiguousarray(image)
        table = lut.reshape(256, 1, channels)
        if out is None:
            return cv2.LUT(src, table)
        got = cv2.LUT(src, table, dst=out)
        if got is not out:  # OpenCV allocated instead of writing in place
            out[...] = got
        return out
    if out is None:
        out = np.empty(image.shape, np.float32)
    for c in range(channels):
        np.take(lut[:, c], image[..., c], out=out[..., c])
    return out


@functools.lru_cache(maxsize=1)
def _opencv():
    """OpenCV if installed (imgaug and albumentations bring it), else None. Imported on first
    use (it costs a process ~25 MB): the workers mold, the training process only in thread mode."""
    try:
        import cv2
    except ImportError:  # pragma: no cover - depends on the environment
        return None
    return cv2
