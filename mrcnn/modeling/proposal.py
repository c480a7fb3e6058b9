"""ProposalLayer: turns RPN scores and deltas into a fixed number of ROIs per image."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import keras
from keras import ops

from mrcnn.modeling.graph_ops import apply_box_deltas_graph, clip_boxes_graph, config_value, padded_nms

__all__ = ["ProposalLayer"]

_UNIT_WINDOW = (0.0, 0.0, 1.0, 1.0)


@keras.saving.register_keras_serializable(package="mrcnn")
class ProposalLayer(keras.layers.Layer):
    """Select, refine and de-duplicate anchors into region proposals.

    Per image: keep the ``pre_nms_limit`` anchors with the highest foreground
    score, apply their deltas (times RPN_BBOX_STD_DEV), clip to the image,
    run NMS with ``nms_threshold`` keeping at most ``proposal_count`` boxes
    (in descending score order) and zero-pad to ``proposal_count`` rows.
    Matches Matterport's ``ProposalLayer`` bit for bit on the TF backend.
    Every shape is static (top-k, then NMS with a padded output), so the
    layer compiles under XLA; the NMS is the one TF-only op
    (:func:`~mrcnn.modeling.graph_ops.padded_nms`).

    Args:
        proposal_count: int. Rows of the output (POST_NMS_ROIS_TRAINING or
            POST_NMS_ROIS_INFERENCE).
        nms_threshold: float. IoU above which a lower-scored box is dropped
            (RPN_NMS_THRESHOLD).
        config: optional ``Config``; supplies PRE_NMS_LIMIT and RPN_BBOX_STD_DEV
            unless those are given explicitly.
        pre_nms_limit: int. Anchors kept before NMS.
        rpn_bbox_std_dev: 4 floats. Scale of the RPN's delta outputs.

    Call arguments:
        inputs: ``[rpn_probs [B, A, 2], rpn_bbox [B, A, 4], anchors]``, anchors
            normalised ``(y1, x1, y2, x2)`` of shape ``[B, A, 4]``, ``[1, A, 4]``
            or ``[A, 4]`` (broadcast over the batch).

    Returns:
        ``[B, proposal_count, 4]`` float32 normalised proposals, zero rows last.
    """

    def __init__(self, proposal_count: int, nms_threshold: float, config: Any = None, *,
                 pre_nms_limit: Optional[int] = None,
                 rpn_bbox_std_dev: Optional[Sequence[float]] = None, **kwargs) -> None:
        # Box maths stays float32 under a mixed-precision policy.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.config = config
        self.proposal_count = int(proposal_count)
        self.nms_threshold = float(nms_threshold)
        self.pre_nms_limit = int(config_value(config, "PRE_NMS_LIMIT", pre_nms_limit))
        self.rpn_bbox_std_dev = [float(v) for v in
                                 config_value(config, "RPN_BBOX_STD_DEV", rpn_bbox_std_dev)]
        if self.proposal_count < 1:
            raise ValueError(f"{self.name}: proposal_count must be >= 1, got {proposal_count!r}")
        if not 0.0 <= self.nms_threshold <= 1.0:
            raise ValueError(f"{self.name}: nms_threshold must be in [0, 1], got {nms_threshold!r}")
        if self.pre_nms_limit < 1:
            raise ValueError(f"{self.name}: pre_nms_limit must be >= 1, got {self.pre_nms_limit!r}")
        if len(self.rpn_bbox_std_dev) != 4:
            raise ValueError(f"{self.name}: rpn_bbox_std_dev needs 4 values, got {self.rpn_bbox_std_dev!r}")

    def call(self, inputs):
        rpn_probs, rpn_bbox, anchors = inputs
        scores = ops.cast(rpn_probs[:, :, 1], "float32")
        deltas = ops.cast(rpn_bbox, "float32") * ops.convert_to_tensor(self.rpn_bbox_std_dev, "float32")
        anchors = ops.cast(anchors, "float32")
        if len(anchors.shape) == 2:
            anchors = anchors[None]
        anchors = ops.broadcast_to(anchors, ops.shape(deltas))

        # Static k wherever the anchor count is static (always under XLA).
        num_anchors = ops.shape(anchors)[1]
        limit = (min(self.pre_nms_limit, num_anchors) if isinstance(num_anchors, int)
                 else ops.minimum(self.pre_nms_limit, num_anchors))
        scores, ix = ops.top_k(scores, limit, sorted=True)
        deltas = ops.take_along_axis(deltas, ix[..., None], axis=1)
        pre_nms_anchors = ops.take_along_axis(anchors, ix[..., None], axis=1)

        boxes = apply_box_deltas_graph(pre_nms_anchors, deltas)
        boxes = clip_boxes_graph(boxes, ops.convert_to_tensor(_UNIT_WINDOW))
        keep, valid = padded_nms(boxes, scores, self.proposal_count, self.nms_threshold)
        proposals = ops.take_along_axis(boxes, keep[..., None], axis=1)
        return ops.where(valid[..., None], proposals, 0.0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], self.proposal_count, 4)

    def get_config(self) -> dict:
        base = super().get_config()
        base.update({
            "proposal_count": self.proposal_count,
            "nms_threshold": self.nms_threshold,
            "pre_nms_limit": self.pre_nms_limit,
            "rpn_bbox_std_dev": list(self.rpn_bbox_std_dev),
        })
        return base
