"""Classifier/box head and mask head on ROI-aligned pyramid features.

Layer names and the ``TimeDistributed`` wrappers are Matterport's so the head
weights of ``mask_rcnn_coco.h5`` (``mrcnn_class_conv1`` ... ``mrcnn_mask``)
load by name. ROIs are normalised ``(y1, x1, y2, x2)`` boxes ``[B, N, 4]``.
"""
from __future__ import annotations

from typing import Optional, Sequence

import keras
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
        out = _as_matmul(self.layer, flat)
        if out is None:
            kwargs = {"training": training} if self.layer._call_has_training_arg else {}
            out = self.layer.call(flat, **kwargs)
        # Static inner sizes keep the static shape for the next layer.
        return ops.reshape(out, tuple(outer) + tuple(out.shape[1:]))


def _as_matmul(layer, x):
    """Two head convolutions as one matrix product, or None for any other layer.

    * ``Conv2D`` whose kernel covers its whole (valid-padded) input, the
      classifier's 7x7 "fully connected" layer: ``[M, k, k, C]`` flattened
      times the kernel flattened to ``[k*k*C, F]``.
    * ``Conv2DTranspose`` with stride == kernel size and valid padding, the
      mask head's 2x2 upsampling: every input pixel writes its own
      ``s x s`` output block, ``x @ kernel`` to ``[M, h, w, s, s, F]`` then
      interleaved to ``[M, h*s, w*s, F]`` (Keras' transposed kernel is
      ``[s, s, F, C]``, output pixel ``(i*s + a, j*s + b)`` takes ``kernel[a, b]``).

    Why: XLA:CPU runs these two as generic convolutions at a few GFLOP/s (the
    7x7 layer alone took 3.4 s of a 8.2 s JAX detect() at 256x256 with 1000
    ROIs), while its matrix product runs at the machine's GEMM rate. Same
    arithmetic up to summation order. On TensorFlow, oneDNN's 7x7 convolution
    with a 1x1 output is also slow (forward and backward over 32 training ROIs
    141 ms as a convolution, 52 ms as a matrix product; forward over 1000
    inference ROIs 181 ms vs 138 ms on this 2-core machine), so the 7x7 layer
    is a product on every backend. The transposed convolution stays oneDNN's on
    TensorFlow, where it is as fast as the product (and faster backwards).
    """
    if type(layer) is KL.Conv2D and layer.padding == "valid" and tuple(layer.strides) == (1, 1) \
            and tuple(layer.dilation_rate) == (1, 1) and layer.groups == 1 \
            and tuple(x.shape[1:3]) == tuple(layer.kernel_size) and layer.data_format == "channels_last":
        k_h, k_w = layer.kernel_size
        channels, filters = x.shape[3], layer.filters
        kernel = ops.reshape(ops.cast(layer.kernel, x.dtype), (k_h * k_w * channels, filters))
        out = ops.matmul(ops.reshape(x, (-1, k_h * k_w * channels)), kernel)
        out = ops.reshape(out, (-1, 1, 1, filters))
    elif type(layer) is KL.Conv2DTranspose and keras.backend.backend() != "tensorflow" \
            and layer.padding == "valid" \
            and tuple(layer.strides) == tuple(layer.kernel_size) \
            and tuple(layer.dilation_rate) == (1, 1) and layer.data_format == "channels_last" \
            and layer.output_padding is None:
        s_h, s_w = layer.strides
        height, width, channels, filters = x.shape[1], x.shape[2], x.shape[3], layer.filters
        kernel = ops.cast(layer.kernel, x.dtype)                          # [s_h, s_w, F, C]
        kernel = ops.reshape(ops.transpose(kernel, (3, 0, 1, 2)), (channels, s_h * s_w * filters))
        out = ops.matmul(ops.reshape(x, (-1, channels)), kernel)
        out = ops.reshape(out, (-1, height, width, s_h, s_w, filters))
        out = ops.reshape(ops.transpose(out, (0, 1, 3, 2, 4, 5)),
                          (-1, height * s_h, width * s_w, filters))
    else:
        return None
    if layer.use_bias:
        out = out + ops.cast(layer.bias, out.dtype)
    return layer.activation(out) if layer.activation is not None else out


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
