"""DetectionTargetLayer: sample training ROIs and build their class, box and mask targets.

Follows Matterport's ``detection_targets_graph`` rules, batched over images:

* zero rows of ``proposals`` / ``gt_boxes`` are padding and ignored;
* GT with a negative class id are crowds: never targets, and proposals with
  IoU >= 0.001 to a crowd are not used as negatives;
* positives have IoU >= 0.5 with a (non-crowd) GT, negatives < 0.5;
* at most ``int(TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO)`` positives are
  drawn at random, then ``int(P / ROI_POSITIVE_RATIO) - P`` negatives;
* each positive is assigned its highest-IoU GT: class id, deltas
  ``box_refinement / BBOX_STD_DEV`` and the GT mask cropped to the ROI (from
  the mini mask when USE_MINI_MASK), resized to MASK_SHAPE and rounded;
* rows are positives, then negatives, then zeros, TRAIN_ROIS_PER_IMAGE in all.

One deliberate difference: when an image has no positive ROI (no GT, or no
proposal near one) Matterport's formula gives zero negatives and an all-zero
output; here ``TRAIN_ROIS_PER_IMAGE - int(TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO)``
negatives are drawn instead, so the classifier still learns background.
The random draws differ from Matterport's ``tf.random_shuffle``; counts and
targets follow the same rules.

Every output has a static shape (``top_k`` over random keys instead of
shuffles of data-dependent selections, index arithmetic instead of boolean
masks), so the layer compiles with XLA; it is written in ``keras.ops``.
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import keras
import numpy as np
from keras import ops

from mrcnn.modeling.graph_ops import box_refinement_graph, config_value, overlaps_graph
from mrcnn.modeling.roi_align import crop_and_resize

__all__ = ["DetectionTargetLayer", "detection_targets_graph", "detection_targets_batch"]

_POSITIVE_IOU = 0.5
_CROWD_IOU = 0.001
_UNIT_BOX = (0.0, 0.0, 1.0, 1.0)


def _dim(x, axis: int):
    """Static size of ``x`` on ``axis`` when known, else the runtime one."""
    size = x.shape[axis]
    return int(size) if size is not None else ops.shape(x)[axis]


def _batch_gather(x, indices):
    """``x[b, indices[b, j]]`` for ``x [B, N, ...]`` and int ``indices [B, K]`` -> ``[B, K, ...]``.

    A row gather on the flattened batch (tf.gather with batch_dims=1); the output
    shape is the indices' shape, never data-dependent.
    """
    batch, rows = _dim(x, 0), _dim(x, 1)
    flat = ops.reshape(x, [-1] + [_dim(x, i) for i in range(2, len(x.shape))])
    offsets = ops.arange(batch, dtype="int32")[:, None] * rows
    return ops.take(flat, ops.cast(indices, "int32") + offsets, axis=0)


def _mix32(x):
    """An invertible avalanche of uint32 values (the "lowbias32" xor-shift-multiply mix)."""
    x = ops.bitwise_xor(x, ops.right_shift(x, 16))
    x = ops.multiply(x, ops.convert_to_tensor(np.uint32(0x7FEB352D)))
    x = ops.bitwise_xor(x, ops.right_shift(x, 15))
    x = ops.multiply(x, ops.convert_to_tensor(np.uint32(0x846CA68B)))
    return ops.bitwise_xor(x, ops.right_shift(x, 16))


def _uniform_keys(shape, seed):
    """Uniform [0, 1) float32 keys ``shape`` for the random draws.

    Args:
        shape: e.g. ``(B, N)``.
        seed: a ``keras.random.SeedGenerator`` (advanced by one), an int, or None.

    A counter-based hash of (seed, position) in integer keras.ops, not
    ``keras.random.uniform``: TF's stateless generators give other numbers under
    XLA than in the CPU kernels (even with ``alg="philox"``), so the same seed drew
    other ROIs with ``jit_compile=True``; the hash gives the same keys with and
    without XLA and on every backend.
    """
    if seed is None:
        # The unseeded one-image helper: a fresh seed per Python call (fixed once traced).
        seed = np.array([np.random.randint(2 ** 31 - 2), 0], np.int64)
    elif isinstance(seed, keras.random.SeedGenerator):
        seed = seed.next()
    else:
        seed = np.array([int(seed), 0], np.int64)
    # Same int32 reduction of the generator's state as keras' TF backend.
    seed = ops.cast(ops.mod(ops.cast(seed, "int64"), 2 ** 31 - 2), "uint32")
    count = 1
    for size in shape:
        count = count * size
    position = ops.reshape(ops.cast(ops.arange(count), "uint32"), shape)
    # Both seed words mixed first, so nearby seeds give unrelated streams.
    key0 = _mix32(seed[0])
    key1 = _mix32(seed[1] + ops.convert_to_tensor(np.uint32(0x9E3779B9)))
    bits = _mix32(_mix32(ops.bitwise_xor(position, key0)) + key1)
    # The top 24 bits: exactly representable, so keys < 1.
    return ops.cast(ops.right_shift(bits, 8), "float32") * np.float32(2.0 ** -24)


def _non_zero_rows(boxes):
    """``[B, K]`` True where a ``[B, K, 4]`` box is not all-zero padding."""
    return ops.sum(ops.abs(boxes), axis=-1) > 0


def _masked_max_iou(overlaps, columns):
    """Max IoU over the GT columns selected by ``columns`` ([B, G]); -1 where none."""
    return ops.max(ops.where(columns[:, None, :], overlaps, -1.0), axis=2)


def _random_order(candidates, keys, k: int):
    """Indices ``[B, k]`` listing the True entries of ``candidates`` first, in random order."""
    return ops.top_k(ops.where(candidates, keys, -1.0), k=k, sorted=True)[1]


def _mask_targets(gt_masks, rois, roi_gt_boxes, assignment, mask_shape: Sequence[int],
                  use_mini_mask: bool):
    """Crop each ROI's assigned GT mask to ``mask_shape``.

    Args:
        gt_masks: ``[B, h, w, G]`` masks (mini masks when ``use_mini_mask``).
        rois, roi_gt_boxes: ``[B, R, 4]`` normalised boxes (ROI and its GT box).
        assignment: ``[B, R]`` GT index of each ROI.

    Returns:
        ``[B, R, mask_h, mask_w]`` float32 in {0, 1}.
    """
    batch, num_rois = _dim(rois, 0), _dim(rois, 1)
    height, width, num_gt = _dim(gt_masks, 1), _dim(gt_masks, 2), _dim(gt_masks, 3)
    # One single-channel image per (image, GT) pair for the crop.
    images = ops.transpose(ops.cast(gt_masks, "float32"), [0, 3, 1, 2])
    images = ops.reshape(images, [-1, height, width, 1])
    box_ind = ops.arange(batch, dtype="int32")[:, None] * num_gt + ops.cast(assignment, "int32")
    boxes = rois
    if use_mini_mask:
        # Mini masks cover only the GT box: express the ROI in that frame.
        y1, x1, y2, x2 = [rois[..., i] for i in range(4)]
        gy1, gx1, gy2, gx2 = [roi_gt_boxes[..., i] for i in range(4)]
        gt_h, gt_w = gy2 - gy1, gx2 - gx1
        boxes = ops.stack([(y1 - gy1) / gt_h, (x1 - gx1) / gt_w,
                           (y2 - gy1) / gt_h, (x2 - gx1) / gt_w], axis=-1)
    masks = crop_and_resize(images, ops.reshape(boxes, [-1, 4]), ops.reshape(box_ind, [-1]),
                            tuple(mask_shape))
    masks = ops.round(masks[..., 0])
    return ops.reshape(masks, [batch, num_rois] + [int(v) for v in mask_shape])


def detection_targets_batch(proposals, gt_class_ids, gt_boxes, gt_masks, random_keys, *,
                            train_rois_per_image: int, roi_positive_ratio: float,
                            bbox_std_dev: Sequence[float], mask_shape: Sequence[int],
                            use_mini_mask: bool) -> Tuple[Any, Any, Any, Any]:
    """Training targets for a batch (see the module docstring for the rules).

    Every tensor has a static shape given the input shapes: the draws are
    ``top_k`` over random keys and the rows are filled by index arithmetic,
    so the layer compiles with XLA.

    Args:
        proposals: ``[B, N, 4]`` normalised ROIs, zero rows are padding.
        gt_class_ids: ``[B, G]`` int, 0 padding, < 0 crowd.
        gt_boxes: ``[B, G, 4]`` normalised, zero rows are padding.
        gt_masks: ``[B, h, w, G]`` bool/float; ``h, w`` = MINI_MASK_SHAPE when
            ``use_mini_mask``, else the image size.
        random_keys: ``[B, N]`` floats in [0, 1) that order the random draws.
        train_rois_per_image, roi_positive_ratio, bbox_std_dev, mask_shape,
        use_mini_mask: the Config values of the same (upper-case) names.

    Returns:
        ``rois [B, T, 4]`` float32 normalised, ``class_ids [B, T]`` int32,
        ``deltas [B, T, 4]`` float32, ``masks [B, T, mask_h, mask_w]`` float32,
        with ``T = train_rois_per_image``; targets are zero for negative and
        padding rows.
    """
    num_rois = train_rois_per_image
    max_positives = int(train_rois_per_image * roi_positive_ratio)
    proposals = ops.cast(proposals, "float32")
    # One always-padding GT column keeps argmax/max defined when G == 0.
    gt_boxes = ops.pad(ops.cast(gt_boxes, "float32"), [(0, 0), (0, 1), (0, 0)])
    gt_class_ids = ops.pad(ops.cast(gt_class_ids, "int32"), [(0, 0), (0, 1)])
    gt_masks = ops.pad(ops.cast(gt_masks, "float32"), [(0, 0), (0, 0), (0, 0), (0, 1)])

    valid_rois = _non_zero_rows(proposals)
    valid_gt = _non_zero_rows(gt_boxes)
    crowd_gt = ops.logical_and(valid_gt, gt_class_ids < 0)
    object_gt = ops.logical_and(valid_gt, gt_class_ids > 0)

    overlaps = overlaps_graph(proposals, gt_boxes)  # [B, N, G+1]
    # Zero-area pairs give 0/0; they overlap nothing.
    overlaps = ops.where(ops.isnan(overlaps), 0.0, overlaps)
    roi_iou_max = _masked_max_iou(overlaps, object_gt)
    no_crowd = _masked_max_iou(overlaps, crowd_gt) < _CROWD_IOU
    positive = ops.logical_and(valid_rois, roi_iou_max >= _POSITIVE_IOU)
    negative = ops.logical_and(ops.logical_and(valid_rois, roi_iou_max < _POSITIVE_IOU), no_crowd)

    # Counts per image, with Matterport's float32 arithmetic for the negatives.
    num_pos = ops.minimum(ops.sum(ops.cast(positive, "int32"), axis=1), max_positives)
    ratio = np.float32(1.0 / roi_positive_ratio)
    neg_quota = ops.cast(ratio * ops.cast(num_pos, "float32"), "int32") - num_pos
    neg_quota = ops.where(num_pos > 0, neg_quota, num_rois - max_positives)
    num_neg = ops.minimum(ops.sum(ops.cast(negative, "int32"), axis=1), neg_quota)
    num_neg = ops.minimum(num_neg, num_rois - num_pos)

    num_proposals = proposals.shape[1]
    if num_proposals is None:
        raise ValueError("DetectionTargetLayer needs a static number of proposals, got "
                         f"{proposals.shape}")
    k = min(num_rois, int(num_proposals))
    pos_order = _random_order(positive, random_keys, k)
    neg_order = _random_order(negative, random_keys, k)

    # Output row j: j-th positive, else (j - P)-th negative, else padding.
    row = ops.arange(num_rois, dtype="int32")[None, :]
    is_pos = row < num_pos[:, None]
    is_neg = ops.logical_and(ops.logical_not(is_pos), row < (num_pos + num_neg)[:, None])
    batch_rows = ops.ones_like(num_pos)[:, None] * row
    pos_src = _batch_gather(pos_order, ops.minimum(batch_rows, k - 1))
    neg_src = _batch_gather(neg_order, ops.clip(batch_rows - num_pos[:, None], 0, k - 1))
    src = ops.where(is_pos, pos_src, neg_src)

    used = ops.logical_or(is_pos, is_neg)[..., None]
    rois = ops.where(used, _batch_gather(proposals, src), 0.0)

    # Positives come first, so the first max_positives rows hold all of them.
    head = max(max_positives, 1)
    pos_rows = is_pos[:, :head]
    pos_rois = rois[:, :head]
    pos_overlaps = ops.where(object_gt[:, None, :], _batch_gather(overlaps, src[:, :head]), -1.0)
    assignment = ops.cast(ops.argmax(pos_overlaps, axis=2), "int32")
    roi_gt_boxes = _batch_gather(gt_boxes, assignment)
    roi_class_ids = ops.where(pos_rows, _batch_gather(gt_class_ids, assignment), 0)

    # Unit boxes on non-positive rows keep log/divide finite; those rows are zeroed.
    unit = ops.convert_to_tensor(np.array(_UNIT_BOX, np.float32))
    safe_rois = ops.where(pos_rows[..., None], pos_rois, unit)
    safe_gt = ops.where(pos_rows[..., None], roi_gt_boxes, unit)
    deltas = box_refinement_graph(safe_rois, safe_gt) / np.array(bbox_std_dev, np.float32)
    deltas = ops.where(pos_rows[..., None], deltas, 0.0)
    masks = _mask_targets(gt_masks, safe_rois, safe_gt, assignment, mask_shape, use_mini_mask)
    masks = ops.where(pos_rows[..., None, None], masks, 0.0)

    pad = num_rois - head
    roi_class_ids = ops.pad(roi_class_ids, [(0, 0), (0, pad)])
    deltas = ops.pad(deltas, [(0, 0), (0, pad), (0, 0)])
    masks = ops.pad(masks, [(0, 0), (0, pad), (0, 0), (0, 0)])
    outputs = (rois, roi_class_ids, deltas, masks)
    return tuple(ops.stop_gradient(t) for t in outputs)


def _target_settings(config: Any, train_rois_per_image, roi_positive_ratio, bbox_std_dev,
                     mask_shape, use_mini_mask) -> dict:
    return {
        "train_rois_per_image": int(config_value(config, "TRAIN_ROIS_PER_IMAGE", train_rois_per_image)),
        "roi_positive_ratio": float(config_value(config, "ROI_POSITIVE_RATIO", roi_positive_ratio)),
        "bbox_std_dev": [float(v) for v in config_value(config, "BBOX_STD_DEV", bbox_std_dev)],
        "mask_shape": [int(v) for v in config_value(config, "MASK_SHAPE", mask_shape)],
        "use_mini_mask": bool(config_value(config, "USE_MINI_MASK", use_mini_mask)),
    }


def detection_targets_graph(proposals: Any, gt_class_ids: Any, gt_boxes: Any,
                            gt_masks: Any, config: Any, seed: Optional[int] = None):
    """One image's targets, with Matterport's signature.

    Args:
        proposals: ``[N, 4]``; gt_class_ids: ``[G]``; gt_boxes: ``[G, 4]``;
        gt_masks: ``[h, w, G]``; config: Config with TRAIN_ROIS_PER_IMAGE,
        ROI_POSITIVE_RATIO, BBOX_STD_DEV, MASK_SHAPE and USE_MINI_MASK.
        seed: optional int for a reproducible draw.

    Returns:
        ``(rois [T, 4], class_ids [T], deltas [T, 4], masks [T, mask_h, mask_w])``.
    """
    settings = _target_settings(config, None, None, None, None, None)
    proposals = ops.convert_to_tensor(proposals, "float32")
    shape = (_dim(proposals, 0),)
    keys = _uniform_keys(shape, None if seed is None else int(seed))
    outputs = detection_targets_batch(proposals[None], ops.convert_to_tensor(gt_class_ids)[None],
                                      ops.convert_to_tensor(gt_boxes)[None],
                                      ops.convert_to_tensor(gt_masks)[None], keys[None],
                                      **settings)
    return tuple(t[0] for t in outputs)


@keras.saving.register_keras_serializable(package="mrcnn")
class DetectionTargetLayer(keras.layers.Layer):
    """Sample ROIs for the heads and build their targets (Matterport's ``DetectionTargetLayer``).

    Args:
        config: optional ``Config``; supplies the values below unless given.
        train_rois_per_image: int. Output rows per image.
        roi_positive_ratio: float. Share of positives at most.
        bbox_std_dev: 4 floats. Deltas are divided by these.
        mask_shape: ``(h, w)`` of mask targets.
        use_mini_mask: bool. Whether ``gt_masks`` are mini masks (GT-box frame).
        seed: int or None, for the layer's ``keras.random.SeedGenerator``.

    Call arguments:
        inputs: ``[proposals [B, N, 4] normalised, gt_class_ids [B, G] int,
            gt_boxes [B, G, 4] normalised, gt_masks [B, h, w, G] bool]``.

    Returns:
        ``[rois [B, T, 4], target_class_ids [B, T] int32, target_bbox [B, T, 4],
        target_mask [B, T, mask_h, mask_w]]``, ``T = train_rois_per_image``.
    """

    def __init__(self, config: Any = None, *, train_rois_per_image: Optional[int] = None,
                 roi_positive_ratio: Optional[float] = None,
                 bbox_std_dev: Optional[Sequence[float]] = None,
                 mask_shape: Optional[Sequence[int]] = None, use_mini_mask: Optional[bool] = None,
                 seed: Optional[int] = None, **kwargs) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.config = config
        self._settings = _target_settings(config, train_rois_per_image, roi_positive_ratio,
                                          bbox_std_dev, mask_shape, use_mini_mask)
        for key, value in self._settings.items():
            setattr(self, key, value)
        if self.train_rois_per_image < 1:
            raise ValueError(f"{self.name}: train_rois_per_image must be >= 1, "
                             f"got {self.train_rois_per_image!r}")
        if not 0.0 < self.roi_positive_ratio <= 1.0:
            raise ValueError(f"{self.name}: roi_positive_ratio must be in (0, 1], "
                             f"got {self.roi_positive_ratio!r}")
        if len(self.bbox_std_dev) != 4 or len(self.mask_shape) != 2:
            raise ValueError(f"{self.name}: bbox_std_dev needs 4 values and mask_shape 2, got "
                             f"{self.bbox_std_dev!r} and {self.mask_shape!r}")
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def _check_inputs(self, inputs) -> None:
        if len(inputs) != 4:
            raise ValueError(f"{self.name}: expected [proposals, gt_class_ids, gt_boxes, gt_masks], "
                             f"got {len(inputs)} inputs")
        n_ids, n_boxes, n_masks = inputs[1].shape[-1], inputs[2].shape[-2], inputs[3].shape[-1]
        known = [n for n in (n_ids, n_boxes, n_masks) if n is not None]
        if len(set(known)) > 1:
            raise ValueError(f"{self.name}: gt_class_ids, gt_boxes and gt_masks disagree on the number "
                             f"of GT instances ({n_ids}, {n_boxes}, {n_masks}); gt_masks must be "
                             f"[batch, height, width, instances]")

    def call(self, inputs):
        self._check_inputs(inputs)
        proposals, gt_class_ids, gt_boxes, gt_masks = inputs
        keys = _uniform_keys((_dim(proposals, 0), _dim(proposals, 1)), self.seed_generator)
        return list(detection_targets_batch(proposals, gt_class_ids, gt_boxes, gt_masks, keys,
                                            **self._settings))

    def compute_output_shape(self, input_shape):
        batch, rows = input_shape[0][0], self.train_rois_per_image
        return [(batch, rows, 4), (batch, rows), (batch, rows, 4),
                (batch, rows) + tuple(self.mask_shape)]

    def compute_output_spec(self, inputs):
        self._check_inputs(inputs)
        shapes = self.compute_output_shape([x.shape for x in inputs])
        dtypes = ["float32", "int32", "float32", "float32"]
        return [keras.KerasTensor(s, dtype=d) for s, d in zip(shapes, dtypes)]

    def get_config(self) -> dict:
        base = super().get_config()
        base.update(dict(self._settings, seed=self.seed))
        return base
