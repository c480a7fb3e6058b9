"""ProposalLayer: turns RPN scores and deltas into a fixed number of ROIs per image."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import keras
import tensorflow as tf

from mrcnn.modeling.graph_ops import apply_box_deltas_graph, clip_boxes_graph, config_value

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
        # NMS output has a data-dependent length before padding.
        self.supports_jit = False

    def call(self, inputs):
        rpn_probs, rpn_bbox, anchors = inputs
        scores = rpn_probs[:, :, 1]
        deltas = rpn_bbox * tf.constant(self.rpn_bbox_std_dev, tf.float32)
        if anchors.shape.rank == 2:
            anchors = anchors[tf.newaxis]
        anchors = tf.broadcast_to(anchors, tf.shape(deltas))

        limit = tf.minimum(self.pre_nms_limit, tf.shape(anchors)[1])
        ix = tf.math.top_k(scores, limit, sorted=True).indices
        scores = tf.gather(scores, ix, batch_dims=1)
        deltas = tf.gather(deltas, ix, batch_dims=1)
        pre_nms_anchors = tf.gather(anchors, ix, batch_dims=1)

        boxes = apply_box_deltas_graph(pre_nms_anchors, deltas)
        boxes = clip_boxes_graph(boxes, tf.constant(_UNIT_WINDOW))
        boxes.set_shape([None, None, 4])
        return tf.map_fn(self._nms_one_image, (boxes, scores),
                         fn_output_signature=tf.TensorSpec([self.proposal_count, 4], tf.float32))

    def _nms_one_image(self, args):
        """NMS on one image's ``[K, 4]`` boxes, zero-padded to ``[proposal_count, 4]``."""
        boxes, scores = args
        keep = tf.image.non_max_suppression(boxes, scores, self.proposal_count, self.nms_threshold,
                                            name="rpn_non_max_suppression")
        proposals = tf.gather(boxes, keep)
        padding = tf.maximum(self.proposal_count - tf.shape(proposals)[0], 0)
        proposals = tf.pad(proposals, [(0, padding), (0, 0)])
        proposals.set_shape([self.proposal_count, 4])
        return proposals

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
