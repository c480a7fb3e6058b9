"""DetectionLayer: final boxes, class ids and scores from the classifier head (inference)."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import keras
import tensorflow as tf

from mrcnn.modeling.graph_ops import (apply_box_deltas_graph, clip_boxes_graph, config_value,
                                      norm_boxes_graph, padded_nms, parse_image_meta_graph)

__all__ = ["DetectionLayer", "refine_detections_graph", "refine_detections_batch"]


def _per_class_nms(boxes: tf.Tensor, scores: tf.Tensor, class_ids: tf.Tensor, keep: tf.Tensor,
                   num_classes: int, max_instances: int, nms_threshold: float) -> tf.Tensor:
    """NMS inside each class of each image, with static shapes.

    One padded NMS per (image, foreground class) over all ``N`` rows, the rows
    of other classes (and dropped rows) masked with score ``-inf``: the kernel
    then sees exactly the rows Matterport gathered for that class, in the
    same ascending order, so ties break alike. The number of NMS runs is
    ``B * (num_classes - 1)`` whatever the data.

    Args:
        boxes: ``[B, N, 4]``; scores: ``[B, N]``; class_ids: ``[B, N]`` int32.
        keep: ``[B, N]`` bool, rows that take part.

    Returns:
        ``[B, N]`` bool, True for rows NMS keeps (at most ``max_instances`` per class).
    """
    batch, num_rois = tf.shape(boxes)[0], tf.shape(boxes)[1]
    classes = tf.range(1, num_classes, dtype=tf.int32)                          # [C-1]
    member = tf.logical_and(keep[:, tf.newaxis, :],
                            tf.equal(class_ids[:, tf.newaxis, :], classes[tf.newaxis, :, tf.newaxis]))
    class_scores = tf.where(member, scores[:, tf.newaxis, :], -float("inf"))  # [B, C-1, N]
    class_boxes = tf.broadcast_to(boxes[:, tf.newaxis], [batch, num_classes - 1, num_rois, 4])
    kept, valid = padded_nms(tf.reshape(class_boxes, [-1, num_rois, 4]),
                             tf.reshape(class_scores, [-1, num_rois]), max_instances, nms_threshold)
    # Scatter the kept rows back to their image: [B*(C-1), M] -> [B, N] hit counts.
    image_ix = tf.repeat(tf.range(batch), num_classes - 1)[:, tf.newaxis] * tf.ones_like(kept)
    hits = tf.scatter_nd(tf.stack([tf.reshape(image_ix, [-1]), tf.reshape(kept, [-1])], axis=1),
                         tf.reshape(tf.cast(valid, tf.int32), [-1]), [batch, num_rois])
    return hits > 0


def refine_detections_batch(rois: tf.Tensor, probs: tf.Tensor, deltas: tf.Tensor, window: tf.Tensor,
                            max_instances: int, min_confidence: Optional[float],
                            nms_threshold: float, bbox_std_dev: Sequence[float]) -> tf.Tensor:
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
    batch = tf.shape(rois)[0]
    num_rois = tf.shape(rois)[1]
    class_ids = tf.argmax(probs, axis=2, output_type=tf.int32)
    class_scores = tf.gather(probs, class_ids, batch_dims=2)
    deltas_specific = tf.gather(deltas, class_ids, batch_dims=2)
    refined = apply_box_deltas_graph(rois, deltas_specific * tf.constant(bbox_std_dev, tf.float32))
    refined = clip_boxes_graph(refined, window[:, tf.newaxis, :])

    keep = class_ids > 0
    if min_confidence:
        keep = tf.logical_and(keep, class_scores >= min_confidence)

    nms_keep = _per_class_nms(refined, class_scores, class_ids, keep, int(probs.shape[2]),
                              max_instances, nms_threshold)

    # top_k puts equal scores in ascending index order, as Matterport's top_k
    # over its sorted keep list did; dropped rows sort last with -inf.
    ranked = tf.where(nms_keep, class_scores, tf.constant(-float("inf")))
    k = tf.minimum(max_instances, num_rois)
    top = tf.math.top_k(ranked, k=k, sorted=True).indices
    valid = tf.gather(nms_keep, top, batch_dims=1)[..., tf.newaxis]
    detections = tf.concat([
        tf.gather(refined, top, batch_dims=1),
        tf.cast(tf.gather(class_ids, top, batch_dims=1), tf.float32)[..., tf.newaxis],
        tf.gather(class_scores, top, batch_dims=1)[..., tf.newaxis],
    ], axis=2)
    detections = tf.where(valid, detections, tf.zeros_like(detections))
    detections = tf.pad(detections, [(0, 0), (0, max_instances - k), (0, 0)])
    detections.set_shape([None, max_instances, 6])
    return detections


def _detection_settings(config: Any, max_instances, min_confidence, nms_threshold, bbox_std_dev):
    return (int(config_value(config, "DETECTION_MAX_INSTANCES", max_instances)),
            float(config_value(config, "DETECTION_MIN_CONFIDENCE", min_confidence) or 0.0),
            float(config_value(config, "DETECTION_NMS_THRESHOLD", nms_threshold)),
            [float(v) for v in config_value(config, "BBOX_STD_DEV", bbox_std_dev)])


def refine_detections_graph(rois: tf.Tensor, probs: tf.Tensor, deltas: tf.Tensor, window: tf.Tensor,
                            config: Any) -> tf.Tensor:
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
    out = refine_detections_batch(rois[tf.newaxis], probs[tf.newaxis], deltas[tf.newaxis],
                                  tf.convert_to_tensor(window, tf.float32)[tf.newaxis], *settings)
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
