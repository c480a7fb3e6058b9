"""Helpers for the model tests: the reference config of the Matterport fixture
and small configs for fast builds."""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from helpers import FIXTURES
from mrcnn.config import Config

REF_H5 = os.path.join(FIXTURES, "ref_r50_256.h5")
REF_OUTPUTS = os.path.join(FIXTURES, "ref_r50_256_outputs.npz")
REF_IMAGE = os.path.join(FIXTURES, "ref_image_200x300.png")
HEAD_LAYERS = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]
_DERIVED = ("BATCH_SIZE", "IMAGE_SHAPE", "IMAGE_META_SIZE")


def ref_config_values() -> dict:
    with open(os.path.join(FIXTURES, "ref_r50_256_config.json")) as f:
        values = json.load(f)["config"]["values"]
    return {k: v for k, v in values.items() if k not in _DERIVED}


def make_config(name: str = "RefConfig", **overrides: Any) -> Config:
    """A Config subclass whose class attributes are the fixture's values + overrides."""
    attrs = {}
    for k, v in {**ref_config_values(), **overrides}.items():
        default = getattr(Config, k, None)
        if isinstance(default, np.ndarray) and not isinstance(v, np.ndarray):
            v = np.array(v)
        elif isinstance(default, tuple) and isinstance(v, list):
            v = tuple(v)
        attrs[k] = v
    return type(name, (Config,), attrs)()


def small_config(**overrides: Any) -> Config:
    """A fast test config: resnet50, 128x128, few ROIs, 1+3 classes."""
    values = dict(NAME="small", IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128,
                  RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128), POST_NMS_ROIS_INFERENCE=100,
                  POST_NMS_ROIS_TRAINING=64, TRAIN_ROIS_PER_IMAGE=16, PRE_NMS_LIMIT=500,
                  DETECTION_MAX_INSTANCES=10, RPN_TRAIN_ANCHORS_PER_IMAGE=64,
                  MAX_GT_INSTANCES=5, FPN_CLASSIF_FC_LAYERS_SIZE=64, TOP_DOWN_PYRAMID_SIZE=64)
    values.update(overrides)
    return make_config("SmallConfig", **values)


def read_png(path: str) -> np.ndarray:
    import skimage.io
    return skimage.io.imread(path)[..., :3]


def synthetic_batch(config: Config, boxes_per_image=((10, 12, 60, 70), (70, 40, 120, 100)),
                    batch_size: int = 1, empty: bool = False, seed: int = 0) -> list:
    """Inputs of a training-mode model for images with filled rectangles.

    Returns the 7 training inputs (image, meta, rpn_match, rpn_bbox, gt ids,
    gt boxes in pixels, gt mini masks). With ``empty`` every GT slot is
    padding and all anchors are negatives/neutral.
    """
    from mrcnn.core.anchors import get_pixel_anchors
    from mrcnn.core.image import compose_image_meta, mold_image
    from mrcnn.core.masks import minimize_mask
    from mrcnn.data.targets import build_rpn_targets

    rng = np.random.RandomState(seed)
    h, w = int(config.IMAGE_SHAPE[0]), int(config.IMAGE_SHAPE[1])
    anchors = get_pixel_anchors(config, (h, w))
    g = config.MAX_GT_INSTANCES
    batch = [[] for _ in range(7)]
    for _ in range(batch_size):
        image = rng.randint(0, 60, (h, w, 3)).astype(np.uint8)
        n = 0 if empty else len(boxes_per_image)
        class_ids = np.arange(1, n + 1, dtype=np.int32) % (config.NUM_CLASSES - 1) + 1
        boxes = np.array(boxes_per_image[:n], dtype=np.int32).reshape(n, 4)
        masks = np.zeros((h, w, n), dtype=bool)
        for i, (y1, x1, y2, x2) in enumerate(boxes):
            masks[y1:y2, x1:x2, i] = True
            image[y1:y2, x1:x2] = (200, 60 * i, 30)
        if n:
            rpn_match, rpn_bbox = build_rpn_targets(image.shape, anchors, class_ids, boxes, config,
                                                    rng=rng)
            mini = minimize_mask(boxes, masks, config.MINI_MASK_SHAPE)
        else:
            rpn_match = np.full(len(anchors), -1, dtype=np.int32)
            rpn_match[rng.permutation(len(anchors))[config.RPN_TRAIN_ANCHORS_PER_IMAGE:]] = 0
            rpn_bbox = np.zeros((config.RPN_TRAIN_ANCHORS_PER_IMAGE, 4), np.float32)
            mini = np.zeros(tuple(config.MINI_MASK_SHAPE) + (0,), bool)
        meta = compose_image_meta(0, image.shape, image.shape, (0, 0, h, w), 1.0,
                                  np.ones(config.NUM_CLASSES, np.int32))
        gt_ids = np.zeros(g, np.int32)
        gt_ids[:n] = class_ids
        gt_boxes = np.zeros((g, 4), np.int32)
        gt_boxes[:n] = boxes
        gt_masks = np.zeros(tuple(config.MINI_MASK_SHAPE) + (g,), bool)
        gt_masks[..., :n] = mini
        for slot, value in zip(batch, [mold_image(image, config), meta, rpn_match[:, None],
                                       rpn_bbox, gt_ids, gt_boxes, gt_masks]):
            slot.append(value)
    dtypes = [np.float32, np.float32, np.int32, np.float32, np.int32, np.float32, bool]
    return [np.stack(s).astype(d) for s, d in zip(batch, dtypes)]


def unsaturate(model):
    """Random init saturates the class softmax (scores 0.9999999x), so float noise
    would reorder detections; shrink the logits to get well-separated scores."""
    layer = model.keras_model.get_layer("mrcnn_class_logits")
    kernel, bias = layer.get_weights()
    # Background least likely so that there are detections to compare.
    bias = np.linspace(0.5, -0.5, len(bias)).astype(np.float32)
    bias[0] = -3.0
    layer.set_weights([kernel * 0.02, bias])
    return model


def matched_share(a, b) -> float:
    """Share of a's detections found in b: same class, score within 1e-4, box
    within 1 px and mask IoU > 0.98 (each of b's used once)."""
    unused = set(range(len(b["class_ids"])))
    found = 0
    for i in range(len(a["class_ids"])):
        for j in sorted(unused):
            if (a["class_ids"][i] == b["class_ids"][j] and abs(a["scores"][i] - b["scores"][j]) < 1e-4
                    and np.abs(a["rois"][i] - b["rois"][j]).max() <= 1):
                inter = (a["masks"][..., i] & b["masks"][..., j]).sum()
                union = (a["masks"][..., i] | b["masks"][..., j]).sum()
                if union == 0 or inter / union > 0.98:
                    unused.remove(j)
                    found += 1
                    break
    return found / max(len(a["class_ids"]), 1)
