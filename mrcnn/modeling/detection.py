"""DetectionLayer: final boxes, class ids and scores from the classifier head (inference)."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import keras
from keras import ops

from mrcnn.modeling.graph_ops import (apply_box_deltas_graph, clip_boxes_graph, config_value,
                                      norm_boxes_graph, padded_nms, parse_image_meta_graph)

__all__ = ["DetectionLayer", "refine_detections_graph", "refine_detections_batch"]


def _per_class_nms(boxes, scores, class_ids, keep, num_classes: int, max_instances: int,
                   nms_threshold: float):
    """NMS inside each class of each image, with static shapes.

    TensorFlow: one padded NMS (its kernel, see
    :func:`~mrcnn.modeling.graph_ops.padded_nms`) per (image, foreground
    class) over all ``N`` rows, the rows of other classes (and dropped rows)
    masked with score ``-inf``: the kernel then sees exactly the rows
    Matterport gathered for that class, in the same ascending order, so ties
    break alike. The number of NMS runs is ``B * (num_classes - 1)``.

    Other backends: one class-aware greedy pass per image
    (:func:`~mrcnn.modeling.nms.greedy_nms` with ``groups=class_ids``), a box
    suppressing only boxes of its class. Per class it keeps the same boxes as
    the per-class runs; it stops after the ``max_instances`` best kept rows of
    the image, which are the only ones the caller uses (a class's rows beyond
    its own ``max_instances`` best never rank in the image's best
    ``max_instances``). That is ``num_classes - 1`` times less work than
    running the keras.ops NMS per class.

    Args:
        boxes: ``[B, N, 4]``; scores: ``[B, N]``; class_ids: ``[B, N]`` int32.
        keep: ``[B, N]`` bool, rows that take part.

    Returns:
        ``[B, N]`` bool, True for kept rows (at most ``max_instances`` per
        class on TF, per image elsewhere; the best ``max_instances`` are the
        same).
    """
    batch, num_rois = ops.shape(boxes)[0], ops.shape(boxes)[1]
    if keras.backend.backend() != "tensorflow":
        from .nms import greedy_nms
        kept, valid = greedy_nms(boxes, ops.where(keep, scores, float("-inf")), max_instances,
                                 nms_threshold, groups=class_ids)
        image_ix = ops.arange(batch, dtype="int32")[:, None] * ops.ones_like(kept)
    else:
        classes = ops.arange(1, num_classes, dtype="int32")                     # [C-1]
        member = ops.logical_and(keep[:, None, :],
                                 ops.equal(class_ids[:, None, :], classes[None, :, None]))
        class_scores = ops.where(member, scores[:, None, :], float("-inf"))     # [B, C-1, N]
        class_boxes = ops.broadcast_to(boxes[:, None], (batch, num_classes - 1, num_rois, 4))
        kept, valid = padded_nms(ops.reshape(class_boxes, (-1, num_rois, 4)),
                                 ops.reshape(class_scores, (-1, num_rois)), max_instances,
                                 nms_threshold)
        image_ix = ops.repeat(ops.arange(batch, dtype="int32"), num_classes - 1)[:, None] \
            * ops.ones_like(kept)
    # Scatter the kept rows back to their image: [rows, M] -> [B, N] hit counts
    # (padding slots add 0 at index 0).
    hits = ops.scatter(ops.stack([ops.reshape(image_ix, (-1,)), ops.reshape(kept, (-1,))], axis=1),
                       ops.reshape(ops.cast(valid, "int32"), (-1,)), (batch, num_rois))
    return hits > 0


def _take_rows(x, index):
    """``x[b, index[b, k]]`` for ``x`` of shape ``[B, N, ...]`` and ``index`` ``[B, K]``."""
    index = ops.reshape(index, tuple(ops.shape(index)) + (1,) * (len(x.shape) - 2))
    return ops.take_along_axis(x, index, axis=1)


def refine_detections_batch(rois, probs, deltas, window, max_instances: int,
                            min_confidence: Optional[float], nms_threshold: float,
                            bbox_std_dev: Sequence[float]):
    """Batched refine-and-filter of classifier outputs (Matterport's refine_detections_graph).

    Args:
        rois: ``[B, N, 4]`` normalised proposals.
        probs: ``[B, N, NUM_CLASSES]`` class probabilities.
        deltas: ``[B, N, NUM_CLASSES, 4]`` class-specific deltas (before × std-dev).
        window: ``[B, 4]`` normalised image area without padding.
        max_instances: DETECTION_MAX_INSTANCES.
        min_confidence: DETECTION_MIN_CONFIDENCE; 0 or None keeps every score.
        nms_threshold: DETECTION_NMS_THRESHOLD, applied per class.
        bbox_std_dev: BBOX_STD_DEV (4 floats).

    Returns:
        ``[B, max_instances, 6]`` float32 rows ``(y1, x1, y2, x2, class_id, score)``,
        boxes normalised and clipped to ``window``, sorted by score (ties: lower
        ROI index first), zero rows after the last detection. Background and
        low-score ROIs are dropped before NMS.
    """
    rois = ops.cast(rois, "float32")
    probs = ops.cast(probs, "float32")
    deltas = ops.cast(deltas, "float32")
    window = ops.cast(window, "float32")
    num_rois = ops.shape(rois)[1]
    class_ids = ops.cast(ops.argmax(probs, axis=2), "int32")
    class_scores = ops.take_along_axis(probs, class_ids[..., None], axis=2)[..., 0]
    deltas_specific = ops.take_along_axis(deltas, class_ids[..., None, None], axis=2)[:, :, 0]
    refined = apply_box_deltas_graph(
        rois, deltas_specific * ops.convert_to_tensor(bbox_std_dev, "float32"))
    refined = clip_boxes_graph(refined, window[:, None, :])

    keep = class_ids > 0
    if min_confidence:
        keep = ops.logical_and(keep, class_scores >= min_confidence)

    nms_keep = _per_class_nms(refined, class_scores, class_ids, keep, int(probs.shape[2]),
                              max_instances, nms_threshold)

    # top_k puts equal scores in ascending index order, as Matterport's top_k
    # over its sorted keep list did; dropped rows sort last with -inf.
    ranked = ops.where(nms_keep, class_scores, float("-inf"))
    k = (min(max_instances, num_rois) if isinstance(num_rois, int)
         else ops.minimum(max_instances, num_rois))
    _, top = ops.top_k(ranked, k, sorted=True)
    valid = _take_rows(nms_keep, top)[..., None]
    detections = ops.concatenate([
        _take_rows(refined, top),
        ops.cast(_take_rows(class_ids, top), "float32")[..., None],
        _take_rows(class_scores, top)[..., None],
    ], axis=2)
    detections = ops.where(valid, detections, 0.0)
    detections = ops.pad(detections, [(0, 0), (0, max_instances - k), (0, 0)])
    # A static row count even when N is dynamic (TF graphs), for the mask head.
    return ops.reshape(detections, (-1, max_instances, 6))


def _detection_settings(config: Any, max_instances, min_confidence, nms_threshold, bbox_std_dev):
    return (int(config_value(config, "DETECTION_MAX_INSTANCES", max_instances)),
            float(config_value(config, "DETECTION_MIN_CONFIDENCE", min_confidence) or 0.0),
            float(config_value(config, "DETECTION_NMS_THRESHOLD", nms_threshold)),
            [float(v) for v in config_value(config, "BBOX_STD_DEV", bbox_std_dev)])


def refine_detections_graph(rois, probs, deltas, window, config: Any):
    """One image's detections, as Matterport's function of the same name.

    Args:
        rois: ``[N, 4]`` normalised; probs: ``[N, NUM_CLASSES]``;
        deltas: ``[N, NUM_CLASSES, 4]``; window: ``[4]`` normalised.
        config: Config with DETECTION_MAX_INSTANCES, DETECTION_MIN_CONFIDENCE,
            DETECTION_NMS_THRESHOLD and BBOX_STD_DEV.

    Returns:
        ``[DETECTION_MAX_INSTANCES, 6]`` as :func:`refine_detections_batch`.
    """
    settings = _detection_settings(config, None, None, None, None)
    out = refine_detections_batch(rois[None], probs[None], deltas[None],
                                  ops.convert_to_tensor(window, "float32")[None], *settings)
    return out[0]


@keras.saving.register_keras_serializable(package="mrcnn")
class DetectionLayer(keras.layers.Layer):
    """Turn classifier-head outputs into final detections (Matterport's ``DetectionLayer``).

    Args:
        config: optional ``Config`` providing the four values below unless
            they are given explicitly.
        detection_max_instances: int. Rows of the output.
        detection_min_confidence: float. Scores below are dropped (0 keeps all).
        detection_nms_threshold: float. Per-class NMS IoU threshold.
        bbox_std_dev: 4 floats. Scale of the head's delta outputs.

    Call arguments:
        inputs: ``[rois [B, N, 4] normalised, mrcnn_class [B, N, NUM_CLASSES],
            mrcnn_bbox [B, N, NUM_CLASSES, 4], image_meta [B, META]]``. The
            clip window is the meta's pixel window normalised by its image shape.

    Returns:
        ``[B, detection_max_instances, 6]`` float32 ``(y1, x1, y2, x2, class_id, score)``
        with normalised boxes, best score first, zero-padded.
    """

    def __init__(self, config: Any = None, *, detection_max_instances: Optional[int] = None,
                 detection_min_confidence: Optional[float] = None,
                 detection_nms_threshold: Optional[float] = None,
                 bbox_std_dev: Optional[Sequence[float]] = None, **kwargs) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.config = config
        (self.detection_max_instances, self.detection_min_confidence,
         self.detection_nms_threshold, self.bbox_std_dev) = _detection_settings(
            config, detection_max_instances, detection_min_confidence, detection_nms_threshold,
            bbox_std_dev)
        if self.detection_max_instances < 1:
            raise ValueError(f"{self.name}: detection_max_instances must be >= 1, "
                             f"got {self.detection_max_instances!r}")
        if not 0.0 <= self.detection_nms_threshold <= 1.0:
            raise ValueError(f"{self.name}: detection_nms_threshold must be in [0, 1], "
                             f"got {self.detection_nms_threshold!r}")
        if len(self.bbox_std_dev) != 4:
            raise ValueError(f"{self.name}: bbox_std_dev needs 4 values, got {self.bbox_std_dev!r}")

    def call(self, inputs):
        rois, mrcnn_class, mrcnn_bbox, image_meta = inputs
        meta = parse_image_meta_graph(image_meta)
        window = norm_boxes_graph(meta["window"], meta["image_shape"][:, :2])
        return refine_detections_batch(rois, mrcnn_class, mrcnn_bbox, window,
                                       self.detection_max_instances, self.detection_min_confidence,
                                       self.detection_nms_threshold, self.bbox_std_dev)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.detection_max_instances, 6)

    def get_config(self) -> dict:
        base = super().get_config()
        base.update({
            "detection_max_instances": self.detection_max_instances,
            "detection_min_confidence": self.detection_min_confidence,
            "detection_nms_threshold": self.detection_nms_threshold,
            "bbox_std_dev": list(self.bbox_std_dev),
        })
        return base
