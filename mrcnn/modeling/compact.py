"""A compact backbone for training from scratch on a CPU (not in Matterport).

Importing this module does not import TensorFlow, so a Config can name these functions
(``BACKBONE = staticmethod(small_backbone)``) and a ``--help`` stays instant.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np

__all__ = ["small_backbone", "small_backbone_shapes", "CompactModel"]


def small_backbone(input_image, stage5: bool = True, train_bn: Optional[bool] = None,
                   widths: Sequence[int] = (16, 32, 64, 96, 128)) -> list:
    """A compact 5-stage conv net for training from scratch on a CPU (not in Matterport).

    Use it through Matterport's callable-BACKBONE hook::

        BACKBONE = staticmethod(small_backbone)
        COMPUTE_BACKBONE_SHAPE = staticmethod(small_backbone_shapes)

    Each stage is a stride-2 3x3 conv and a 3x3 conv, each with BatchNorm (trained with
    batch statistics whatever TRAIN_BN says: this net has no pretrained statistics to keep)
    and ReLU. Returns ``[C1, C2, C3, C4, C5]`` at strides 2, 4, 8, 16, 32 with ``widths``
    channels, so the FPN, RPN and heads after it are Matterport's. A ResNet-50 needs hours
    of CPU training from scratch; on simple data (shapes, cells) this converges in minutes.
    Its layers are named ``small_c{1..5}_{conv,bn}{1,2}``; no Matterport weights fit it.
    """
    from keras import layers as KL  # lazy: configs import this module without TensorFlow

    if len(widths) != 5:
        raise ValueError(f"small_backbone needs 5 stage widths, got {widths!r}")
    x = input_image
    stages = []
    for i, filters in enumerate(widths, start=1):
        name = f"small_c{i}"
        for j, stride in ((1, 2), (2, 1)):
            x = KL.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False,
                          name=f"{name}_conv{j}")(x)
            x = KL.BatchNormalization(name=f"{name}_bn{j}")(x)
            x = KL.Activation("relu")(x)
        stages.append(x)
    return stages


def small_backbone_shapes(image_shape) -> np.ndarray:
    """Feature-map sizes ``[[h, w]] * 5`` at strides 4..64 for :func:`small_backbone`.

    ``image_shape`` is ``(H, W[, C])`` in pixels; sizes round up as "same" padding does.
    """
    return np.array([[int(math.ceil(image_shape[0] / s)), int(math.ceil(image_shape[1] / s))]
                     for s in (4, 8, 16, 32, 64)])


class CompactModel:
    """Config mixin: the compact model for training from scratch on a CPU.

    Put it before the Config base, ``class MyConfig(CompactModel, Config)``, and override
    as usual. It sets :func:`small_backbone`, 64-channel FPN, RPN conv and mask head (the
    two together cost ~20x this backbone at Matterport's 512 and 256), a 256-wide
    classifier and fewer proposals and ROIs. Used by the shapes demo and the LISC sample.
    """
    # staticmethod: a plain function as a class attribute would become a bound method.
    BACKBONE = staticmethod(small_backbone)
    COMPUTE_BACKBONE_SHAPE = staticmethod(small_backbone_shapes)
    TOP_DOWN_PYRAMID_SIZE = 64
    RPN_CONV_CHANNELS = 64
    MASK_HEAD_CHANNELS = 64
    FPN_CLASSIF_FC_LAYERS_SIZE = 256
    PRE_NMS_LIMIT = 1000
    POST_NMS_ROIS_TRAINING = 300
    POST_NMS_ROIS_INFERENCE = 100
    RPN_TRAIN_ANCHORS_PER_IMAGE = 128
    TRAIN_ROIS_PER_IMAGE = 32
