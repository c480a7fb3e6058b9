"""PyramidROIAlign: crop-and-resize each ROI from the FPN level that matches its size."""
from __future__ import annotations

from typing import Sequence

import keras
import tensorflow as tf

from mrcnn.modeling.graph_ops import log2_graph, parse_image_meta_graph

__all__ = ["PyramidROIAlign", "roi_pyramid_level"]

# FPN paper, eq. 1: a 224x224 ROI (ImageNet size) maps to level 4 (P4).
_CANONICAL_SIZE = 224.0
_CANONICAL_LEVEL = 4.0
_MIN_LEVEL, _MAX_LEVEL = 2, 5


def roi_pyramid_level(boxes: tf.Tensor, image_shape: tf.Tensor) -> tf.Tensor:
    """The pyramid level (2..5) each ROI is pooled from.

    Args:
        boxes: ``[B, N, 4]`` normalised ``(y1, x1, y2, x2)``.
        image_shape: ``[B, 3]`` (or ``[B, 2]``) molded image shapes in pixels.

    Returns:
        ``[B, N]`` int32 level ``clip(4 + round(log2(sqrt(h*w) / (224 / sqrt(H*W)))), 2, 5)``
        with ``h, w`` normalised; zero-area and degenerate boxes get level 2.
    """
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    image_shape = tf.cast(image_shape, tf.float32)
    image_area = (image_shape[:, 0] * image_shape[:, 1])[:, tf.newaxis]
    level = log2_graph(tf.sqrt(height * width) / (_CANONICAL_SIZE / tf.sqrt(image_area)))
    level = _CANONICAL_LEVEL + tf.round(level)
    # Padding rows give log2(0) = -inf and inverted boxes NaN; both go to the
    # finest level, where Matterport's int cast also sent them.
    level = tf.where(tf.math.is_nan(level), float(_MIN_LEVEL), level)
    level = tf.clip_by_value(level, float(_MIN_LEVEL), float(_MAX_LEVEL))
    return tf.cast(level, tf.int32)


@keras.saving.register_keras_serializable(package="mrcnn")
class PyramidROIAlign(keras.layers.Layer):
    """ROIAlign over a feature pyramid (Matterport's ``PyramidROIAlign``).

    Each box is assigned a level by :func:`roi_pyramid_level` and sampled from
    that level with ``tf.image.crop_and_resize`` (bilinear, one sample per
    output cell). Output rows are in input order.

    Args:
        pool_shape: ``(height, width)`` of the pooled maps, e.g. ``(7, 7)``.

    Call arguments:
        inputs: ``[boxes [B, N, 4] normalised, image_meta [B, META], P2, P3, P4, P5]``,
            each ``P*`` ``[B, h, w, C]``.

    Returns:
        ``[B, N, pool_h, pool_w, C]`` float32.
    """

    def __init__(self, pool_shape: Sequence[int], **kwargs) -> None:
        # Boxes must stay float32; the features are cast too, crop_and_resize
        # returns float32 anyway.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.pool_shape = tuple(int(v) for v in pool_shape)
        if len(self.pool_shape) != 2 or min(self.pool_shape) < 1:
            raise ValueError(f"{self.name}: pool_shape must be two positive ints, got {pool_shape!r}")
        # CropAndResize has no XLA kernel.
        self.supports_jit = False

    def call(self, inputs):
        boxes, image_meta = inputs[0], inputs[1]
        feature_maps = inputs[2:]
        if len(feature_maps) != _MAX_LEVEL - _MIN_LEVEL + 1:
            raise ValueError(f"{self.name}: expected feature maps P2..P5 (4 tensors), "
                             f"got {len(feature_maps)}")
        image_shape = parse_image_meta_graph(image_meta)["image_shape"]
        roi_level = roi_pyramid_level(boxes, image_shape)
        # Boxes are inputs to the crop, not something to learn through here.
        boxes = tf.stop_gradient(boxes)

        # Row-major (image, roi) position of every box; each box is in exactly
        # one level, so stitching the per-level crops by position restores
        # input order in a single copy.
        num_rois = tf.shape(boxes, out_type=tf.int64)[1]
        pooled, positions = [], []
        for i, level in enumerate(range(_MIN_LEVEL, _MAX_LEVEL + 1)):
            ix = tf.where(tf.equal(roi_level, level))  # [k, 2] (image, roi)
            level_boxes = tf.gather_nd(boxes, ix)
            box_indices = tf.cast(ix[:, 0], tf.int32)
            pooled.append(tf.image.crop_and_resize(feature_maps[i], level_boxes, box_indices,
                                                   self.pool_shape, method="bilinear"))
            positions.append(tf.cast(ix[:, 0] * num_rois + ix[:, 1], tf.int32))
        pooled = tf.dynamic_stitch(positions, pooled)

        shape = tf.concat([tf.shape(boxes)[:2], tf.shape(pooled)[1:]], axis=0)
        return tf.reshape(pooled, shape)

    def compute_output_shape(self, input_shape):
        boxes_shape, feature_shape = input_shape[0], input_shape[2]
        return (boxes_shape[0], boxes_shape[1]) + self.pool_shape + (feature_shape[-1],)

    def get_config(self) -> dict:
        base = super().get_config()
        base.update({"pool_shape": list(self.pool_shape)})
        return base
