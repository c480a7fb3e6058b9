"""Region Proposal Network head, shared over the pyramid levels.

The head is a nested Keras model named ``rpn_model`` (as in Matterport) so that
the h5 group ``rpn_model`` with ``rpn_conv_shared``, ``rpn_class_raw`` and
``rpn_bbox_pred`` maps onto it. Its outputs over P2..P6 are concatenated into
the top-level layers ``rpn_class_logits``, ``rpn_class`` and ``rpn_bbox``.
"""
from __future__ import annotations

from typing import List, Sequence

import keras
from keras import layers as KL

__all__ = ["rpn_graph", "build_rpn_model", "rpn_outputs"]


def rpn_graph(feature_map, anchors_per_location: int, anchor_stride: int, channels: int = 512) -> list:
    """RPN head on one feature map.

    Args:
        feature_map: ``[B, h, w, depth]``.
        anchors_per_location: anchors per cell (number of ratios).
        anchor_stride: 1 for an anchor at every cell, 2 for every other cell.

    Returns:
        ``[rpn_class_logits [B, A, 2], rpn_probs [B, A, 2], rpn_bbox [B, A, 4]]``
        with ``A = h * w * anchors_per_location / anchor_stride**2``, anchors in
        row-major cell order then ratio order (the order of
        ``generate_pyramid_anchors``); probabilities are (background, foreground)
        and the deltas are ``(dy, dx, log(dh), log(dw))`` still scaled by
        RPN_BBOX_STD_DEV.
    """
    shared = KL.Conv2D(channels, (3, 3), padding="same", activation="relu", strides=anchor_stride,
                       name="rpn_conv_shared")(feature_map)
    x = KL.Conv2D(2 * anchors_per_location, (1, 1), padding="valid", activation="linear",
                  name="rpn_class_raw")(shared)
    rpn_class_logits = KL.Reshape((-1, 2))(x)
    rpn_probs = KL.Activation("softmax", name="rpn_class_xxx")(rpn_class_logits)
    x = KL.Conv2D(4 * anchors_per_location, (1, 1), padding="valid", activation="linear",
                  name="rpn_bbox_pred")(shared)
    rpn_bbox = KL.Reshape((-1, 4))(x)
    return [rpn_class_logits, rpn_probs, rpn_bbox]


def build_rpn_model(anchor_stride: int, anchors_per_location: int, depth: int,
                    channels: int = 512) -> keras.Model:
    """The shared RPN as a Keras model named ``rpn_model``.

    Input ``input_rpn_feature_map`` ``[B, h, w, depth]``; outputs as
    :func:`rpn_graph`.
    """
    feature_map = KL.Input(shape=[None, None, depth], name="input_rpn_feature_map")
    outputs = rpn_graph(feature_map, anchors_per_location, anchor_stride, channels)
    return keras.Model([feature_map], outputs, name="rpn_model")


def rpn_outputs(rpn_model: keras.Model, feature_maps: Sequence) -> List:
    """Apply the shared RPN to every level and concatenate over anchors.

    Returns:
        ``[rpn_class_logits, rpn_class, rpn_bbox]``, each concatenated along
        axis 1 in level order P2..P6 (the anchor order of
        ``generate_pyramid_anchors``).
    """
    per_level = [rpn_model([p]) for p in feature_maps]
    names = ["rpn_class_logits", "rpn_class", "rpn_bbox"]
    return [KL.Concatenate(axis=1, name=name)([level[i] for level in per_level])
            for i, name in enumerate(names)]
