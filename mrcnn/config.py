"""Model and training configuration.

Users subclass :class:`Config` and override class attributes, exactly as with
Matterport's ``mrcnn.config.Config``::

    class ShapesConfig(Config):
        NAME = "shapes"
        NUM_CLASSES = 1 + 3
        IMAGE_MIN_DIM = IMAGE_MAX_DIM = 128

``__init__`` derives BATCH_SIZE, IMAGE_SHAPE and IMAGE_META_SIZE and validates
the combination, raising :class:`ConfigError` with a message that names the
attribute and the fix.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Dict, Mapping

import numpy as np

__all__ = ["Config", "ConfigError"]

RESIZE_MODES = ("none", "square", "pad64", "crop")
LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss",
              "mrcnn_bbox_loss", "mrcnn_mask_loss")
# Derived attributes are recomputed by __init__, never read from a dict.
DERIVED = ("BATCH_SIZE", "IMAGE_SHAPE", "IMAGE_META_SIZE")


class ConfigError(ValueError):
    """An attribute of a Config has a value the model cannot be built with."""


class Config(object):
    """Base configuration; subclass it and override what differs.

    Every attribute and default of Matterport's Config is kept.
    """
    NAME = None  # Override in sub-classes
    GPU_COUNT = 1
    IMAGES_PER_GPU = 2
    STEPS_PER_EPOCH = 1000
    VALIDATION_STEPS = 50
    BACKBONE = "resnet101"
    COMPUTE_BACKBONE_SHAPE = None
    BACKBONE_STRIDES = [4, 8, 16, 32, 64]
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024
    TOP_DOWN_PYRAMID_SIZE = 256
    NUM_CLASSES = 1  # Override in sub-classes
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]
    RPN_ANCHOR_STRIDE = 1
    RPN_NMS_THRESHOLD = 0.7
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    PRE_NMS_LIMIT = 6000
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000
    USE_MINI_MASK = True
    MINI_MASK_SHAPE = (56, 56)
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    IMAGE_MIN_SCALE = 0
    IMAGE_CHANNEL_COUNT = 3
    MEAN_PIXEL = np.array([123.7, 116.8, 103.9])
    TRAIN_ROIS_PER_IMAGE = 200
    ROI_POSITIVE_RATIO = 0.33
    POOL_SIZE = 7
    MASK_POOL_SIZE = 14
    MASK_SHAPE = [28, 28]
    MAX_GT_INSTANCES = 100
    RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    DETECTION_MAX_INSTANCES = 100
    DETECTION_MIN_CONFIDENCE = 0.7
    DETECTION_NMS_THRESHOLD = 0.3
    LEARNING_RATE = 0.001
    LEARNING_MOMENTUM = 0.9
    WEIGHT_DECAY = 0.0001
    LOSS_WEIGHTS = {
        "rpn_class_loss": 1.,
        "rpn_bbox_loss": 1.,
        "mrcnn_class_loss": 1.,
        "mrcnn_bbox_loss": 1.,
        "mrcnn_mask_loss": 1.,
    }
    USE_RPN_ROIS = True
    # Not in Matterport. In training, run the mask head only on the rows that can hold
    # positive ROIs (the first int(TRAIN_ROIS_PER_IMAGE * ROI_POSITIVE_RATIO)); the mask
    # loss and its gradients are unchanged, the step is much cheaper. False runs it on
    # every ROI as Matterport did (the training-mode mrcnn_mask output then has all rows).
    MASK_HEAD_POSITIVES_ONLY = True
    # Not in Matterport. Training precision: None (float32), "mixed_float16" (GPUs with
    # tensor cores) or "mixed_bfloat16". Box maths and losses stay in float32.
    MIXED_PRECISION = None
    # Not in Matterport, which fixes them at 512 and 256. Widths of the RPN's shared 3x3 conv
    # and of the mask head's convs: on small images these two dominate the cost of a training
    # step, and a network trained from scratch on simple data does not need them wide.
    # Matterport's h5 weights need the defaults.
    RPN_CONV_CHANNELS = 512
    MASK_HEAD_CHANNELS = 256
    TRAIN_BN = False  # Defaulting to False since batch size is often small
    GRADIENT_CLIP_NORM = 5.0

    # Not in Matterport. Training samples that break a rule of mrcnn.data.validate (class
    # id out of range, mask size/count mismatch, non-0/1 masks, NaN pixels, ...) are
    # skipped, logged with image id and path, and counted; True raises SampleError instead.
    STRICT_DATA_CHECKS = False
    # Not in Matterport. None keeps every epoch's checkpoint (Matterport); N keeps the last
    # N plus the one with the lowest validation loss (train loss without validation).
    CHECKPOINTS_KEEP = None

    def __init__(self) -> None:
        """Compute derived attributes and validate."""
        self.BATCH_SIZE = self.IMAGES_PER_GPU * self.GPU_COUNT
        if self.IMAGE_RESIZE_MODE == "crop":
            self.IMAGE_SHAPE = np.array([self.IMAGE_MIN_DIM, self.IMAGE_MIN_DIM,
                                         self.IMAGE_CHANNEL_COUNT])
        else:
            self.IMAGE_SHAPE = np.array([self.IMAGE_MAX_DIM, self.IMAGE_MAX_DIM,
                                         self.IMAGE_CHANNEL_COUNT])
        # image_id(1) + original_image_shape(3) + image_shape(3) + window(4)
        # + scale(1) + active_class_ids(NUM_CLASSES)
        self.IMAGE_META_SIZE = 1 + 3 + 3 + 4 + 1 + self.NUM_CLASSES
        self.validate()

    # ------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ConfigError naming the first inconsistent attribute."""
        name = type(self).__name__

        def fail(msg: str) -> None:
            raise ConfigError(f"{name}: {msg}")

        for attr in ("GPU_COUNT", "IMAGES_PER_GPU", "RPN_CONV_CHANNELS", "MASK_HEAD_CHANNELS"):
            v = getattr(self, attr)
            if not isinstance(v, (int, np.integer)) or v < 1:
                fail(f"{attr} must be a positive integer, got {v!r}")
        if not isinstance(self.NUM_CLASSES, (int, np.integer)) or self.NUM_CLASSES < 2:
            fail(f"NUM_CLASSES must be >= 2 (background + at least one class), "
                 f"got {self.NUM_CLASSES!r}. Set NUM_CLASSES = 1 + <number of your classes>.")
        if self.IMAGE_RESIZE_MODE not in RESIZE_MODES:
            fail(f"IMAGE_RESIZE_MODE must be one of {RESIZE_MODES}, got {self.IMAGE_RESIZE_MODE!r}")
        if self.IMAGE_CHANNEL_COUNT < 1:
            fail(f"IMAGE_CHANNEL_COUNT must be >= 1, got {self.IMAGE_CHANNEL_COUNT!r}")
        if len(np.atleast_1d(self.MEAN_PIXEL)) != self.IMAGE_CHANNEL_COUNT:
            fail(f"MEAN_PIXEL has {len(np.atleast_1d(self.MEAN_PIXEL))} values but "
                 f"IMAGE_CHANNEL_COUNT is {self.IMAGE_CHANNEL_COUNT}; give one mean per channel.")
        if self.IMAGE_RESIZE_MODE in ("square", "crop", "pad64"):
            dim_attr = "IMAGE_MIN_DIM" if self.IMAGE_RESIZE_MODE in ("crop", "pad64") else "IMAGE_MAX_DIM"
            h, w = int(self.IMAGE_SHAPE[0]), int(self.IMAGE_SHAPE[1])
            if self.IMAGE_RESIZE_MODE == "pad64":
                if self.IMAGE_MIN_DIM and self.IMAGE_MIN_DIM % 64:
                    fail(f"IMAGE_MIN_DIM={self.IMAGE_MIN_DIM} must be divisible by 64 in pad64 mode")
            elif h % 64 or w % 64:
                fail(f"image size {h}x{w} (from {dim_attr}) must be divisible by 64 so that the "
                     f"FPN levels line up; e.g. use {dim_attr} = {max(64, (h // 64) * 64)} or "
                     f"{(h // 64 + 1) * 64}")
        if self.IMAGE_MIN_DIM and self.IMAGE_MAX_DIM and self.IMAGE_RESIZE_MODE == "square" \
                and self.IMAGE_MIN_DIM > self.IMAGE_MAX_DIM:
            fail(f"IMAGE_MIN_DIM ({self.IMAGE_MIN_DIM}) is larger than IMAGE_MAX_DIM ({self.IMAGE_MAX_DIM})")
        if self.BACKBONE not in ("resnet50", "resnet101") and not callable(self.BACKBONE):
            fail(f"BACKBONE must be 'resnet50', 'resnet101' or a callable, got {self.BACKBONE!r}")
        if callable(self.BACKBONE) and not callable(self.COMPUTE_BACKBONE_SHAPE):
            fail("a callable BACKBONE needs COMPUTE_BACKBONE_SHAPE (a function image_shape -> [(h, w), ...])")
        if len(self.RPN_ANCHOR_SCALES) != len(self.BACKBONE_STRIDES):
            fail(f"RPN_ANCHOR_SCALES has {len(self.RPN_ANCHOR_SCALES)} entries but BACKBONE_STRIDES has "
                 f"{len(self.BACKBONE_STRIDES)}; there is one anchor scale per pyramid level")
        if not 0 < self.ROI_POSITIVE_RATIO <= 1:
            fail(f"ROI_POSITIVE_RATIO must be in (0, 1], got {self.ROI_POSITIVE_RATIO!r}")
        if len(self.MASK_SHAPE) != 2 or list(self.MASK_SHAPE) != [2 * self.MASK_POOL_SIZE] * 2:
            fail(f"MASK_SHAPE {list(self.MASK_SHAPE)} must be twice MASK_POOL_SIZE "
                 f"({self.MASK_POOL_SIZE}) on each side: the mask head upsamples once by 2")
        missing = set(LOSS_NAMES) - set(self.LOSS_WEIGHTS)
        if missing:
            fail(f"LOSS_WEIGHTS lacks {sorted(missing)}")
        unknown = set(self.LOSS_WEIGHTS) - set(LOSS_NAMES)
        if unknown:
            fail(f"LOSS_WEIGHTS has unknown losses {sorted(unknown)}; known: {list(LOSS_NAMES)}")
        if self.MIXED_PRECISION not in (None, "mixed_float16", "mixed_bfloat16"):
            fail(f"MIXED_PRECISION must be None, 'mixed_float16' or 'mixed_bfloat16', got {self.MIXED_PRECISION!r}")
        if self.STRICT_DATA_CHECKS not in (True, False):
            fail(f"STRICT_DATA_CHECKS must be True or False, got {self.STRICT_DATA_CHECKS!r}")
        keep = self.CHECKPOINTS_KEEP
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, (int, np.integer))
                                 or keep < 1):
            fail(f"CHECKPOINTS_KEEP must be None (keep all) or a positive integer, got {keep!r}")
        if self.TRAIN_BN not in (True, False, None):
            fail(f"TRAIN_BN must be True, False or None, got {self.TRAIN_BN!r}")

    # ------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        """All upper-case attributes (derived ones included) as a dict."""
        return {a: getattr(self, a) for a in sorted(dir(self))
                if a.isupper() and not a.startswith("_")}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "Config":
        """Build a config of this class with attributes overridden by `values`.

        Derived attributes in `values` are ignored and recomputed; unknown keys
        raise ConfigError (a typo would otherwise be silently ignored).
        """
        known = {a for a in dir(cls) if a.isupper()} | set(DERIVED)
        unknown = [k for k in values if k not in known]
        if unknown:
            raise ConfigError(f"{cls.__name__}.from_dict: unknown attributes {unknown}")
        obj = cls.__new__(cls)
        for k, v in values.items():
            if k in DERIVED:
                continue
            default = getattr(cls, k, None)
            if isinstance(default, np.ndarray) and not isinstance(v, np.ndarray):
                v = np.array(v)
            elif isinstance(default, tuple) and isinstance(v, list):
                v = tuple(v)
            # Instance attributes shadow the class defaults that __init__ reads.
            setattr(obj, k, v)
        obj.__init__()
        return obj

    def to_json(self) -> str:
        """JSON text of `to_dict()` (callables written as their qualified names)."""
        def conv(v):
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, (np.integer,)):
                return int(v)
            if isinstance(v, (np.floating,)):
                return float(v)
            if callable(v):
                return f"{getattr(v, '__module__', '?')}.{getattr(v, '__qualname__', repr(v))}"
            return v
        return json.dumps({k: conv(v) for k, v in self.to_dict().items()}, indent=2, sort_keys=True)

    def display(self) -> None:
        """Print every configuration value, one per line, as Matterport does."""
        print("\nConfigurations:")
        for a in dir(self):
            if not a.startswith("__") and not callable(getattr(self, a)):
                print("{:30} {}".format(a, getattr(self, a)))
        print("\n")

    def __repr__(self) -> str:
        return f"<{type(self).__name__} NAME={self.NAME!r} NUM_CLASSES={self.NUM_CLASSES}>"
