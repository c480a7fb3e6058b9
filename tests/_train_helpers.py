"""A tiny, fast training setup shared by the training-engine tests (runnable as a script).

The backbone is a few plain convs through Matterport's callable-BACKBONE hook (no
BatchNorm, so a batch split across replicas computes exactly what one replica does);
everything after it is the real Mask R-CNN graph.
"""
from __future__ import annotations

import os
import sys


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from mrcnn.modeling.compact import small_backbone_shapes as plain_backbone_shapes  # noqa: E402
from samples.shapes.shapes import ShapesConfig, make_datasets  # noqa: E402


def plain_backbone(input_image, stage5=True, train_bn=None):
    from keras import layers as KL
    x = input_image
    outs = []
    for i, filters in enumerate((8, 16, 16, 32, 32), 1):
        x = KL.Conv2D(filters, 3, strides=2, padding="same", activation="relu", name=f"tiny_c{i}")(x)
        outs.append(x)
    return outs


class TinyConfig(ShapesConfig):
    NAME = "tiny"
    IMAGES_PER_GPU = 2
    BACKBONE = staticmethod(plain_backbone)
    COMPUTE_BACKBONE_SHAPE = staticmethod(plain_backbone_shapes)
    TOP_DOWN_PYRAMID_SIZE = 16
    FPN_CLASSIF_FC_LAYERS_SIZE = 32
    PRE_NMS_LIMIT = 300
    POST_NMS_ROIS_TRAINING = 64
    POST_NMS_ROIS_INFERENCE = 32
    RPN_TRAIN_ANCHORS_PER_IMAGE = 64
    TRAIN_ROIS_PER_IMAGE = 16
    MASK_POOL_SIZE = 7
    MASK_SHAPE = [14, 14]
    MAX_GT_INSTANCES = 5
    DETECTION_MAX_INSTANCES = 5
    STEPS_PER_EPOCH = 2
    VALIDATION_STEPS = 1


def tiny_datasets(n_train: int = 8, n_val: int = 2, seed: int = 0):
    return make_datasets(n_train, n_val, size=128, seed=seed)


HEADS_WATCH = ("tiny_c1", "tiny_c5", "fpn_c5p5", "rpn_model", "mrcnn_class_logits")


def layer_weights(model, names=HEADS_WATCH) -> dict:
    """Copies of the weights of the named layers (inner layer of a TimeDistributed wrapper)."""
    import numpy as np
    return {layer.name: [np.array(w, copy=True) for w in getattr(layer, "layer", layer).get_weights()]
            for layer in model.keras_model.layers if layer.name in names}


def assert_only_heads_trained(before: dict, after: dict) -> None:
    """The "heads" preset: the tiny backbone unchanged, FPN/RPN/classifier changed. (The mask and
    box heads only learn once proposals overlap objects: not after a few random steps.)"""
    import numpy as np
    for name in ("tiny_c1", "tiny_c5"):
        assert all(np.array_equal(a, b) for a, b in zip(before[name], after[name])), name
    for name in ("fpn_c5p5", "rpn_model", "mrcnn_class_logits"):
        assert any(not np.array_equal(a, b) for a, b in zip(before[name], after[name])), name
