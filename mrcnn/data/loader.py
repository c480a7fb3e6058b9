"""Matterport's numpy data path: ``load_image_gt`` and the ``data_generator``.

The tf.data pipeline (:mod:`mrcnn.data.pipeline`) builds on ``load_image_gt`` and
gives the same samples; the generator stays for users who call it directly.
"""
from __future__ import annotations

import logging
import random
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np

from mrcnn.core.anchors import compute_backbone_shapes, generate_pyramid_anchors
from mrcnn.core.boxes import extract_bboxes
from mrcnn.core.image import compose_image_meta, mold_image, resize_image
from mrcnn.core.masks import minimize_mask, resize_mask
from mrcnn.data.augment import augment as _augment
from mrcnn.data.targets import build_detection_targets, build_rpn_targets, generate_random_rois
from mrcnn.data.validate import SampleError, check_sample

logger = logging.getLogger("mrcnn.data")


def load_image_gt(dataset, config, image_id: int, augment: bool = False, augmentation=None,
                  use_mini_mask: Optional[bool] = None, rng: Optional[random.Random] = None,
                  augment_seed: Optional[int] = None):
    """Load an image and its ground truth, resized for the network.

    Args:
        dataset: a prepared :class:`mrcnn.utils.Dataset`; image_id: its internal id.
        augment: deprecated Matterport flag (random left-right flip); use ``augmentation``.
        augmentation: imgaug augmenter / albumentations pipeline / callable (see
            :func:`mrcnn.data.augment.augment`).
        use_mini_mask: store masks as MINI_MASK_SHAPE crops of their boxes; ``None``
            means ``config.USE_MINI_MASK``.
        rng: a ``random.Random`` for the ``crop`` mode and the ``augment`` flip (default:
            Python's global ``random``, as Matterport); augment_seed: seeds imgaug for this
            sample (the tf.data pipeline uses both to stay deterministic in parallel).
    Returns:
        image [H, W, 3] uint8, image_meta [12 + NUM_CLASSES], class_ids [N] int32,
        bbox [N, 4] int32 pixel boxes, mask [H, W, N] bool (or [h, w, N] mini masks).
        Instances that are empty after resizing/augmentation are dropped.

    Raises:
        SampleError: what ``load_image``/``load_mask`` returned breaks a rule of
            :mod:`mrcnn.data.validate` (class id out of range, mask size or count
            mismatch, non-0/1 masks, non-finite pixels, ...); the message names the
            image id and path. ``ImageLoadError``: the file cannot be read.
    """
    if use_mini_mask is None:
        use_mini_mask = config.USE_MINI_MASK
    reference = _reference(dataset, image_id)
    image = dataset.load_image(image_id)
    loaded = dataset.load_mask(image_id)
    if not isinstance(loaded, (tuple, list)) or len(loaded) != 2:
        raise SampleError(f"image id {image_id} ({reference}): load_mask must return (masks, class_ids), "
                          f"got {type(loaded).__name__}")
    image, mask, class_ids = check_sample(image, loaded[0], loaded[1], config, image_id, reference)
    original_shape = image.shape
    image, window, scale, padding, crop = resize_image(
        image, min_dim=config.IMAGE_MIN_DIM, min_scale=config.IMAGE_MIN_SCALE,
        max_dim=config.IMAGE_MAX_DIM, mode=config.IMAGE_RESIZE_MODE, rng=rng)
    mask = resize_mask(mask, scale, padding, crop)

    if augment:
        logger.warning("'augment' is deprecated. Use 'augmentation' instead.")
        if (rng or random).randint(0, 1):
            image = np.fliplr(image)
            mask = np.fliplr(mask)
    if augmentation:
        image, mask = _augment(image, mask, augmentation, seed=augment_seed)
        image, mask = _check_augmented(image, mask, image_id, reference)

    # Crops and augmentation can leave instances without pixels.
    keep = mask.any(axis=0).any(axis=0)  # same as sum(axis=(0, 1)) > 0, ~15x faster
    mask = mask[:, :, keep]
    class_ids = class_ids[keep]
    bbox = extract_bboxes(mask)

    active_class_ids = np.zeros([dataset.num_classes], dtype=np.int32)
    source = dataset.image_info[image_id]["source"]
    active_class_ids[dataset.source_class_ids[source]] = 1
    if use_mini_mask:
        mask = minimize_mask(bbox, mask, config.MINI_MASK_SHAPE)
    image_meta = compose_image_meta(image_id, original_shape, image.shape, window, scale, active_class_ids)
    return image, image_meta, class_ids, bbox, mask


def _check_augmented(image, mask, image_id, reference: str):
    """A user's augmentation callable may return floats: refuse NaN/inf, keep masks bool."""
    image, mask = np.asarray(image), np.asarray(mask)
    if image.dtype.kind not in "biuf" or (image.dtype.kind == "f" and not np.isfinite(image).all()):
        raise SampleError(f"image id {image_id} ({reference}): the augmentation returned an image of "
                          f"dtype {image.dtype} with non-finite or non-numeric values")
    if mask.dtype != bool:
        mask = mask > 0.5 if mask.dtype.kind == "f" else mask != 0
    return image, mask


def _reference(dataset, image_id) -> str:
    try:
        info = dataset.image_info[image_id]
        return str(info.get("path") or info.get("id"))
    except Exception:  # a broken dataset must not hide the original error
        return "?"


class SkipCounter:
    """Counts samples skipped for a reason and logs each reason once per power of ten."""

    def __init__(self, name: str = "data"):
        self.name = name
        self.counts: dict = {}

    def add(self, reason: str, image_id, detail: str = "") -> None:
        n = self.counts.get(reason, 0) + 1
        self.counts[reason] = n
        if n in (1, 10, 100, 1000) or n % 10000 == 0:
            logger.warning("%s: skipped image id %s (%s)%s; %d skipped for this reason so far",
                           self.name, image_id, reason, f": {detail}" if detail else "", n)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def data_generator(dataset, config, shuffle: bool = True, augment: bool = False, augmentation=None,
                   random_rois: int = 0, batch_size: int = 1, detection_targets: bool = False,
                   no_augmentation_sources: Optional[Sequence[str]] = None,
                   max_errors: int = 5, skip_counter: Optional[SkipCounter] = None) -> Iterator:
    """Matterport's endless batch generator.

    Yields ``(inputs, outputs)`` with inputs ``[images (molded float32), image_meta,
    rpn_match [B, A, 1], rpn_bbox, gt_class_ids, gt_boxes, gt_masks]`` (+ ``rpn_rois``
    when ``random_rois``, + ``rois`` when ``detection_targets``) and outputs ``[]`` (or the
    head targets with ``detection_targets``). Images without instances are skipped and
    counted; an image that fails to load is logged with its id and path and skipped;
    more than ``max_errors`` failures in a row raise.
    """
    b = 0
    image_index = -1
    image_ids = np.copy(dataset.image_ids)
    if len(image_ids) == 0:
        raise ValueError("data_generator: the dataset has no images (did you call prepare()?)")
    consecutive_errors = 0
    no_aug = set(no_augmentation_sources or [])
    skips = skip_counter or SkipCounter("data_generator")
    backbone_shapes = compute_backbone_shapes(config, config.IMAGE_SHAPE)
    anchors = generate_pyramid_anchors(config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS, backbone_shapes,
                                       config.BACKBONE_STRIDES, config.RPN_ANCHOR_STRIDE)
    while True:
        image_index = (image_index + 1) % len(image_ids)
        if shuffle and image_index == 0:
            np.random.shuffle(image_ids)
        image_id = image_ids[image_index]
        try:
            source = dataset.image_info[image_id]["source"]
            aug = None if source in no_aug else augmentation
            image, image_meta, gt_class_ids, gt_boxes, gt_masks = load_image_gt(
                dataset, config, image_id, augment=augment, augmentation=aug, use_mini_mask=config.USE_MINI_MASK)
        except (GeneratorExit, KeyboardInterrupt):
            raise
        except Exception as exc:
            if isinstance(exc, SampleError) and getattr(config, "STRICT_DATA_CHECKS", False):
                raise
            consecutive_errors += 1
            logger.exception("Error processing image id %s (%s)", image_id, _reference(dataset, image_id))
            skips.add("error", image_id, str(exc))
            if consecutive_errors > max_errors:
                raise RuntimeError(f"data_generator: {consecutive_errors} images in a row failed to load; "
                                   f"last was image id {image_id} ({_reference(dataset, image_id)})") from exc
            continue
        consecutive_errors = 0
        if not np.any(gt_class_ids > 0):
            skips.add("no instances", image_id)
            continue

        rpn_match, rpn_bbox = build_rpn_targets(image.shape, anchors, gt_class_ids, gt_boxes, config)
        if random_rois:
            rpn_rois = generate_random_rois(image.shape, random_rois, gt_class_ids, gt_boxes)
            if detection_targets:
                rois, mrcnn_class_ids, mrcnn_bbox, mrcnn_mask = build_detection_targets(
                    rpn_rois, gt_class_ids, gt_boxes, gt_masks, config)

        if b == 0:
            batch_image_meta = np.zeros((batch_size,) + image_meta.shape, dtype=image_meta.dtype)
            batch_rpn_match = np.zeros([batch_size, anchors.shape[0], 1], dtype=rpn_match.dtype)
            batch_rpn_bbox = np.zeros([batch_size, config.RPN_TRAIN_ANCHORS_PER_IMAGE, 4], dtype=rpn_bbox.dtype)
            batch_images = np.zeros((batch_size,) + image.shape, dtype=np.float32)
            batch_gt_class_ids = np.zeros((batch_size, config.MAX_GT_INSTANCES), dtype=np.int32)
            batch_gt_boxes = np.zeros((batch_size, config.MAX_GT_INSTANCES, 4), dtype=np.int32)
            batch_gt_masks = np.zeros((batch_size, gt_masks.shape[0], gt_masks.shape[1], config.MAX_GT_INSTANCES),
                                      dtype=gt_masks.dtype)
            if random_rois:
                batch_rpn_rois = np.zeros((batch_size, rpn_rois.shape[0], 4), dtype=rpn_rois.dtype)
                if detection_targets:
                    batch_rois = np.zeros((batch_size,) + rois.shape, dtype=rois.dtype)
                    batch_mrcnn_class_ids = np.zeros((batch_size,) + mrcnn_class_ids.shape, dtype=mrcnn_class_ids.dtype)
                    batch_mrcnn_bbox = np.zeros((batch_size,) + mrcnn_bbox.shape, dtype=mrcnn_bbox.dtype)
                    batch_mrcnn_mask = np.zeros((batch_size,) + mrcnn_mask.shape, dtype=mrcnn_mask.dtype)

        if gt_boxes.shape[0] > config.MAX_GT_INSTANCES:
            ids = np.random.choice(np.arange(gt_boxes.shape[0]), config.MAX_GT_INSTANCES, replace=False)
            gt_class_ids, gt_boxes, gt_masks = gt_class_ids[ids], gt_boxes[ids], gt_masks[:, :, ids]

        n = gt_boxes.shape[0]
        batch_image_meta[b] = image_meta
        batch_rpn_match[b] = rpn_match[:, np.newaxis]
        batch_rpn_bbox[b] = rpn_bbox
        batch_images[b] = mold_image(image.astype(np.float32), config)
        batch_gt_class_ids[b, :n] = gt_class_ids
        batch_gt_boxes[b, :n] = gt_boxes
        batch_gt_masks[b, :, :, :n] = gt_masks
        if random_rois:
            batch_rpn_rois[b] = rpn_rois
            if detection_targets:
                batch_rois[b] = rois
                batch_mrcnn_class_ids[b] = mrcnn_class_ids
                batch_mrcnn_bbox[b] = mrcnn_bbox
                batch_mrcnn_mask[b] = mrcnn_mask
        b += 1

        if b >= batch_size:
            inputs = [batch_images, batch_image_meta, batch_rpn_match, batch_rpn_bbox,
                      batch_gt_class_ids, batch_gt_boxes, batch_gt_masks]
            outputs: List[np.ndarray] = []
            if random_rois:
                inputs.append(batch_rpn_rois)
                if detection_targets:
                    inputs.append(batch_rois)
                    outputs.extend([np.expand_dims(batch_mrcnn_class_ids, -1), batch_mrcnn_bbox, batch_mrcnn_mask])
            yield inputs, outputs
            b = 0
