"""Box maths used inside the Mask R-CNN graph, in ``keras.ops`` (every backend).

Conventions: boxes are ``(y1, x1, y2, x2)``. Inside the graph they are
normalised (``(0, 0, 1, 1)`` is the whole image, see :func:`norm_boxes_graph`);
pixel boxes have ``y2, x2`` exclusive. Deltas are ``(dy, dx, log(dh), log(dw))``
relative to the box size, before any division by a BBOX_STD_DEV.

Every function reproduces Matterport's ``model.py`` / ``utils.py`` graph
function of the same name bit for bit on the TF backend: the arithmetic is the
same sequence of float32 operations, only written with broadcasting so that a
leading batch dimension is accepted where Matterport took one box list. On
JAX and PyTorch the same sequence runs; their compilers may fuse a multiply
and an add into one FMA, which moves a result by at most an ulp.

Two functions return value-dependent shapes (``trim_zeros_graph``,
``batch_pack_graph``, Matterport helpers kept for user code); they run in TF
graphs and eagerly on the other backends, never inside a JAX ``jit``.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np
from keras import ops

__all__ = [
    "apply_box_deltas_graph", "clip_boxes_graph", "overlaps_graph", "box_refinement_graph",
    "norm_boxes_graph", "denorm_boxes_graph", "trim_zeros_graph", "batch_pack_graph", "batch_slice",
    "log2_graph",
    "parse_image_meta_graph", "config_value", "padded_nms",
]

# A backend tensor (tf.Tensor, jax.Array, torch.Tensor), a numpy array or a list.
TensorLike = Union[Any, np.ndarray, Sequence[float]]


def _on_tensorflow() -> bool:
    return keras.backend.backend() == "tensorflow"


def config_value(config: Any, attr: str, value: Any) -> Any:
    """An explicit layer argument, or else ``config.<attr>``.

    Layers accept either a :class:`mrcnn.config.Config` or the few plain values
    they need (so that ``get_config`` round-trips without the Config object).
    """
    if value is not None:
        return value
    if config is None or not hasattr(config, attr):
        raise ValueError(f"missing value for {attr}: pass a config that has {attr} "
                         f"or give {attr.lower()}=... explicitly")
    return getattr(config, attr)


def _rounded(x):
    """``x`` as an op grappler cannot fold into the next add or divide.

    Inside ``tf.function`` with static shapes, grappler's arithmetic optimiser
    reassociates ``(a + b) + c``, which moves results by 1 ulp from Matterport's
    (and from eager mode). EnsureShape is opaque to it and costs nothing. XLA
    (JAX) does not reassociate floating-point sums, so other backends need no
    barrier.
    """
    if _on_tensorflow():
        import tensorflow as tf
        return tf.ensure_shape(x, x.shape)
    return x


def _tensor(x, dtype=None):
    """``x`` as a backend tensor; ``dtype`` casts, None keeps the input's dtype."""
    x = ops.convert_to_tensor(x)
    return x if dtype is None else ops.cast(x, dtype)


def _unstack4(boxes) -> List[Any]:
    """The four coordinate columns of ``[..., 4]`` boxes, each ``[...]``."""
    return [boxes[..., i] for i in range(4)]


def apply_box_deltas_graph(boxes: TensorLike, deltas: TensorLike):
    """Shift and scale boxes by deltas.

    Args:
        boxes: ``[..., 4]`` ``(y1, x1, y2, x2)``, any coordinate frame.
        deltas: ``[..., 4]`` ``(dy, dx, log(dh), log(dw))`` already multiplied
            by the std-dev the network was trained with.

    Returns:
        ``[..., 4]`` refined boxes in the frame of ``boxes``.
    """
    boxes = _tensor(boxes)
    deltas = _tensor(deltas, boxes.dtype)
    y1, x1, y2, x2 = _unstack4(boxes)
    dy, dx, dh, dw = _unstack4(deltas)
    height = y2 - y1
    width = x2 - x1
    center_y = _rounded(y1 + 0.5 * height)
    center_x = _rounded(x1 + 0.5 * width)
    center_y += dy * height
    center_x += dx * width
    height *= ops.exp(dh)
    width *= ops.exp(dw)
    # y2 is derived from the new y1 (not centre + h/2) to keep Matterport's rounding.
    new_y1 = center_y - 0.5 * height
    new_x1 = center_x - 0.5 * width
    return ops.stack([new_y1, new_x1, new_y1 + height, new_x1 + width], axis=-1)


def clip_boxes_graph(boxes: TensorLike, window: TensorLike):
    """Clip boxes to a window.

    Args:
        boxes: ``[..., 4]`` boxes.
        window: ``[4]`` ``(wy1, wx1, wy2, wx2)`` in the same frame, or
            ``[..., 4]`` broadcastable against ``boxes`` (one window per image).

    Returns:
        ``[..., 4]`` boxes with every coordinate inside the window.
    """
    boxes = _tensor(boxes)
    window = _tensor(window, boxes.dtype)
    low = ops.stack([window[..., 0], window[..., 1], window[..., 0], window[..., 1]], axis=-1)
    high = ops.stack([window[..., 2], window[..., 3], window[..., 2], window[..., 3]], axis=-1)
    return ops.maximum(ops.minimum(boxes, high), low)


def overlaps_graph(boxes1: TensorLike, boxes2: TensorLike):
    """IoU between every box of ``boxes1`` and every box of ``boxes2``.

    Args:
        boxes1: ``[..., N, 4]``.
        boxes2: ``[..., M, 4]`` (same leading dimensions as ``boxes1``).

    Returns:
        ``[..., N, M]`` IoU. Degenerate pairs (zero union) give NaN, as in
        Matterport; callers mask padded boxes before using the result.
    """
    b1 = ops.expand_dims(_tensor(boxes1), -2)  # [..., N, 1, 4]
    b2 = ops.expand_dims(_tensor(boxes2), -3)  # [..., 1, M, 4]
    b1_y1, b1_x1, b1_y2, b1_x2 = _unstack4(b1)
    b2_y1, b2_x1, b2_y2, b2_x2 = _unstack4(b2)
    y1 = ops.maximum(b1_y1, b2_y1)
    x1 = ops.maximum(b1_x1, b2_x1)
    y2 = ops.minimum(b1_y2, b2_y2)
    x2 = ops.minimum(b1_x2, b2_x2)
    intersection = ops.maximum(x2 - x1, 0) * ops.maximum(y2 - y1, 0)
    b1_area = (b1_y2 - b1_y1) * (b1_x2 - b1_x1)
    b2_area = (b2_y2 - b2_y1) * (b2_x2 - b2_x1)
    union = b1_area + b2_area - intersection
    return intersection / union


def box_refinement_graph(box: TensorLike, gt_box: TensorLike):
    """Deltas that turn ``box`` into ``gt_box`` (inverse of apply_box_deltas).

    Args:
        box, gt_box: ``[..., 4]`` boxes in the same frame; cast to float32.

    Returns:
        ``[..., 4]`` float32 ``(dy, dx, log(dh), log(dw))`` (not divided by a std-dev).
    """
    box = _tensor(box, "float32")
    gt_box = _tensor(gt_box, "float32")
    y1, x1, y2, x2 = _unstack4(box)
    gy1, gx1, gy2, gx2 = _unstack4(gt_box)
    height = y2 - y1
    width = x2 - x1
    center_y = y1 + 0.5 * height
    center_x = x1 + 0.5 * width
    gt_height = gy2 - gy1
    gt_width = gx2 - gx1
    gt_center_y = gy1 + 0.5 * gt_height
    gt_center_x = gx1 + 0.5 * gt_width
    dy = (gt_center_y - center_y) / height
    dx = (gt_center_x - center_x) / width
    dh = ops.log(gt_height / height)
    dw = ops.log(gt_width / width)
    return ops.stack([dy, dx, dh, dw], axis=-1)


def _box_scale(shape: TensorLike):
    """``[h-1, w-1, h-1, w-1]`` float32 from an ``(h, w)`` shape (also batched ``[..., 2]``)."""
    shape = _tensor(shape, "float32")
    h, w = shape[..., 0:1], shape[..., 1:2]
    return ops.concatenate([h, w, h, w], axis=-1) - 1.0


_PIXEL_SHIFT = (0.0, 0.0, 1.0, 1.0)


def norm_boxes_graph(boxes: TensorLike, shape: TensorLike):
    """Pixel boxes to normalised boxes.

    Args:
        boxes: ``[..., 4]`` pixel boxes, y2/x2 exclusive.
        shape: ``(height, width)`` of the image the boxes are in.

    Returns:
        ``[..., 4]`` float32 normalised boxes; pixel ``(0, 0, h, w)`` maps to
        ``(0, 0, 1, 1)``.

    Inside ``tf.function`` a Python-constant ``shape`` lets grappler turn the
    division into a reciprocal multiply (1 ulp off Matterport); the model
    passes the shape as a tensor, which keeps the exact division.
    """
    boxes = _tensor(boxes, "float32")
    return ops.divide(boxes - _tensor(_PIXEL_SHIFT, "float32"), _box_scale(shape))


def denorm_boxes_graph(boxes: TensorLike, shape: TensorLike):
    """Normalised boxes to int32 pixel boxes (y2/x2 exclusive), rounding half to even."""
    boxes = _tensor(boxes, "float32")
    pixels = ops.multiply(boxes, _box_scale(shape)) + _tensor(_PIXEL_SHIFT, "float32")
    return ops.cast(ops.round(pixels), "int32")


def _boolean_mask(x, mask, name: Optional[str] = None):
    """``x[mask]`` (rows where ``mask`` is True): a value-dependent shape.

    TensorFlow has a graph op for it; the other backends only do it eagerly
    (under ``jax.jit`` the output size would be unknown).
    """
    if _on_tensorflow():
        import tensorflow as tf
        return tf.boolean_mask(x, mask, name=name)
    return ops.convert_to_tensor(np.asarray(x)[np.asarray(mask, dtype=bool)])


def trim_zeros_graph(boxes: TensorLike, name: str = "trim_zeros") -> Tuple[Any, Any]:
    """Drop all-zero rows (padding) from ``[N, 4]`` boxes.

    Returns:
        ``(boxes [M, 4], non_zeros [N] bool)`` where ``non_zeros`` marks kept rows.
    """
    boxes = _tensor(boxes)
    non_zeros = ops.cast(ops.sum(ops.abs(boxes), axis=1), "bool")
    return _boolean_mask(boxes, non_zeros, name=name), non_zeros


def batch_pack_graph(x: TensorLike, counts: TensorLike, num_rows: int):
    """Concatenate the first ``counts[i]`` entries of row ``i`` for rows ``0..num_rows-1``.

    Args:
        x: ``[B, K, ...]`` per-image entries packed at the top of each row.
        counts: ``[B]`` int, how many leading entries of each row are real.
        num_rows: rows to take (Matterport passed IMAGES_PER_GPU).

    Returns:
        ``[sum(counts[:num_rows]), ...]`` in row-major order.
    """
    x = _tensor(x)[:num_rows]
    counts = _tensor(counts)[:num_rows]
    keep = ops.arange(ops.shape(x)[1])[None, :] < ops.cast(counts, "int32")[:, None]
    return _boolean_mask(x, keep)


def batch_slice(inputs: Union[Any, List[Any]], graph_fn: Callable, batch_size: int,
                names: Optional[List[str]] = None):
    """Run ``graph_fn`` on each batch item and stack the results (Matterport's helper).

    The layers of this package use batched ops instead; this stays for user
    code written against Matterport's API. ``batch_size`` must be a Python int
    because the loop is unrolled into the graph.

    Args:
        inputs: a tensor or list of tensors with batch as the first dimension.
        graph_fn: called with one slice of each input; returns a tensor or a
            list/tuple of tensors of the same shape for every item.
        batch_size: number of items to slice.
        names: optional names of the stacked outputs (kept for Matterport's
            signature; Keras 3 tensors carry no names, so they are not used).

    Returns:
        One stacked tensor, or a list of them if ``graph_fn`` returns several.
    """
    if not isinstance(inputs, (list, tuple)):
        inputs = [inputs]
    per_item = []
    for i in range(batch_size):
        out = graph_fn(*[x[i] for x in inputs])
        per_item.append(list(out) if isinstance(out, (tuple, list)) else [out])
    grouped = list(zip(*per_item))
    result = [ops.stack(o, axis=0) for o in grouped]
    return result[0] if len(result) == 1 else result


def log2_graph(x: TensorLike):
    """Base-2 logarithm as ``log(x) / log(2)`` (the same rounding as Matterport)."""
    x = _tensor(x)
    return ops.log(x) / ops.log(_tensor(2.0, x.dtype))


def parse_image_meta_graph(meta: TensorLike) -> Dict[str, Any]:
    """Split a batch of image meta vectors into their fields.

    Layout (see ``mrcnn.core.image.compose_image_meta``): ``image_id(1),
    original_image_shape(3), image_shape(3), window(4; pixels y1, x1, y2, x2 in
    the molded image), scale(1), active_class_ids(NUM_CLASSES)``.

    Args:
        meta: ``[B, 12 + NUM_CLASSES]``.

    Returns:
        dict of ``image_id [B]``, ``original_image_shape [B, 3]``,
        ``image_shape [B, 3]``, ``window [B, 4]``, ``scale [B]``,
        ``active_class_ids [B, NUM_CLASSES]``, all in ``meta``'s dtype.
    """
    meta = _tensor(meta)
    return {
        "image_id": meta[:, 0],
        "original_image_shape": meta[:, 1:4],
        "image_shape": meta[:, 4:7],
        "window": meta[:, 7:11],
        "scale": meta[:, 11],
        "active_class_ids": meta[:, 12:],
    }


def padded_nms(boxes: TensorLike, scores: TensorLike, max_output_size: int,
               iou_threshold: float) -> Tuple[Any, Any]:
    """Greedy NMS per row of a batch, with a fixed output size.

    The one place that picks an NMS per backend. TensorFlow keeps its kernel:
    ``NonMaxSuppressionV4`` with ``pad_to_max_output_size`` is the CPU kernel of
    ``tf.image.non_max_suppression`` (V3: same IoU arithmetic, same tie order,
    lower index first) with a static output shape, it has an XLA kernel, and
    it is what makes ProposalLayer and DetectionLayer bit-exact against
    Matterport (score ties included) and fast (a heap over the candidates
    rather than ``M`` passes over all of them). Every other backend runs
    :func:`mrcnn.modeling.nms.greedy_nms`, the same selection in keras.ops.
    Rows whose score is ``-inf`` take no part (that is how callers mask boxes
    out).

    Args:
        boxes: ``[B, N, 4]`` ``(y1, x1, y2, x2)``.
        scores: ``[B, N]`` float32.
        max_output_size: a Python int, the output length.
        iou_threshold: boxes overlapping a kept box by more than this are dropped.

    Returns:
        ``(indices [B, max_output_size] int32, valid [B, max_output_size] bool)``:
        kept rows in descending score order, padded with index 0 and ``valid``
        False.
    """
    if not _on_tensorflow():
        from .nms import greedy_nms
        return greedy_nms(boxes, scores, max_output_size, iou_threshold)
    import tensorflow as tf
    boxes = tf.cast(boxes, tf.float32)
    scores = tf.cast(scores, tf.float32)
    lowest = tf.constant(np.finfo(np.float32).min, tf.float32)

    def one_row(args):
        row_boxes, row_scores = args
        indices, count = tf.raw_ops.NonMaxSuppressionV4(
            boxes=row_boxes, scores=row_scores, max_output_size=max_output_size,
            iou_threshold=iou_threshold, score_threshold=lowest, pad_to_max_output_size=True)
        return indices, count

    indices, counts = tf.map_fn(one_row, (boxes, scores), fn_output_signature=(
        tf.TensorSpec([max_output_size], tf.int32), tf.TensorSpec([], tf.int32)))
    valid = tf.range(max_output_size)[tf.newaxis, :] < counts[:, tf.newaxis]
    return indices, valid
