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
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import keras
import tensorflow as tf

from mrcnn.modeling.graph_ops import box_refinement_graph, config_value, overlaps_graph
from mrcnn.modeling.roi_align import crop_and_resize

__all__ = ["DetectionTargetLayer", "detection_targets_graph", "detection_targets_batch"]

_POSITIVE_IOU = 0.5
_CROWD_IOU = 0.001
_UNIT_BOX = (0.0, 0.0, 1.0, 1.0)


def _non_zero_rows(boxes: tf.Tensor) -> tf.Tensor:
    """``[B, K]`` True where a ``[B, K, 4]`` box is not all-zero padding."""
    return tf.reduce_sum(tf.abs(boxes), axis=-1) > 0


def _masked_max_iou(overlaps: tf.Tensor, columns: tf.Tensor) -> tf.Tensor:
    """Max IoU over the GT columns selected by ``columns`` ([B, G]); -1 where none."""
    return tf.reduce_max(tf.where(columns[:, tf.newaxis, :], overlaps, -1.0), axis=2)


def _random_order(candidates: tf.Tensor, keys: tf.Tensor, k: tf.Tensor) -> tf.Tensor:
    """Indices ``[B, k]`` listing the True entries of ``candidates`` first, in random order."""
    return tf.math.top_k(tf.where(candidates, keys, -1.0), k=k, sorted=True).indices


def _mask_targets(gt_masks: tf.Tensor, rois: tf.Tensor, roi_gt_boxes: tf.Tensor,
                  assignment: tf.Tensor, mask_shape: Sequence[int], use_mini_mask: bool) -> tf.Tensor:
    """Crop each ROI's assigned GT mask to ``mask_shape``.

    Args:
        gt_masks: ``[B, h, w, G]`` masks (mini masks when ``use_mini_mask``).
        rois, roi_gt_boxes: ``[B, R, 4]`` normalised boxes (ROI and its GT box).
        assignment: ``[B, R]`` GT index of each ROI.

    Returns:
        ``[B, R, mask_h, mask_w]`` float32 in {0, 1}.
    """
    batch, num_rois = tf.shape(rois)[0], tf.shape(rois)[1]
    num_gt = tf.shape(gt_masks)[3]
    # One single-channel image per (image, GT) pair for the crop.
    images = tf.transpose(tf.cast(gt_masks, tf.float32), [0, 3, 1, 2])
    images = tf.reshape(images, tf.concat([[-1], tf.shape(gt_masks)[1:3], [1]], axis=0))
    box_ind = tf.range(batch)[:, tf.newaxis] * num_gt + tf.cast(assignment, tf.int32)
    boxes = rois
    if use_mini_mask:
        # Mini masks cover only the GT box: express the ROI in that frame.
        y1, x1, y2, x2 = [rois[..., i] for i in range(4)]
        gy1, gx1, gy2, gx2 = [roi_gt_boxes[..., i] for i in range(4)]
        gt_h, gt_w = gy2 - gy1, gx2 - gx1
        boxes = tf.stack([(y1 - gy1) / gt_h, (x1 - gx1) / gt_w,
                          (y2 - gy1) / gt_h, (x2 - gx1) / gt_w], axis=-1)
    masks = crop_and_resize(images, tf.reshape(boxes, [-1, 4]), tf.reshape(box_ind, [-1]),
                            tuple(mask_shape))
    masks = tf.round(masks[..., 0])
    return tf.reshape(masks, tf.concat([[batch, num_rois], tf.shape(masks)[1:]], axis=0))


def detection_targets_batch(proposals: tf.Tensor, gt_class_ids: tf.Tensor, gt_boxes: tf.Tensor,
                            gt_masks: tf.Tensor, random_keys: tf.Tensor, *,
                            train_rois_per_image: int, roi_positive_ratio: float,
                            bbox_std_dev: Sequence[float], mask_shape: Sequence[int],
                            use_mini_mask: bool) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]:
    """Training targets for a batch (see the module docstring for the rules).

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
    proposals = tf.cast(proposals, tf.float32)
    # One always-padding GT column keeps argmax/reduce_max defined when G == 0.
    gt_boxes = tf.pad(tf.cast(gt_boxes, tf.float32), [(0, 0), (0, 1), (0, 0)])
    gt_class_ids = tf.pad(tf.cast(gt_class_ids, tf.int32), [(0, 0), (0, 1)])
    gt_masks = tf.pad(gt_masks, [(0, 0), (0, 0), (0, 0), (0, 1)])

    valid_rois = _non_zero_rows(proposals)
    valid_gt = _non_zero_rows(gt_boxes)
    crowd_gt = tf.logical_and(valid_gt, gt_class_ids < 0)
    object_gt = tf.logical_and(valid_gt, gt_class_ids > 0)

    overlaps = overlaps_graph(proposals, gt_boxes)  # [B, N, G+1]
    # Zero-area pairs give 0/0; they overlap nothing.
    overlaps = tf.where(tf.math.is_nan(overlaps), 0.0, overlaps)
    roi_iou_max = _masked_max_iou(overlaps, object_gt)
    no_crowd = _masked_max_iou(overlaps, crowd_gt) < _CROWD_IOU
    positive = tf.logical_and(valid_rois, roi_iou_max >= _POSITIVE_IOU)
    negative = tf.logical_and(tf.logical_and(valid_rois, roi_iou_max < _POSITIVE_IOU), no_crowd)

    # Counts per image, with Matterport's float32 arithmetic for the negatives.
    num_pos = tf.minimum(tf.reduce_sum(tf.cast(positive, tf.int32), axis=1), max_positives)
    ratio = tf.constant(1.0 / roi_positive_ratio, tf.float32)
    neg_quota = tf.cast(ratio * tf.cast(num_pos, tf.float32), tf.int32) - num_pos
    neg_quota = tf.where(num_pos > 0, neg_quota, num_rois - max_positives)
    num_neg = tf.minimum(tf.reduce_sum(tf.cast(negative, tf.int32), axis=1), neg_quota)
    num_neg = tf.minimum(num_neg, num_rois - num_pos)

    k = tf.minimum(num_rois, tf.shape(proposals)[1])
    pos_order = _random_order(positive, random_keys, k)
    neg_order = _random_order(negative, random_keys, k)

    # Output row j: j-th positive, else (j - P)-th negative, else padding.
    row = tf.range(num_rois)[tf.newaxis, :]
    is_pos = row < num_pos[:, tf.newaxis]
    is_neg = tf.logical_and(tf.logical_not(is_pos), row < (num_pos + num_neg)[:, tf.newaxis])
    batch_rows = tf.ones_like(num_pos)[:, tf.newaxis] * row
    pos_src = tf.gather(pos_order, tf.minimum(batch_rows, k - 1), batch_dims=1)
    neg_src = tf.gather(neg_order, tf.clip_by_value(batch_rows - num_pos[:, tf.newaxis], 0, k - 1),
                        batch_dims=1)
    src = tf.where(is_pos, pos_src, neg_src)

    used = tf.logical_or(is_pos, is_neg)[..., tf.newaxis]
    rois = tf.where(used, tf.gather(proposals, src, batch_dims=1), 0.0)

    # Positives come first, so the first max_positives rows hold all of them.
    head = max(max_positives, 1)
    pos_rows = is_pos[:, :head]
    pos_rois = rois[:, :head]
    pos_overlaps = tf.where(object_gt[:, tf.newaxis, :],
                            tf.gather(overlaps, src[:, :head], batch_dims=1), -1.0)
    assignment = tf.argmax(pos_overlaps, axis=2, output_type=tf.int32)
    roi_gt_boxes = tf.gather(gt_boxes, assignment, batch_dims=1)
    roi_class_ids = tf.where(pos_rows, tf.gather(gt_class_ids, assignment, batch_dims=1), 0)

    # Unit boxes on non-positive rows keep log/divide finite; those rows are zeroed.
    unit = tf.constant(_UNIT_BOX)
    safe_rois = tf.where(pos_rows[..., tf.newaxis], pos_rois, unit)
    safe_gt = tf.where(pos_rows[..., tf.newaxis], roi_gt_boxes, unit)
    deltas = box_refinement_graph(safe_rois, safe_gt) / tf.constant(bbox_std_dev, tf.float32)
    deltas = tf.where(pos_rows[..., tf.newaxis], deltas, 0.0)
    masks = _mask_targets(gt_masks, safe_rois, safe_gt, assignment, mask_shape, use_mini_mask)
    masks = tf.where(pos_rows[..., tf.newaxis, tf.newaxis], masks, 0.0)

    pad = num_rois - head
    roi_class_ids = tf.pad(roi_class_ids, [(0, 0), (0, pad)])
    deltas = tf.pad(deltas, [(0, 0), (0, pad), (0, 0)])
    masks = tf.pad(masks, [(0, 0), (0, pad), (0, 0), (0, 0)])
    outputs = (rois, roi_class_ids, deltas, masks)
    return tuple(tf.stop_gradient(t) for t in outputs)


def _target_settings(config: Any, train_rois_per_image, roi_positive_ratio, bbox_std_dev,
                     mask_shape, use_mini_mask) -> dict:
    return {
        "train_rois_per_image": int(config_value(config, "TRAIN_ROIS_PER_IMAGE", train_rois_per_image)),
        "roi_positive_ratio": float(config_value(config, "ROI_POSITIVE_RATIO", roi_positive_ratio)),
        "bbox_std_dev": [float(v) for v in config_value(config, "BBOX_STD_DEV", bbox_std_dev)],
        "mask_shape": [int(v) for v in config_value(config, "MASK_SHAPE", mask_shape)],
        "use_mini_mask": bool(config_value(config, "USE_MINI_MASK", use_mini_mask)),
    }


def detection_targets_graph(proposals: tf.Tensor, gt_class_ids: tf.Tensor, gt_boxes: tf.Tensor,
                            gt_masks: tf.Tensor, config: Any, seed: Optional[int] = None):
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
    proposals = tf.convert_to_tensor(proposals, tf.float32)
    shape = tf.shape(proposals)[:1]
    if seed is None:
        keys = tf.random.uniform(shape)
    else:
        keys = tf.random.stateless_uniform(shape, seed=[int(seed), 0])
    outputs = detection_targets_batch(proposals[tf.newaxis], tf.convert_to_tensor(gt_class_ids)[tf.newaxis],
                                      tf.convert_to_tensor(gt_boxes)[tf.newaxis],
                                      tf.convert_to_tensor(gt_masks)[tf.newaxis], keys[tf.newaxis],
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
        keys = keras.random.uniform(tf.shape(proposals)[:2], seed=self.seed_generator)
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
