"""The five Mask R-CNN losses, with Matterport's signatures and numerics.

Each returns a float32 scalar tensor and is 0 (never NaN) when nothing
contributes (no anchors, no positive ROIs, no active classes). Inputs may carry
any batch size; nothing is sliced per image in Python.
"""
from __future__ import annotations

from typing import Any

import tensorflow as tf

__all__ = [
    "smooth_l1_loss", "rpn_class_loss_graph", "rpn_bbox_loss_graph", "mrcnn_class_loss_graph",
    "mrcnn_bbox_loss_graph", "mrcnn_mask_loss_graph", "binary_crossentropy",
]

# Keras 2's backend epsilon, used by its binary_crossentropy (clip and inside the log).
_EPSILON = 1e-7


def _mean_or_zero(loss: tf.Tensor) -> tf.Tensor:
    """Mean of all elements, or 0.0 for an empty tensor (Matterport's K.switch)."""
    loss = tf.cast(loss, tf.float32)
    return tf.cond(tf.size(loss) > 0, lambda: tf.reduce_mean(loss), lambda: tf.constant(0.0))


def smooth_l1_loss(y_true: tf.Tensor, y_pred: tf.Tensor) -> tf.Tensor:
    """Element-wise smooth-L1 (Huber with delta 1): ``0.5 d^2`` if ``|d| < 1`` else ``|d| - 0.5``.

    Args:
        y_true, y_pred: tensors of the same shape, e.g. ``[N, 4]`` deltas.

    Returns:
        Tensor of that shape (no reduction).
    """
    diff = tf.abs(tf.cast(y_true, tf.float32) - tf.cast(y_pred, tf.float32))
    less_than_one = tf.cast(tf.less(diff, 1.0), tf.float32)
    # The reference (TF graph mode, oneDNN) differs by 1 ulp on a few elements; sums agree.
    return (less_than_one * 0.5 * tf.square(diff)) + (1 - less_than_one) * (diff - 0.5)


def binary_crossentropy(target: tf.Tensor, output: tf.Tensor) -> tf.Tensor:
    """Keras 2's element-wise BCE on probabilities (clip to [eps, 1-eps], then log(p + eps)).

    Keras 3's ``binary_crossentropy`` drops the ``+ eps`` inside the log, which
    changes the loss in the last bits; this keeps the trained-model numerics.
    """
    output = tf.clip_by_value(output, _EPSILON, 1.0 - _EPSILON)
    bce = target * tf.math.log(output + _EPSILON)
    bce += (1 - target) * tf.math.log(1 - output + _EPSILON)
    return -bce


def rpn_class_loss_graph(rpn_match: tf.Tensor, rpn_class_logits: tf.Tensor) -> tf.Tensor:
    """RPN anchor classifier loss (softmax cross-entropy over non-neutral anchors).

    Args:
        rpn_match: ``[B, A, 1]`` int, 1 positive, -1 negative, 0 neutral anchor.
        rpn_class_logits: ``[B, A, 2]`` (background, foreground) logits.

    Returns:
        Scalar mean loss over positive and negative anchors; 0 if there are none.
    """
    rpn_match = tf.squeeze(rpn_match, -1)
    anchor_class = tf.cast(tf.equal(rpn_match, 1), tf.int32)
    used = tf.not_equal(rpn_match, 0)
    logits = tf.boolean_mask(tf.cast(rpn_class_logits, tf.float32), used)
    labels = tf.boolean_mask(anchor_class, used)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
    return _mean_or_zero(loss)


def rpn_bbox_loss_graph(config: Any, target_bbox: tf.Tensor, rpn_match: tf.Tensor,
                        rpn_bbox: tf.Tensor) -> tf.Tensor:
    """RPN box regression loss (smooth-L1 over positive anchors).

    Args:
        config: kept for Matterport's signature; the packing of ``target_bbox``
            is batched, so IMAGES_PER_GPU is not needed (may be None).
        target_bbox: ``[B, T, 4]`` deltas of the positive anchors of each image,
            packed at the top and zero-padded (T = RPN_TRAIN_ANCHORS_PER_IMAGE).
        rpn_match: ``[B, A, 1]`` int anchor labels (1 = positive).
        rpn_bbox: ``[B, A, 4]`` predicted deltas.

    Returns:
        Scalar mean over the positives' 4 coordinates; 0 if there are none.
    """
    del config
    rpn_match = tf.squeeze(rpn_match, -1)
    positive = tf.equal(rpn_match, 1)
    pred = tf.boolean_mask(rpn_bbox, positive)
    # Image i has counts[i] positives; its targets are the first counts[i] rows.
    counts = tf.reduce_sum(tf.cast(positive, tf.int32), axis=1)
    rows = tf.range(tf.shape(target_bbox)[1])
    target = tf.boolean_mask(target_bbox, rows[tf.newaxis, :] < counts[:, tf.newaxis])
    return _mean_or_zero(smooth_l1_loss(target, pred))


def mrcnn_class_loss_graph(target_class_ids: tf.Tensor, pred_class_logits: tf.Tensor,
                           active_class_ids: tf.Tensor) -> tf.Tensor:
    """Classifier-head loss; predictions of classes absent from the image's dataset are ignored.

    Args:
        target_class_ids: ``[B, R]`` class ids, zero-padded ROIs count as background.
        pred_class_logits: ``[B, R, NUM_CLASSES]``.
        active_class_ids: ``[B, NUM_CLASSES]``, 1 where the class is in the
            image's source dataset.

    Returns:
        Scalar: cross-entropy summed over ROIs whose predicted class is active,
        divided by their count; 0 if there are none.

    Matterport used ``active_class_ids[0]`` for the whole batch (a TODO in its
    code); here each image uses its own row, which is the same when all images
    of a batch come from one dataset.
    """
    target_class_ids = tf.cast(target_class_ids, tf.int64)
    pred_class_logits = tf.cast(pred_class_logits, tf.float32)
    pred_class_ids = tf.argmax(pred_class_logits, axis=2)
    pred_active = tf.gather(tf.cast(active_class_ids, tf.float32), pred_class_ids, batch_dims=1)
    loss = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=target_class_ids,
                                                          logits=pred_class_logits)
    loss = loss * pred_active
    return tf.math.divide_no_nan(tf.reduce_sum(loss), tf.reduce_sum(pred_active))


def _positive_rows(target_class_ids: tf.Tensor):
    """Flat indices and class ids of the positive ROIs of ``[B, R]`` targets."""
    ids = tf.reshape(target_class_ids, (-1,))
    positive_ix = tf.where(ids > 0)[:, 0]
    positive_class_ids = tf.cast(tf.gather(ids, positive_ix), tf.int64)
    return positive_ix, tf.stack([positive_ix, positive_class_ids], axis=1)


def mrcnn_bbox_loss_graph(target_bbox: tf.Tensor, target_class_ids: tf.Tensor,
                          pred_bbox: tf.Tensor) -> tf.Tensor:
    """Box-head loss: smooth-L1 between target deltas and the target class's predicted deltas.

    Args:
        target_bbox: ``[B, R, 4]`` target deltas (already / BBOX_STD_DEV).
        target_class_ids: ``[B, R]``; only ROIs with id > 0 contribute.
        pred_bbox: ``[B, R, NUM_CLASSES, 4]``.

    Returns:
        Scalar mean over positive ROIs' 4 coordinates; 0 if there are none.
    """
    target_bbox = tf.reshape(target_bbox, (-1, 4))
    num_classes = tf.shape(pred_bbox)[2]
    pred_bbox = tf.reshape(pred_bbox, (-1, num_classes, 4))
    positive_ix, indices = _positive_rows(target_class_ids)
    target = tf.gather(target_bbox, positive_ix)
    pred = tf.gather_nd(pred_bbox, indices)
    return _mean_or_zero(smooth_l1_loss(target, pred))


def mrcnn_mask_loss_graph(target_masks: tf.Tensor, target_class_ids: tf.Tensor,
                          pred_masks: tf.Tensor) -> tf.Tensor:
    """Mask-head loss: binary cross-entropy of the target class's mask on positive ROIs.

    Args:
        target_masks: ``[B, R, h, w]`` in {0, 1} (float).
        target_class_ids: ``[B, R]``; only ROIs with id > 0 contribute.
        pred_masks: ``[B, R, h, w, NUM_CLASSES]`` sigmoid probabilities.

    Returns:
        Scalar mean over all pixels of the positive ROIs; 0 if there are none.
    """
    mask_shape = tf.shape(target_masks)
    target_masks = tf.reshape(tf.cast(target_masks, tf.float32), (-1, mask_shape[2], mask_shape[3]))
    pred_shape = tf.shape(pred_masks)
    pred_masks = tf.reshape(tf.cast(pred_masks, tf.float32),
                            (-1, pred_shape[2], pred_shape[3], pred_shape[4]))
    pred_masks = tf.transpose(pred_masks, [0, 3, 1, 2])  # [N, classes, h, w]
    positive_ix, indices = _positive_rows(target_class_ids)
    y_true = tf.gather(target_masks, positive_ix)
    y_pred = tf.gather_nd(pred_masks, indices)
    return _mean_or_zero(binary_crossentropy(y_true, y_pred))
