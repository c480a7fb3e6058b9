"""Training targets computed in numpy: RPN anchor labels/deltas and head targets.

Pixel boxes are ``(y1, x1, y2, x2)`` with y2/x2 exclusive. Random subsampling draws
from the legacy global ``np.random`` in Matterport's order, so seeded calls give
Matterport's exact targets.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from mrcnn.core.boxes import box_refinement, compute_iou, compute_overlaps
from mrcnn.core.image import resize


def build_rpn_targets(image_shape, anchors: np.ndarray, gt_class_ids: np.ndarray, gt_boxes: np.ndarray,
                      config, rng=None, anchor_index=None) -> Tuple[np.ndarray, np.ndarray]:
    """Label anchors positive/negative/neutral and compute deltas of the positives.

    Args:
        image_shape: ``(H, W, C)`` of the molded image (unused except for the API).
        anchors: [A, 4] pixel anchors; gt_class_ids: [N] int (negative = crowd);
        gt_boxes: [N, 4] pixel boxes; config: uses RPN_TRAIN_ANCHORS_PER_IMAGE, RPN_BBOX_STD_DEV.
        rng: a ``np.random.RandomState`` for the subsampling; default the global ``np.random``
            (Matterport's stream). The tf.data pipeline passes one per sample so parallel
            workers stay deterministic.
        anchor_index: an :class:`mrcnn.core.anchors.AnchorIndex` of ``anchors``: IoUs are then
            computed only for anchors that intersect a box (the others are exactly 0), same
            values and same targets, ~20x less work at 261,888 anchors.
    Returns:
        rpn_match: [A] int32 (1 positive, -1 negative, 0 neutral);
        rpn_bbox: [RPN_TRAIN_ANCHORS_PER_IMAGE, 4] deltas of the positive anchors in
        anchor order, divided by RPN_BBOX_STD_DEV, zero padded.
    """
    rng = np.random if rng is None else rng
    n_anchors = anchors.shape[0]
    per_image = config.RPN_TRAIN_ANCHORS_PER_IMAGE
    rpn_match = np.zeros([n_anchors], dtype=np.int32)
    rpn_bbox = np.zeros((per_image, 4))

    # Anchors overlapping crowd boxes are neither positive nor negative.
    crowd_ix = np.where(gt_class_ids < 0)[0]
    if crowd_ix.shape[0] > 0:
        non_crowd_ix = np.where(gt_class_ids > 0)[0]
        crowd_boxes = gt_boxes[crowd_ix]
        gt_class_ids = gt_class_ids[non_crowd_ix]
        gt_boxes = gt_boxes[non_crowd_ix]
        crowd_iou_max, _ = _max_overlaps(anchors, crowd_boxes, anchor_index)
        no_crowd_bool = crowd_iou_max < 0.001
    else:
        no_crowd_bool = np.ones([n_anchors], dtype=bool)

    if gt_boxes.shape[0] == 0:
        # No instance: every crowd-free anchor is a negative candidate.
        rpn_match[no_crowd_bool] = -1
        anchor_iou_argmax = np.zeros([n_anchors], dtype=np.int64)
    else:
        anchor_iou_max, anchor_iou_argmax, gt_iou_argmax = _rpn_overlaps(anchors, gt_boxes, anchor_index)
        rpn_match[(anchor_iou_max < 0.3) & no_crowd_bool] = -1
        # Each GT box gets its best anchor(s) as positives even below 0.7 IoU (ties all count,
        # as in Matterport).
        rpn_match[gt_iou_argmax] = 1
        rpn_match[anchor_iou_max >= 0.7] = 1

    # Balance: at most half positives, the rest negatives.
    ids = np.where(rpn_match == 1)[0]
    extra = len(ids) - (per_image // 2)
    if extra > 0:
        rpn_match[rng.choice(ids, extra, replace=False)] = 0
    ids = np.where(rpn_match == -1)[0]
    extra = len(ids) - (per_image - np.sum(rpn_match == 1))
    if extra > 0:
        rpn_match[rng.choice(ids, extra, replace=False)] = 0

    ids = np.where(rpn_match == 1)[0]
    if ids.size:
        gt = gt_boxes[anchor_iou_argmax[ids]]
        a = anchors[ids]
        gt_h = gt[:, 2] - gt[:, 0]
        gt_w = gt[:, 3] - gt[:, 1]
        gt_cy = gt[:, 0] + 0.5 * gt_h
        gt_cx = gt[:, 1] + 0.5 * gt_w
        a_h = a[:, 2] - a[:, 0]
        a_w = a[:, 3] - a[:, 1]
        a_cy = a[:, 0] + 0.5 * a_h
        a_cx = a[:, 1] + 0.5 * a_w
        deltas = np.stack([(gt_cy - a_cy) / a_h, (gt_cx - a_cx) / a_w,
                           np.log(gt_h / a_h), np.log(gt_w / a_w)], axis=1)
        rpn_bbox[:ids.size] = deltas / np.asarray(config.RPN_BBOX_STD_DEV)
    return rpn_match, rpn_bbox


def _max_overlaps(anchors: np.ndarray, boxes: np.ndarray, index=None) -> Tuple[np.ndarray, np.ndarray]:
    """Per anchor: max IoU with ``boxes`` [A] and the argmax [A] (0 where all IoUs are 0)."""
    if index is None:
        overlaps = compute_overlaps(anchors, boxes)
        arg = np.argmax(overlaps, axis=1)
        return overlaps[np.arange(anchors.shape[0]), arg], arg
    iou_max, arg, _ = _sparse_overlaps(anchors, boxes, index)
    return iou_max, arg


def _sparse_overlaps(anchors: np.ndarray, boxes: np.ndarray, index):
    """IoU only of the (anchor, box) pairs that intersect; every other pair is exactly 0.

    Each pair's IoU is computed with :func:`compute_overlaps`' expressions in the same
    dtypes, so the values are bit-identical. Boxes are visited in order and an anchor's
    best box only changes on a strictly larger IoU: the first maximum, as ``np.argmax``.
    Returns ``(iou_max [A], argmax [A], per_box)`` with ``per_box[j] = (anchor ids, IoUs)``.
    """
    n = anchors.shape[0]
    iou_max, arg = np.zeros([n]), np.zeros([n], dtype=np.int64)
    per_box = []
    for j, ids in enumerate(index.candidates_per_box(boxes)):
        a, b = anchors[ids], boxes[j]
        y1 = np.maximum(b[0], a[:, 0])
        y2 = np.minimum(b[2], a[:, 2])
        x1 = np.maximum(b[1], a[:, 1])
        x2 = np.minimum(b[3], a[:, 3])
        inter = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
        area_b = (b[2] - b[0]) * (b[3] - b[1])
        area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
        iou = inter / (area_b + area_a - inter)
        better = iou > iou_max[ids]
        iou_max[ids[better]] = iou[better]
        arg[ids[better]] = j
        per_box.append((ids, iou))
    return iou_max, arg, per_box


def _rpn_overlaps(anchors: np.ndarray, gt_boxes: np.ndarray, index=None):
    """``(anchor_iou_max [A], anchor_iou_argmax [A], gt_iou_argmax)`` of Matterport's RPN matching.

    ``gt_iou_argmax`` lists (possibly repeated, any order) the anchors that reach some box's
    best IoU. With an index only intersecting pairs are scored; a box that meets no anchor
    (its best IoU is 0, so Matterport marks every anchor at 0) falls back to the full matrix.
    """
    if index is not None:
        iou_max, arg, per_box = _sparse_overlaps(anchors, gt_boxes, index)
        if all(iou.size and iou.max() > 0 for _, iou in per_box):
            best = [ids[iou == iou.max()] for ids, iou in per_box]
            return iou_max, arg, np.concatenate(best)
    overlaps = compute_overlaps(anchors, gt_boxes)
    arg = np.argmax(overlaps, axis=1)
    iou_max = overlaps[np.arange(anchors.shape[0]), arg]
    return iou_max, arg, np.argwhere(overlaps == np.max(overlaps, axis=0))[:, 0]


def _random_pairs(low: int, high: int, count: int) -> np.ndarray:
    """Draw sorted coordinate pairs at least 1 px apart (Matterport's rejection loop)."""
    pairs = np.random.randint(low, high, (count * 2, 2))
    return pairs[np.abs(pairs[:, 0] - pairs[:, 1]) >= 1][:count]


def generate_random_rois(image_shape, count: int, gt_class_ids: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """Random ROIs: 90% near the GT boxes, the rest anywhere (for debugging the heads).

    Returns:
        [count, 4] int32 pixel boxes ``(y1, x1, y2, x2)``.
    """
    rois = np.zeros((count, 4), dtype=np.int32)
    n_gt = gt_boxes.shape[0]
    rois_per_box = int(0.9 * count / n_gt) if n_gt else 0
    for i in range(n_gt):
        gt_y1, gt_x1, gt_y2, gt_x2 = gt_boxes[i]
        h = gt_y2 - gt_y1
        w = gt_x2 - gt_x1
        r_y1 = max(gt_y1 - h, 0)
        r_y2 = min(gt_y2 + h, image_shape[0])
        r_x1 = max(gt_x1 - w, 0)
        r_x2 = min(gt_x2 + w, image_shape[1])
        while True:
            y1y2 = _random_pairs(r_y1, r_y2, rois_per_box)
            x1x2 = _random_pairs(r_x1, r_x2, rois_per_box)
            if y1y2.shape[0] == rois_per_box and x1x2.shape[0] == rois_per_box:
                break
        x1, x2 = np.split(np.sort(x1x2, axis=1), 2, axis=1)
        y1, y2 = np.split(np.sort(y1y2, axis=1), 2, axis=1)
        rois[rois_per_box * i:rois_per_box * (i + 1)] = np.hstack([y1, x1, y2, x2])
    remaining = count - rois_per_box * n_gt
    while True:
        y1y2 = _random_pairs(0, image_shape[0], remaining)
        x1x2 = _random_pairs(0, image_shape[1], remaining)
        if y1y2.shape[0] == remaining and x1x2.shape[0] == remaining:
            break
    x1, x2 = np.split(np.sort(x1x2, axis=1), 2, axis=1)
    y1, y2 = np.split(np.sort(y1y2, axis=1), 2, axis=1)
    if remaining:
        rois[-remaining:] = np.hstack([y1, x1, y2, x2])
    return rois


def build_detection_targets(rpn_rois: np.ndarray, gt_class_ids: np.ndarray, gt_boxes: np.ndarray,
                            gt_masks: np.ndarray, config):
    """Numpy twin of the DetectionTargetLayer (Matterport uses it to debug the heads).

    Args:
        rpn_rois: [N, 4] int pixel ROIs; gt_class_ids: [G] int32; gt_boxes: [G, 4] int32;
        gt_masks: [H, W, G] bool (full size) or [h, w, G] mini masks if USE_MINI_MASK.
    Returns:
        rois [TRAIN_ROIS_PER_IMAGE, 4], class_ids [TRAIN_ROIS_PER_IMAGE],
        bboxes [TRAIN_ROIS_PER_IMAGE, NUM_CLASSES, 4] float32 (normalised by BBOX_STD_DEV),
        masks [TRAIN_ROIS_PER_IMAGE, MASK_H, MASK_W, NUM_CLASSES] float32.
    """
    if rpn_rois.shape[0] == 0:
        raise ValueError("build_detection_targets needs at least one ROI")
    if gt_class_ids.dtype != np.int32:
        raise TypeError(f"gt_class_ids must be int32, got {gt_class_ids.dtype}")
    instance_ids = np.where(gt_class_ids > 0)[0]
    if instance_ids.shape[0] == 0:
        raise ValueError("build_detection_targets needs at least one non-crowd instance")
    gt_class_ids = gt_class_ids[instance_ids]
    gt_boxes = gt_boxes[instance_ids]
    gt_masks = gt_masks[:, :, instance_ids]

    roi_area = (rpn_rois[:, 2] - rpn_rois[:, 0]) * (rpn_rois[:, 3] - rpn_rois[:, 1])
    gt_area = (gt_boxes[:, 2] - gt_boxes[:, 0]) * (gt_boxes[:, 3] - gt_boxes[:, 1])
    overlaps = np.zeros((rpn_rois.shape[0], gt_boxes.shape[0]))
    for i in range(gt_boxes.shape[0]):
        overlaps[:, i] = compute_iou(gt_boxes[i], rpn_rois, gt_area[i], roi_area)
    iou_argmax = np.argmax(overlaps, axis=1)
    iou_max = overlaps[np.arange(overlaps.shape[0]), iou_argmax]
    roi_gt_boxes_all = gt_boxes[iou_argmax]
    roi_gt_class_all = gt_class_ids[iou_argmax]

    fg_ids = np.where(iou_max > 0.5)[0]
    bg_ids = np.where(iou_max < 0.5)[0]
    n_rois = config.TRAIN_ROIS_PER_IMAGE
    fg_count = int(n_rois * config.ROI_POSITIVE_RATIO)
    keep_fg = np.random.choice(fg_ids, fg_count, replace=False) if fg_ids.shape[0] > fg_count else fg_ids
    remaining = n_rois - keep_fg.shape[0]
    keep_bg = np.random.choice(bg_ids, remaining, replace=False) if bg_ids.shape[0] > remaining else bg_ids
    keep = np.concatenate([keep_fg, keep_bg])
    remaining = n_rois - keep.shape[0]
    if remaining > 0:
        if keep.shape[0] == 0:
            bg_ids = np.where(iou_max < 0.5)[0]
            if bg_ids.shape[0] < remaining:
                raise ValueError("not enough background ROIs to fill TRAIN_ROIS_PER_IMAGE")
            keep_bg = np.random.choice(bg_ids, remaining, replace=False)
            keep = np.concatenate([keep, keep_bg])
        else:
            keep = np.concatenate([keep, np.random.choice(keep_bg, remaining, replace=True)])

    roi_gt_boxes_all[keep_bg, :] = 0
    roi_gt_class_all[keep_bg] = 0
    rois = rpn_rois[keep]
    roi_gt_boxes = roi_gt_boxes_all[keep]
    roi_gt_class_ids = roi_gt_class_all[keep]
    roi_gt_assignment = iou_argmax[keep]

    bboxes = np.zeros((n_rois, config.NUM_CLASSES, 4), dtype=np.float32)
    pos_ids = np.where(roi_gt_class_ids > 0)[0]
    bboxes[pos_ids, roi_gt_class_ids[pos_ids]] = box_refinement(rois[pos_ids], roi_gt_boxes[pos_ids, :4])
    bboxes /= config.BBOX_STD_DEV

    masks = np.zeros((n_rois, config.MASK_SHAPE[0], config.MASK_SHAPE[1], config.NUM_CLASSES), dtype=np.float32)
    for i in pos_ids:
        class_id = roi_gt_class_ids[i]
        gt_id = roi_gt_assignment[i]
        class_mask = gt_masks[:, :, gt_id]
        if config.USE_MINI_MASK:
            full = np.zeros(config.IMAGE_SHAPE[:2], dtype=bool)
            gy1, gx1, gy2, gx2 = gt_boxes[gt_id]
            full[gy1:gy2, gx1:gx2] = np.round(
                resize(class_mask.astype(np.float64), (gy2 - gy1, gx2 - gx1))).astype(bool)
            class_mask = full
        y1, x1, y2, x2 = rois[i].astype(np.int32)
        masks[i, :, :, class_id] = resize(class_mask[y1:y2, x1:x2].astype(np.float64), config.MASK_SHAPE)
    return rois, roi_gt_class_ids, bboxes, masks
