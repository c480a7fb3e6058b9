"""Greedy non-maximum suppression in ``keras.ops`` with a fixed output size.

keras.ops has no NMS. This is the one used on every backend but TensorFlow
(which keeps its own kernel, see :func:`mrcnn.modeling.graph_ops.padded_nms`).
It selects the same boxes as ``tf.image.non_max_suppression_padded`` /
``NonMaxSuppressionV4``: the same IoU arithmetic (float32, corners taken with
min/max, zero IoU when either box has no area), a box is dropped when its IoU
with a kept box is *greater* than the threshold, and equal scores are taken in
ascending index order (``argmax`` returns the first maximum). Only exact score
ties can in principle order differently (the TF kernel's heap decides them).

Shapes are static: the loop runs at most ``max_output_size`` times, each
time over all ``N`` boxes of every row, so the work is ``O(M * N)`` per row
and no data-dependent shape appears (JAX's ``jit`` and XLA need that).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from keras import ops

__all__ = ["greedy_nms"]


def _corners(boxes):
    """``(ymin, xmin, ymax, xmax)`` of ``[..., 4]`` boxes given in either corner order."""
    y1, x1, y2, x2 = boxes[..., 0], boxes[..., 1], boxes[..., 2], boxes[..., 3]
    return ops.minimum(y1, y2), ops.minimum(x1, x2), ops.maximum(y1, y2), ops.maximum(x1, x2)


def greedy_nms(boxes, scores, max_output_size: int, iou_threshold: float,
               groups=None) -> Tuple[object, object]:
    """Greedy NMS on each row of a batch.

    Args:
        boxes: ``[B, N, 4]`` ``(y1, x1, y2, x2)`` (any frame; float32 arithmetic).
        scores: ``[B, N]``. Rows with a score of ``-inf`` (or NaN) take no part.
        max_output_size: Python int ``M``, the output length.
        iou_threshold: a box whose IoU with an already kept box exceeds this
            is dropped.
        groups: optional ``[B, N]`` int. When given, a box only suppresses
            boxes of its own group (class-aware NMS): the result is then the
            ``M`` best boxes of the union of the per-group NMS results, in
            descending score order.

    Returns:
        ``(indices [B, M] int32, valid [B, M] bool)``: kept boxes in descending
        score order (ties: lower index first), padded with index 0 and
        ``valid`` False.
    """
    max_output_size = int(max_output_size)
    # Indices carry no gradient; stopping it here also keeps JAX from trying
    # to differentiate through the while loop.
    boxes = ops.stop_gradient(ops.cast(boxes, "float32"))
    scores = ops.stop_gradient(ops.cast(scores, "float32"))
    ymin, xmin, ymax, xmax = _corners(boxes)                     # each [B, N]
    area = (ymax - ymin) * (xmax - xmin)
    num_boxes = ops.shape(scores)[1]
    # NonMaxSuppressionV4 is called with score_threshold = lowest float32
    # (strict >), which leaves out -inf and NaN.
    lowest = float(np.finfo(np.float32).min)
    neg_inf = float("-inf")
    work = ops.where(scores > lowest, scores, neg_inf)
    positions = ops.arange(num_boxes, dtype="int32")[None, :]
    slots = ops.arange(max_output_size, dtype="int32")[None, :]
    batch = ops.shape(scores)[0]
    indices = ops.zeros((batch, max_output_size), dtype="int32")
    valid = ops.zeros((batch, max_output_size), dtype="bool")
    threshold = ops.convert_to_tensor(iou_threshold, "float32")

    def pick(row_values, best):
        return ops.take_along_axis(row_values, best[:, None], axis=1)[:, 0]

    def cond(i, work, indices, valid):
        return ops.logical_and(i < max_output_size, ops.any(work > neg_inf))

    def body(i, work, indices, valid):
        best = ops.cast(ops.argmax(work, axis=1), "int32")      # first maximum per row
        found = pick(work, best) > neg_inf                         # [B]
        b_ymin, b_xmin = pick(ymin, best)[:, None], pick(xmin, best)[:, None]
        b_ymax, b_xmax = pick(ymax, best)[:, None], pick(xmax, best)[:, None]
        b_area = pick(area, best)[:, None]
        inter_h = ops.maximum(ops.minimum(ymax, b_ymax) - ops.maximum(ymin, b_ymin), 0.0)
        inter_w = ops.maximum(ops.minimum(xmax, b_xmax) - ops.maximum(xmin, b_xmin), 0.0)
        intersection = inter_h * inter_w
        union = (area + b_area) - intersection
        # The kernel returns IoU 0 for boxes without area (no division by 0).
        has_area = ops.logical_and(area > 0.0, b_area > 0.0)
        iou = ops.where(has_area, intersection / ops.where(has_area, union, 1.0), 0.0)
        suppress = iou > threshold
        if groups is not None:
            suppress = ops.logical_and(suppress, ops.equal(groups, pick(groups, best)[:, None]))
        suppress = ops.logical_or(suppress, ops.equal(positions, best[:, None]))
        work = ops.where(ops.logical_and(suppress, found[:, None]), neg_inf, work)
        slot = ops.equal(slots, i)
        indices = ops.where(slot, ops.where(found, best, 0)[:, None], indices)
        valid = ops.where(slot, found[:, None], valid)
        return i + 1, work, indices, valid

    if groups is not None:
        groups = ops.cast(groups, "int32")
    _, _, indices, valid = ops.while_loop(
        cond, body, (ops.convert_to_tensor(0, "int32"), work, indices, valid),
        maximum_iterations=max_output_size)
    return indices, valid
