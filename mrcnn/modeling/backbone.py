"""ResNet backbone and Feature Pyramid Network with Matterport's layer names.

Every weighted layer keeps the name it has in Matterport's ``mask_rcnn_coco.h5``
(``conv1``, ``bn_conv1``, ``res2a_branch2a``, ``bn2a_branch2a``, ...,
``fpn_c5p5``, ``fpn_p2``) so that weights load by name, and the block outputs
keep their names (``res2c_out``, ``res4f_out`` / ``res4w_out``) so that
``keras_model.get_layer(...)`` works as in the Matterport notebooks.

Tensors are NHWC float32, images already molded (mean pixel subtracted).
"""
from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import keras
from keras import layers as KL

from .compact import small_backbone, small_backbone_shapes  # noqa: F401  (re-exported)

__all__ = [
    "BatchNorm", "identity_block", "conv_block", "resnet_graph", "fpn_graph",
    "build_backbone", "RESNET_STAGE4_BLOCKS", "small_backbone", "small_backbone_shapes",
]

# Identity blocks in stage 4 after the first (conv) block.
RESNET_STAGE4_BLOCKS = {"resnet50": 5, "resnet101": 22}


class BatchNorm(KL.BatchNormalization):
    """BatchNormalization whose training mode is fixed where it is wired.

    Matterport calls every BatchNorm as ``BatchNorm(name=...)(x, training=config.TRAIN_BN)``
    and relies on Keras 2 keeping that explicit value: ``False`` freezes the
    layer (moving statistics are used even inside ``fit``), ``None`` follows
    the learning phase. A Keras 3 functional model instead overrides the
    per-layer value with the outer call's ``training``, so this class records
    the value given at graph-construction time (or through ``fixed_training``)
    and applies it in :meth:`call`.

    Epsilon defaults to 1e-3, the Keras 2 value the h5 files were trained with.
    """

    def __init__(self, *args: Any, fixed_training: Optional[bool] = None,
                 epsilon: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(*args, epsilon=epsilon, **kwargs)
        self.fixed_training = fixed_training

    def __call__(self, inputs, *args, training=None, **kwargs):
        # A symbolic call with an explicit value is the Matterport wiring.
        if training is not None and isinstance(inputs, keras.KerasTensor):
            self.fixed_training = bool(training)
        return super().__call__(inputs, *args, training=training, **kwargs)

    def call(self, inputs, training=None, mask=None):
        if self.fixed_training is not None:
            training = self.fixed_training
        return super().call(inputs, training=training, mask=mask)

    def get_config(self) -> dict:
        config = super().get_config()
        config["fixed_training"] = self.fixed_training
        return config


def _bottleneck(x, kernel_size: int, filters: Sequence[int], conv: str, bn: str, strides,
                use_bias: bool, train_bn: Optional[bool]):
    """The 1x1 -> kxk -> 1x1 main path shared by identity and conv blocks (Matterport's names)."""
    f1, f2, f3 = filters
    x = KL.Conv2D(f1, (1, 1), strides=strides, name=conv + "2a", use_bias=use_bias)(x)
    x = BatchNorm(name=bn + "2a")(x, training=train_bn)
    x = KL.Activation("relu")(x)
    x = KL.Conv2D(f2, (kernel_size, kernel_size), padding="same", name=conv + "2b",
                  use_bias=use_bias)(x)
    x = BatchNorm(name=bn + "2b")(x, training=train_bn)
    x = KL.Activation("relu")(x)
    x = KL.Conv2D(f3, (1, 1), name=conv + "2c", use_bias=use_bias)(x)
    return BatchNorm(name=bn + "2c")(x, training=train_bn)


def identity_block(input_tensor, kernel_size: int, filters: Sequence[int], stage: int,
                   block: str, use_bias: bool = True, train_bn: Optional[bool] = True):
    """Bottleneck block whose shortcut is the input itself.

    Args:
        input_tensor: ``[B, H, W, filters[2]]``.
        kernel_size: size of the middle convolution.
        filters: channels of the 1x1, kxk and 1x1 convolutions.
        stage, block: used for the layer names ``res{stage}{block}_branch2a`` etc.
        train_bn: ``training`` value for the BatchNorm layers (see :class:`BatchNorm`).

    Returns:
        ``[B, H, W, filters[2]]``, the output of layer ``res{stage}{block}_out``.
    """
    conv = f"res{stage}{block}_branch"
    bn = f"bn{stage}{block}_branch"
    x = _bottleneck(input_tensor, kernel_size, filters, conv, bn, (1, 1), use_bias, train_bn)
    x = KL.Add()([x, input_tensor])
    return KL.Activation("relu", name=f"res{stage}{block}_out")(x)


def conv_block(input_tensor, kernel_size: int, filters: Sequence[int], stage: int,
               block: str, strides: Tuple[int, int] = (2, 2), use_bias: bool = True,
               train_bn: Optional[bool] = True):
    """Bottleneck block with a projection shortcut (``res{stage}{block}_branch1``).

    The stride sits on the first 1x1 convolution, as in the original
    Caffe ResNet that Matterport's weights come from.

    Returns:
        ``[B, ceil(H/s), ceil(W/s), filters[2]]``.
    """
    f3 = filters[2]
    conv = f"res{stage}{block}_branch"
    bn = f"bn{stage}{block}_branch"
    x = _bottleneck(input_tensor, kernel_size, filters, conv, bn, strides, use_bias, train_bn)
    shortcut = KL.Conv2D(f3, (1, 1), strides=strides, name=conv + "1",
                         use_bias=use_bias)(input_tensor)
    shortcut = BatchNorm(name=bn + "1")(shortcut, training=train_bn)
    x = KL.Add()([x, shortcut])
    return KL.Activation("relu", name=f"res{stage}{block}_out")(x)


def resnet_graph(input_image, architecture: str, stage5: bool = False,
                 train_bn: Optional[bool] = True) -> list:
    """ResNet-50/101 feature extractor (Matterport's ``resnet_graph``).

    Args:
        input_image: ``[B, H, W, C]`` molded image tensor.
        architecture: ``"resnet50"`` or ``"resnet101"``.
        stage5: build stage 5 (C5); when False C5 is None.
        train_bn: ``training`` value of every BatchNorm.

    Returns:
        ``[C1, C2, C3, C4, C5]`` with strides 4 (C1 after max-pool), 4, 8, 16, 32.
    """
    if architecture not in RESNET_STAGE4_BLOCKS:
        raise ValueError(f"architecture must be one of {sorted(RESNET_STAGE4_BLOCKS)}, "
                         f"got {architecture!r}")
    x = KL.ZeroPadding2D((3, 3))(input_image)
    x = KL.Conv2D(64, (7, 7), strides=(2, 2), name="conv1", use_bias=True)(x)
    x = BatchNorm(name="bn_conv1")(x, training=train_bn)
    x = KL.Activation("relu")(x)
    c1 = x = KL.MaxPooling2D((3, 3), strides=(2, 2), padding="same")(x)
    # Stage 2 keeps the resolution: the max-pool already halved it.
    x = conv_block(x, 3, [64, 64, 256], stage=2, block="a", strides=(1, 1), train_bn=train_bn)
    x = identity_block(x, 3, [64, 64, 256], stage=2, block="b", train_bn=train_bn)
    c2 = x = identity_block(x, 3, [64, 64, 256], stage=2, block="c", train_bn=train_bn)
    x = conv_block(x, 3, [128, 128, 512], stage=3, block="a", train_bn=train_bn)
    for block in "bc":
        x = identity_block(x, 3, [128, 128, 512], stage=3, block=block, train_bn=train_bn)
    c3 = x = identity_block(x, 3, [128, 128, 512], stage=3, block="d", train_bn=train_bn)
    x = conv_block(x, 3, [256, 256, 1024], stage=4, block="a", train_bn=train_bn)
    for i in range(RESNET_STAGE4_BLOCKS[architecture]):
        # Blocks b, c, ... as in the Caffe model (w is the last of resnet101).
        x = identity_block(x, 3, [256, 256, 1024], stage=4, block=chr(98 + i), train_bn=train_bn)
    c4 = x
    c5 = None
    if stage5:
        x = conv_block(x, 3, [512, 512, 2048], stage=5, block="a", train_bn=train_bn)
        x = identity_block(x, 3, [512, 512, 2048], stage=5, block="b", train_bn=train_bn)
        c5 = identity_block(x, 3, [512, 512, 2048], stage=5, block="c", train_bn=train_bn)
    return [c1, c2, c3, c4, c5]


def fpn_graph(c2, c3, c4, c5, pyramid_size: int = 256) -> list:
    """Top-down Feature Pyramid Network (layers ``fpn_*``).

    Lateral 1x1 convolutions, nearest 2x upsampling and addition, then a 3x3
    smoothing convolution per level; P6 is a stride-2 subsampling of P5 used
    only by the RPN.

    Returns:
        ``[P2, P3, P4, P5, P6]``, each ``[B, h_i, w_i, pyramid_size]`` with strides
        4, 8, 16, 32, 64.
    """
    p5 = KL.Conv2D(pyramid_size, (1, 1), name="fpn_c5p5")(c5)
    p4 = KL.Add(name="fpn_p4add")([
        KL.UpSampling2D(size=(2, 2), name="fpn_p5upsampled")(p5),
        KL.Conv2D(pyramid_size, (1, 1), name="fpn_c4p4")(c4)])
    p3 = KL.Add(name="fpn_p3add")([
        KL.UpSampling2D(size=(2, 2), name="fpn_p4upsampled")(p4),
        KL.Conv2D(pyramid_size, (1, 1), name="fpn_c3p3")(c3)])
    p2 = KL.Add(name="fpn_p2add")([
        KL.UpSampling2D(size=(2, 2), name="fpn_p3upsampled")(p3),
        KL.Conv2D(pyramid_size, (1, 1), name="fpn_c2p2")(c2)])
    p2 = KL.Conv2D(pyramid_size, (3, 3), padding="same", name="fpn_p2")(p2)
    p3 = KL.Conv2D(pyramid_size, (3, 3), padding="same", name="fpn_p3")(p3)
    p4 = KL.Conv2D(pyramid_size, (3, 3), padding="same", name="fpn_p4")(p4)
    p5 = KL.Conv2D(pyramid_size, (3, 3), padding="same", name="fpn_p5")(p5)
    p6 = KL.MaxPooling2D(pool_size=(1, 1), strides=2, name="fpn_p6")(p5)
    return [p2, p3, p4, p5, p6]


def build_backbone(input_image, config, train_bn: Optional[bool]) -> list:
    """Backbone + FPN for a config: ``[P2, P3, P4, P5, P6]``.

    ``config.BACKBONE`` is ``"resnet50"``, ``"resnet101"`` or a callable
    ``f(input_image, stage5=True, train_bn=...) -> [C1, C2, C3, C4, C5]`` (then
    ``config.COMPUTE_BACKBONE_SHAPE`` gives the feature-map sizes).
    """
    if callable(config.BACKBONE):
        fn = config.BACKBONE
        # A plain function set as a class attribute arrives bound to the config.
        if getattr(fn, "__self__", None) is config:
            fn = fn.__func__
        feats = fn(input_image, stage5=True, train_bn=train_bn)
    else:
        feats = resnet_graph(input_image, config.BACKBONE, stage5=True, train_bn=train_bn)
    if len(feats) != 5:
        raise ValueError(f"BACKBONE must return [C1, C2, C3, C4, C5], got {len(feats)} tensors")
    _, c2, c3, c4, c5 = feats
    return fpn_graph(c2, c3, c4, c5, config.TOP_DOWN_PYRAMID_SIZE)
