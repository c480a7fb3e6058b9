"""Classifier/box head and mask head on ROI-aligned pyramid features.

Layer names and the ``TimeDistributed`` wrappers are Matterport's so the head
weights of ``mask_rcnn_coco.h5`` (``mrcnn_class_conv1`` ... ``mrcnn_mask``)
load by name. ROIs are normalised ``(y1, x1, y2, x2)`` boxes ``[B, N, 4]``.
"""
from __future__ import annotations

from typing import Optional, Sequence

from keras import layers as KL
from keras import ops

from .backbone import BatchNorm
from .roi_align import PyramidROIAlign

__all__ = ["TimeDistributed", "fpn_classifier_graph", "build_fpn_mask_graph"]


class TimeDistributed(KL.TimeDistributed):
    """``keras.layers.TimeDistributed`` that folds the ROI axis into the batch.

    Keras 3's wrapper loops over the time axis (a Python loop when it is
    static, ``vectorized_map`` otherwise), which is slow for 1000 ROIs. The
    heads only wrap per-ROI layers with static inner shapes, so reshaping
    ``[B, N, ...]`` to ``[B*N, ...]`` and back is equivalent and runs each
    inner op once. Weights are the inner layer's, as in Keras 2, so h5 files
    map onto it unchanged.
    """

    def call(self, inputs, training=None, mask=None):
        inner_shape = list(inputs.shape[2:])
        if any(d is None for d in inner_shape):
            return super().call(inputs, training=training, mask=mask)
        outer = ops.shape(inputs)[:2]  # ints when static, tensors for TF's dynamic dims
        flat = ops.reshape(inputs, tuple([-1] + inner_shape))
        kwargs = {"training": training} if self.layer._call_has_training_arg else {}
        out = self.layer.call(flat, **kwargs)
        # Static inner sizes keep the static shape for the next layer.
        return ops.reshape(out, tuple(outer) + tuple(out.shape[1:]))


def fpn_classifier_graph(rois, feature_maps: Sequence, image_meta, pool_size: int,
                         num_classes: int, train_bn: Optional[bool] = True,
                         fc_layers_size: int = 1024):
    """Classifier and box-regression head (Matterport's ``fpn_classifier_graph``).

    Args:
        rois: ``[B, N, 4]`` normalised proposals (zero rows are padding).
        feature_maps: ``[P2, P3, P4, P5]``.
        image_meta: ``[B, IMAGE_META_SIZE]`` (the ROI level uses the image size).
        pool_size: ROIAlign output size (7).
        num_classes: classes including background.
        train_bn: BatchNorm mode.
        fc_layers_size: width of the two "fully connected" layers, implemented
            as a pool_size x pool_size convolution and a 1x1 convolution.

    Returns:
        ``mrcnn_class_logits [B, N, num_classes]``, ``mrcnn_probs [B, N, num_classes]``
        and ``mrcnn_bbox [B, N, num_classes, 4]`` deltas ``(dy, dx, log(dh), log(dw))``
        still divided by BBOX_STD_DEV.
    """
    x = PyramidROIAlign([pool_size, pool_size], name="roi_align_classifier")(
        [rois, image_meta] + list(feature_maps))
    x = TimeDistributed(KL.Conv2D(fc_layers_size, (pool_size, pool_size), padding="valid"),
                        name="mrcnn_class_conv1")(x)
    x = TimeDistributed(BatchNorm(fixed_training=train_bn), name="mrcnn_class_bn1")(
        x, training=train_bn)
    x = KL.Activation("relu")(x)
    x = TimeDistributed(KL.Conv2D(fc_layers_size, (1, 1)), name="mrcnn_class_conv2")(x)
    x = TimeDistributed(BatchNorm(fixed_training=train_bn), name="mrcnn_class_bn2")(
        x, training=train_bn)
    x = KL.Activation("relu")(x)
    shared = KL.Reshape((-1, fc_layers_size), name="pool_squeeze")(x)
    mrcnn_class_logits = TimeDistributed(KL.Dense(num_classes), name="mrcnn_class_logits")(shared)
    mrcnn_probs = KL.Activation("softmax", name="mrcnn_class")(mrcnn_class_logits)
    x = TimeDistributed(KL.Dense(num_classes * 4, activation="linear"), name="mrcnn_bbox_fc")(shared)
    mrcnn_bbox = KL.Reshape((-1, num_classes, 4), name="mrcnn_bbox")(x)
    return mrcnn_class_logits, mrcnn_probs, mrcnn_bbox


def build_fpn_mask_graph(rois, feature_maps: Sequence, image_meta, pool_size: int,
                         num_classes: int, train_bn: Optional[bool] = True, channels: int = 256):
    """Mask head (Matterport's ``build_fpn_mask_graph``).

    Four 3x3 conv + BN + ReLU layers on the ``pool_size`` ROIAlign output, a
    stride-2 transposed convolution and a per-class sigmoid.

    Args:
        rois: ``[B, N, 4]`` normalised boxes (detections at inference).
        feature_maps: ``[P2, P3, P4, P5]``.

    Returns:
        ``[B, N, 2*pool_size, 2*pool_size, num_classes]`` mask probabilities.
    """
    x = PyramidROIAlign([pool_size, pool_size], name="roi_align_mask")(
        [rois, image_meta] + list(feature_maps))
    for i in range(1, 5):
        x = TimeDistributed(KL.Conv2D(channels, (3, 3), padding="same"), name=f"mrcnn_mask_conv{i}")(x)
        x = TimeDistributed(BatchNorm(fixed_training=train_bn), name=f"mrcnn_mask_bn{i}")(
            x, training=train_bn)
        x = KL.Activation("relu")(x)
    x = TimeDistributed(KL.Conv2DTranspose(channels, (2, 2), strides=2, activation="relu"),
                        name="mrcnn_mask_deconv")(x)
    return TimeDistributed(KL.Conv2D(num_classes, (1, 1), strides=1, activation="sigmoid"),
                           name="mrcnn_mask")(x)
