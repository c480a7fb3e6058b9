"""Anchor generation.

Matterport quirk kept for weight compatibility: anchor centres sit at the top-left
corner of each feature-map cell (``shift = i * stride``), not at the cell centre.
Anchors are pixel boxes ``(y1, x1, y2, x2)`` in float64 until :func:`get_anchors`
normalises them.
"""
from __future__ import annotations

import inspect
import math
import threading
from typing import Sequence

import numpy as np

from mrcnn.core.boxes import norm_boxes


def generate_anchors(scales, ratios, shape: Sequence[int], feature_stride: int, anchor_stride: int) -> np.ndarray:
    """Anchors of one pyramid level.

    Args:
        scales: side lengths in pixels (e.g. ``(32,)``); ratios: width/height ratios.
        shape: feature map ``(height, width)``; feature_stride: its stride in pixels;
        anchor_stride: place anchors every this many feature cells.
    Returns:
        [cells * len(scales) * len(ratios), 4] float64 pixel boxes, cell-major order.
    """
    scales, ratios = np.meshgrid(np.array(scales), np.array(ratios))
    scales = scales.flatten()
    ratios = ratios.flatten()
    heights = scales / np.sqrt(ratios)
    widths = scales * np.sqrt(ratios)
    shifts_y = np.arange(0, shape[0], anchor_stride) * feature_stride
    shifts_x = np.arange(0, shape[1], anchor_stride) * feature_stride
    shifts_x, shifts_y = np.meshgrid(shifts_x, shifts_y)
    box_widths, box_centers_x = np.meshgrid(widths, shifts_x)
    box_heights, box_centers_y = np.meshgrid(heights, shifts_y)
    centers = np.stack([box_centers_y, box_centers_x], axis=2).reshape([-1, 2])
    sizes = np.stack([box_heights, box_widths], axis=2).reshape([-1, 2])
    return np.concatenate([centers - 0.5 * sizes, centers + 0.5 * sizes], axis=1)


def generate_pyramid_anchors(scales, ratios, feature_shapes, feature_strides, anchor_stride: int) -> np.ndarray:
    """Anchors of all pyramid levels, level i using ``scales[i]``; [A, 4] float64 pixels."""
    return np.concatenate([
        generate_anchors(scales[i], ratios, feature_shapes[i], feature_strides[i], anchor_stride)
        for i in range(len(scales))], axis=0)


def compute_backbone_shapes(config, image_shape: Sequence[int]) -> np.ndarray:
    """Feature-map ``(height, width)`` of each pyramid level: [levels, 2] int.

    A callable ``config.BACKBONE`` must come with ``config.COMPUTE_BACKBONE_SHAPE``.
    """
    if callable(config.BACKBONE):
        if config.COMPUTE_BACKBONE_SHAPE is None:
            raise ValueError("A callable BACKBONE needs COMPUTE_BACKBONE_SHAPE set in the config")
        fn = config.COMPUTE_BACKBONE_SHAPE
        # A plain function set as a class attribute arrives as a method bound to the config.
        if inspect.ismethod(fn) and fn.__self__ is config:
            fn = fn.__func__
        return np.asarray(fn(image_shape))
    if config.BACKBONE not in ("resnet50", "resnet101"):
        raise ValueError(f"Unknown BACKBONE {config.BACKBONE!r}; use resnet50, resnet101 or a callable")
    return np.array([[int(math.ceil(image_shape[0] / stride)), int(math.ceil(image_shape[1] / stride))]
                     for stride in config.BACKBONE_STRIDES])


_CACHE: dict = {}
_LOCK = threading.Lock()


def _anchor_key(config, image_shape):
    return (tuple(int(v) for v in image_shape[:2]), tuple(config.RPN_ANCHOR_SCALES),
            tuple(config.RPN_ANCHOR_RATIOS), tuple(config.BACKBONE_STRIDES),
            config.RPN_ANCHOR_STRIDE, config.BACKBONE if isinstance(config.BACKBONE, str) else id(config.BACKBONE))


def get_pixel_anchors(config, image_shape: Sequence[int]) -> np.ndarray:
    """Pyramid anchors in pixels (float64) for an image of ``image_shape``; cached."""
    key = ("px",) + _anchor_key(config, image_shape)
    with _LOCK:
        if key not in _CACHE:
            shapes = compute_backbone_shapes(config, image_shape)
            _CACHE[key] = generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                                                   shapes, config.BACKBONE_STRIDES, config.RPN_ANCHOR_STRIDE)
        return _CACHE[key]


def get_anchors(config, image_shape: Sequence[int]) -> np.ndarray:
    """Normalised float32 anchors [A, 4] as Matterport's ``MaskRCNN.get_anchors``; cached."""
    key = ("norm",) + _anchor_key(config, image_shape)
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is None:
        cached = norm_boxes(get_pixel_anchors(config, image_shape), image_shape[:2])
        with _LOCK:
            _CACHE[key] = cached
    return cached


class AnchorIndex:
    """Finds the anchors that intersect a box without testing all of them.

    Anchors are grouped by size (one group per scale x ratio in a pyramid); inside a group
    they are sorted by top edge, so the anchors whose y-range can meet a box are one
    ``searchsorted`` slice, and only that slice is tested exactly. Works for any [A, 4]
    pixel anchors ``(y1, x1, y2, x2)``, grid or not.
    """

    def __init__(self, anchors: np.ndarray):
        self.anchors = np.asarray(anchors)
        sizes = np.round(np.stack([self.anchors[:, 2] - self.anchors[:, 0],
                                   self.anchors[:, 3] - self.anchors[:, 1]], axis=1), 6)
        _, group = np.unique(sizes, axis=0, return_inverse=True)
        group = group.ravel()
        self._groups = []
        for g in range(group.max() + 1 if group.size else 0):
            ids = np.flatnonzero(group == g)
            ids = ids[np.argsort(self.anchors[ids, 0], kind="stable")]
            a = self.anchors[ids]
            self._groups.append((ids, a[:, 0].copy(), float(np.max(a[:, 2] - a[:, 0])), a))

    def candidates_per_box(self, boxes: np.ndarray):
        """For each box of ``boxes`` [N, 4], the indices of the anchors it meets with positive area."""
        boxes_f = np.asarray(boxes, dtype=np.float64)
        out = []
        for y1, x1, y2, x2 in boxes_f:
            hits = []
            for ids, top, height, a in self._groups:
                # Intersecting anchors have top < y2 and top + height > y1.
                lo = np.searchsorted(top, y1 - height, side="right")
                hi = np.searchsorted(top, y2, side="left")
                if hi <= lo:
                    continue
                s = a[lo:hi]
                hit = (s[:, 2] > y1) & (s[:, 3] > x1) & (s[:, 1] < x2)
                hits.append(ids[lo:hi][hit])
            out.append(np.concatenate(hits) if hits else np.zeros([0], dtype=np.int64))
        return out

    def candidates(self, boxes: np.ndarray) -> np.ndarray:
        """Sorted indices of the anchors that meet any of ``boxes`` [N, 4] with positive area."""
        per_box = self.candidates_per_box(boxes)
        return np.unique(np.concatenate(per_box)) if per_box else np.zeros([0], dtype=np.int64)


def get_anchor_index(config, image_shape: Sequence[int]) -> AnchorIndex:
    """Cached :class:`AnchorIndex` of :func:`get_pixel_anchors`."""
    key = ("index",) + _anchor_key(config, image_shape)
    with _LOCK:
        cached = _CACHE.get(key)
    if cached is None:
        cached = AnchorIndex(get_pixel_anchors(config, image_shape))
        with _LOCK:
            _CACHE[key] = cached
    return cached
