"""The five Mask R-CNN losses, with Matterport's signatures and numerics, in ``keras.ops``.

Each returns a float32 scalar tensor and is 0 (never NaN) when nothing
contributes (no anchors, no positive ROIs, no active classes). Inputs may carry
any batch size; nothing is sliced per image in Python.

Matterport selects the contributing rows with ``tf.where``/``boolean_mask``
and averages them; the number of rows then depends on the data, which XLA
cannot compile and which costs a host sync on a GPU. Here every loss is a
masked mean over fixed-size tensors: ``sum(loss * selected) / max(count, 1)``.
Unselected rows add exact zeros, so the value is Matterport's up to the order
of the float32 summation, and ``count == 0`` gives 0 like Matterport's
``K.switch(tf.size(loss) > 0, ...)``.
"""
from __future__ import annotations

from typing import Any

from keras import ops

__all__ = [
    "smooth_l1_loss", "rpn_class_loss_graph", "rpn_bbox_loss_graph", "mrcnn_class_loss_graph",
    "mrcnn_bbox_loss_graph", "mrcnn_mask_loss_graph", "binary_crossentropy",
]

# Keras 2's backend epsilon, used by its binary_crossentropy (clip and inside the log).
_EPSILON = 1e-7


def _float32(x):
    """``x`` as a float32 tensor (a TF variable read, so that every op accepts it)."""
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    return x if hasattr(x, "ndim") else ops.copy(x)


def _masked_mean(values, selected, per_row: int = 1):
    """Mean of ``values`` over the rows where ``selected`` is True; 0.0 when none is.

    Args:
        values: float tensor ``[..., ...]`` whose leading dims are ``selected``'s.
        selected: bool tensor of the leading dims.
        per_row: elements of ``values`` per selected row (e.g. 4 for box deltas),
            the static size of its trailing dims.
    """
    values = ops.cast(values, "float32")
    mask = selected
    while len(mask.shape) < len(values.shape):
        mask = ops.expand_dims(mask, -1)
    # where (not multiply) so that a non-finite value in an unselected row is ignored.
    # Operands of one shape: a broadcasting where puts BroadcastGradientArgs (an op
    # with an unknown output shape) into the gradient.
    mask = ops.broadcast_to(mask, ops.shape(values))
    total = ops.sum(ops.where(mask, values, ops.zeros_like(values)))
    count = ops.sum(ops.cast(selected, "float32")) * float(per_row)
    return total / ops.maximum(count, 1.0)


def smooth_l1_loss(y_true, y_pred):
    """Element-wise smooth-L1 (Huber with delta 1): ``0.5 d^2`` if ``|d| < 1`` else ``|d| - 0.5``.

    Args:
        y_true, y_pred: tensors of the same shape, e.g. ``[N, 4]`` deltas.

    Returns:
        Tensor of that shape (no reduction).
    """
    diff = ops.abs(ops.cast(y_true, "float32") - ops.cast(y_pred, "float32"))
    less_than_one = ops.cast(ops.less(diff, 1.0), "float32")
    # The reference (TF graph mode, oneDNN) differs by 1 ulp on a few elements; sums agree.
    return (less_than_one * 0.5 * ops.square(diff)) + (1 - less_than_one) * (diff - 0.5)


def binary_crossentropy(target, output):
    """Keras 2's element-wise BCE on probabilities (clip to [eps, 1-eps], then log(p + eps)).

    Keras 3's ``binary_crossentropy`` drops the ``+ eps`` inside the log, which
    changes the loss in the last bits; this keeps the trained-model numerics.
    """
    output = ops.clip(output, _EPSILON, 1.0 - _EPSILON)
    bce = target * ops.log(output + _EPSILON)
    bce += (1 - target) * ops.log(1 - output + _EPSILON)
    return -bce


def rpn_class_loss_graph(rpn_match, rpn_class_logits):
    """RPN anchor classifier loss (softmax cross-entropy over non-neutral anchors).

    Args:
        rpn_match: ``[B, A, 1]`` int, 1 positive, -1 negative, 0 neutral anchor.
        rpn_class_logits: ``[B, A, 2]`` (background, foreground) logits.

    Returns:
        Scalar mean loss over positive and negative anchors; 0 if there are none.
    """
    rpn_match = ops.squeeze(ops.convert_to_tensor(rpn_match), -1)
    anchor_class = ops.cast(ops.equal(rpn_match, 1), "int32")
    used = ops.not_equal(rpn_match, 0)
    loss = ops.sparse_categorical_crossentropy(anchor_class, ops.cast(rpn_class_logits, "float32"),
                                               from_logits=True)
    return _masked_mean(loss, used)


def _first_positives(positive, count: int):
    """Anchor indices ``[B, count]`` of each image's first ``count`` positives, ascending.

    Rows past an image's number of positives point at arbitrary anchors and
    must be masked. top_k of ``-index`` over the positives is a fixed-size
    replacement for ``tf.where(positive)``.
    """
    num_anchors = positive.shape[1] if positive.shape[1] is not None else ops.shape(positive)[1]
    index = ops.cast(ops.arange(num_anchors), "float32")[None, :]
    # Negatives sort after every positive; indices < 2**24 are exact in float32.
    key = ops.where(positive, -index, -index - 2.0 ** 24)
    return ops.top_k(key, k=count, sorted=True)[1]


def rpn_bbox_loss_graph(config: Any, target_bbox, rpn_match, rpn_bbox):
    """RPN box regression loss (smooth-L1 over positive anchors).

    Args:
        config: kept for Matterport's signature; the packing of ``target_bbox``
            is batched, so IMAGES_PER_GPU is not needed (may be None).
        target_bbox: ``[B, T, 4]`` deltas of the positive anchors of each image,
            in anchor order, packed at the top and zero-padded
            (T = RPN_TRAIN_ANCHORS_PER_IMAGE).
        rpn_match: ``[B, A, 1]`` int anchor labels (1 = positive).
        rpn_bbox: ``[B, A, 4]`` predicted deltas.

    Returns:
        Scalar mean over the positives' 4 coordinates; 0 if there are none.
    """
    del config
    target_bbox, rpn_bbox = ops.convert_to_tensor(target_bbox), ops.convert_to_tensor(rpn_bbox)
    positive = ops.equal(ops.squeeze(ops.convert_to_tensor(rpn_match), -1), 1)
    rows = int(target_bbox.shape[1]) if target_bbox.shape[1] is not None else None
    num_anchors = rpn_bbox.shape[1]
    if rows is None or num_anchors is None:
        raise ValueError("rpn_bbox_loss_graph needs static target rows and anchor counts, got "
                         f"target_bbox {target_bbox.shape} and rpn_bbox {rpn_bbox.shape}")
    # Target row t of an image belongs to its t-th positive anchor (Matterport's
    # batch_pack_graph); gather those anchors' predictions into the same layout.
    k = min(rows, int(num_anchors))
    anchor_ix = _first_positives(positive, k)
    # A flat row gather: static shape, and a gradient without broadcasting ops.
    batch = ops.shape(rpn_bbox)[0]
    flat_ix = anchor_ix + ops.arange(batch, dtype=anchor_ix.dtype)[:, None] * int(num_anchors)
    pred = ops.take(ops.reshape(_float32(rpn_bbox), (-1, 4)), flat_ix, axis=0)
    count = ops.sum(ops.cast(positive, "int32"), axis=1)
    valid = ops.arange(k)[None, :] < count[:, None]
    loss = smooth_l1_loss(target_bbox[:, :k], pred)
    return _masked_mean(loss, valid, per_row=4)


def mrcnn_class_loss_graph(target_class_ids, pred_class_logits, active_class_ids):
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
    target_class_ids = ops.cast(ops.convert_to_tensor(target_class_ids), "int32")
    pred_class_logits = _float32(pred_class_logits)
    pred_class_ids = ops.argmax(pred_class_logits, axis=2)
    pred_active = ops.take_along_axis(_float32(active_class_ids),
                                      ops.cast(pred_class_ids, "int32"), axis=1)
    loss = ops.sparse_categorical_crossentropy(target_class_ids, pred_class_logits, from_logits=True)
    loss = loss * pred_active
    return ops.divide_no_nan(ops.sum(loss), ops.sum(pred_active))


def _target_class_slice(pred, class_ids, axis: int):
    """``pred`` at each ROI's class on ``axis`` (dropped); ``class_ids`` is ``[B, R]``.

    A one-hot product summed over the classes: the picked value plus exact zeros,
    so the same numbers as a gather, with a static shape and a plain gradient
    (keras.ops.take_along_axis broadcasts, and its TF gradient then carries
    BroadcastGradientArgs ops of unknown output shape).
    """
    pred = _float32(pred)
    one_hot = ops.one_hot(ops.maximum(ops.cast(class_ids, "int32"), 0), pred.shape[axis],
                          dtype="float32")  # [B, R, C]
    # [B, R, 1.., C, 1..] with C on ``axis``.
    for _ in range(axis + 1, len(pred.shape)):
        one_hot = ops.expand_dims(one_hot, -1)
    for _ in range(2, axis):
        one_hot = ops.expand_dims(one_hot, 2)
    return ops.sum(pred * one_hot, axis=axis)


def mrcnn_bbox_loss_graph(target_bbox, target_class_ids, pred_bbox):
    """Box-head loss: smooth-L1 between target deltas and the target class's predicted deltas.

    Args:
        target_bbox: ``[B, R, 4]`` target deltas (already / BBOX_STD_DEV).
        target_class_ids: ``[B, R]``; only ROIs with id > 0 contribute.
        pred_bbox: ``[B, R, NUM_CLASSES, 4]``.

    Returns:
        Scalar mean over positive ROIs' 4 coordinates; 0 if there are none.
    """
    pred = _target_class_slice(pred_bbox, target_class_ids, axis=2)
    loss = smooth_l1_loss(target_bbox, pred)
    return _masked_mean(loss, ops.convert_to_tensor(target_class_ids) > 0, per_row=4)


def mrcnn_mask_loss_graph(target_masks, target_class_ids, pred_masks):
    """Mask-head loss: binary cross-entropy of the target class's mask on positive ROIs.

    Args:
        target_masks: ``[B, R, h, w]`` in {0, 1} (float).
        target_class_ids: ``[B, R]``; only ROIs with id > 0 contribute.
        pred_masks: ``[B, R, h, w, NUM_CLASSES]`` sigmoid probabilities.

    Returns:
        Scalar mean over all pixels of the positive ROIs; 0 if there are none.
    """
    pred_masks = ops.convert_to_tensor(pred_masks)
    h, w = pred_masks.shape[2], pred_masks.shape[3]
    if h is None or w is None:
        raise ValueError(f"mrcnn_mask_loss_graph needs a static mask size, got {pred_masks.shape}")
    pred = _target_class_slice(pred_masks, target_class_ids, axis=4)
    loss = binary_crossentropy(ops.cast(target_masks, "float32"), pred)
    return _masked_mean(loss, ops.convert_to_tensor(target_class_ids) > 0, per_row=int(h) * int(w))
