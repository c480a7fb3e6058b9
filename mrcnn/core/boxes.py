"""Box maths in numpy.

Conventions: a box is ``(y1, x1, y2, x2)``. Pixel boxes treat ``y2, x2`` as exclusive
(one past the last pixel), as Matterport does; normalised boxes live in ``[0, 1]``
where ``(0, 0, 1, 1)`` spans the whole image (see :func:`norm_boxes`).

Results match Matterport's ``utils.py`` bit for bit for the same input dtypes; the
Python loops there are replaced by broadcasting where that does not change results.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np


def extract_bboxes(mask: np.ndarray) -> np.ndarray:
    """Tight boxes around instance masks.

    Args:
        mask: [H, W, N] bool (or 0/1) instance masks.
    Returns:
        [N, 4] int32 pixel boxes ``(y1, x1, y2, x2)``, y2/x2 exclusive. An empty
        instance gives ``(0, 0, 0, 0)``.
    """
    mask = np.asarray(mask)
    n = mask.shape[-1]
    boxes = np.zeros([n, 4], dtype=np.int32)
    if n == 0:
        return boxes
    rows = np.any(mask, axis=1)  # [H, N]: instance has a pixel in this row
    cols = np.any(mask, axis=0)  # [W, N]
    present = rows.any(axis=0)
    h, w = rows.shape[0], cols.shape[0]
    y1 = np.argmax(rows, axis=0)
    y2 = h - np.argmax(rows[::-1], axis=0)
    x1 = np.argmax(cols, axis=0)
    x2 = w - np.argmax(cols[::-1], axis=0)
    boxes[present] = np.stack([y1, x1, y2, x2], axis=1)[present]
    return boxes


def compute_iou(box: np.ndarray, boxes: np.ndarray, box_area, boxes_area: np.ndarray) -> np.ndarray:
    """IoU of one box with many.

    Args:
        box: [4] ``(y1, x1, y2, x2)``.
        boxes: [N, 4].
        box_area: area of ``box``; boxes_area: [N] areas of ``boxes`` (passed in so
            callers can compute them once).
    Returns:
        [N] IoU values.
    """
    y1 = np.maximum(box[0], boxes[:, 0])
    y2 = np.minimum(box[2], boxes[:, 2])
    x1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[3], boxes[:, 3])
    intersection = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    union = box_area + boxes_area[:] - intersection[:]
    return intersection / union


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def compute_overlaps(boxes1: np.ndarray, boxes2: np.ndarray) -> np.ndarray:
    """Pairwise IoU.

    Args:
        boxes1: [N1, 4], boxes2: [N2, 4] ``(y1, x1, y2, x2)``, any one dtype.
    Returns:
        [N1, N2] float64 IoU matrix (float64 container as Matterport; values are
        computed in the inputs' precision, pair by pair, so they match its loop).
    """
    boxes1 = np.asarray(boxes1)
    boxes2 = np.asarray(boxes2)
    overlaps = np.zeros((boxes1.shape[0], boxes2.shape[0]))
    if boxes1.shape[0] == 0 or boxes2.shape[0] == 0:
        return overlaps
    area1 = _areas(boxes1)
    area2 = _areas(boxes2)
    b1 = boxes1[:, None, :]
    b2 = boxes2[None, :, :]
    y1 = np.maximum(b2[..., 0], b1[..., 0])
    y2 = np.minimum(b2[..., 2], b1[..., 2])
    x1 = np.maximum(b2[..., 1], b1[..., 1])
    x2 = np.minimum(b2[..., 3], b1[..., 3])
    inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    # Same operand order as Matterport's compute_iou(box2, boxes1, ...): area2 + area1 - inter.
    union = area2[None, :] + area1[:, None] - inter
    overlaps[:] = inter / union
    return overlaps


def non_max_suppression(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Greedy NMS.

    Args:
        boxes: [N, 4] ``(y1, x1, y2, x2)`` (N > 0); integer boxes are cast to float32.
        scores: [N]; threshold: drop a box whose IoU with a kept box exceeds this.
    Returns:
        int32 indices of kept boxes, highest score first.
    """
    if boxes.shape[0] == 0:
        raise ValueError("non_max_suppression needs at least one box")
    if boxes.dtype.kind != "f":
        boxes = boxes.astype(np.float32)
    area = _areas(boxes)
    order = scores.argsort()[::-1]
    keep = []
    while order.size > 0:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        iou = compute_iou(boxes[best], boxes[rest], area[best], area[rest])
        order = rest[~(iou > threshold)]
    return np.array(keep, dtype=np.int32)


def apply_box_deltas(boxes: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Apply ``(dy, dx, log(dh), log(dw))`` refinements to boxes.

    Args:
        boxes: [N, 4] ``(y1, x1, y2, x2)``; deltas: [N, 4].
    Returns:
        [N, 4] float32 refined boxes (computed in float32 whatever the input dtypes).
    """
    boxes = boxes.astype(np.float32)
    height = boxes[:, 2] - boxes[:, 0]
    width = boxes[:, 3] - boxes[:, 1]
    center_y = boxes[:, 0] + 0.5 * height
    center_x = boxes[:, 1] + 0.5 * width
    # In-place updates keep the dtype of `boxes` even for float64 deltas (Matterport's behaviour).
    center_y += deltas[:, 0] * height
    center_x += deltas[:, 1] * width
    height *= np.exp(deltas[:, 2])
    width *= np.exp(deltas[:, 3])
    y1 = center_y - 0.5 * height
    x1 = center_x - 0.5 * width
    return np.stack([y1, x1, y1 + height, x1 + width], axis=1)


def box_refinement(box: np.ndarray, gt_box: np.ndarray) -> np.ndarray:
    """Deltas that turn ``box`` into ``gt_box`` (inverse of :func:`apply_box_deltas`).

    Args:
        box, gt_box: [N, 4] pixel boxes ``(y1, x1, y2, x2)``.
    Returns:
        [N, 4] float32 ``(dy, dx, log(dh), log(dw))``.
    """
    box = box.astype(np.float32)
    gt_box = gt_box.astype(np.float32)
    height = box[:, 2] - box[:, 0]
    width = box[:, 3] - box[:, 1]
    center_y = box[:, 0] + 0.5 * height
    center_x = box[:, 1] + 0.5 * width
    gt_height = gt_box[:, 2] - gt_box[:, 0]
    gt_width = gt_box[:, 3] - gt_box[:, 1]
    gt_center_y = gt_box[:, 0] + 0.5 * gt_height
    gt_center_x = gt_box[:, 1] + 0.5 * gt_width
    dy = (gt_center_y - center_y) / height
    dx = (gt_center_x - center_x) / width
    dh = np.log(gt_height / height)
    dw = np.log(gt_width / width)
    return np.stack([dy, dx, dh, dw], axis=1)


def _norm_params(shape: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
    h, w = shape[0], shape[1]
    return np.array([h - 1, w - 1, h - 1, w - 1]), np.array([0, 0, 1, 1])


def norm_boxes(boxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Pixel boxes → normalised boxes.

    Matterport's convention: ``y2, x2`` are exclusive in pixels, so 1 is subtracted
    before dividing by ``(H - 1, W - 1)``; the full image becomes ``(0, 0, 1, 1)``.

    Args:
        boxes: [N, 4] pixel ``(y1, x1, y2, x2)``; shape: ``(height, width)``.
    Returns:
        [N, 4] float32 normalised boxes.
    """
    scale, shift = _norm_params(shape)
    return np.divide((boxes - shift), scale).astype(np.float32)


def denorm_boxes(boxes: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Normalised boxes → int32 pixel boxes (inverse of :func:`norm_boxes`)."""
    scale, shift = _norm_params(shape)
    return np.around(np.multiply(boxes, scale) + shift).astype(np.int32)


def trim_zeros(x: np.ndarray) -> np.ndarray:
    """Drop all-zero rows (the padding used in fixed-size batches). x: [N, C]."""
    if x.ndim != 2:
        raise ValueError(f"trim_zeros expects a 2-D array, got shape {x.shape}")
    return x[~np.all(x == 0, axis=1)]
