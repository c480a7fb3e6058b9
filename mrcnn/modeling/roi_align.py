"""PyramidROIAlign: crop-and-resize each ROI from the FPN level that matches its size.

Written in ``keras.ops`` with static shapes only, so the layer compiles under
XLA (``tf.image.crop_and_resize`` has no XLA kernel) and runs on other Keras
backends. :func:`crop_and_resize` reproduces ``tf.image.crop_and_resize``
(bilinear, extrapolation value 0) sample for sample: the sample positions are
computed with the TF kernel's float32 operation order, so the results are
bit-identical on the fixtures, including the image's bottom/right edge where a
rounding error decides between the border value and 0.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import keras
from keras import ops

__all__ = ["PyramidROIAlign", "roi_pyramid_level", "crop_and_resize", "bilinear_crop"]

# FPN paper, eq. 1: a 224x224 ROI (ImageNet size) maps to level 4 (P4).
_CANONICAL_SIZE = 224.0
_CANONICAL_LEVEL = 4.0
_MIN_LEVEL, _MAX_LEVEL = 2, 5


def roi_pyramid_level(boxes, image_shape):
    """The pyramid level (2..5) each ROI is pooled from.

    Args:
        boxes: ``[B, N, 4]`` normalised ``(y1, x1, y2, x2)``.
        image_shape: ``[B, 3]`` (or ``[B, 2]``) molded image shapes in pixels.

    Returns:
        ``[B, N]`` int32 level ``clip(4 + round(log2(sqrt(h*w) / (224 / sqrt(H*W)))), 2, 5)``
        with ``h, w`` normalised; zero-area and degenerate boxes get level 2.
    """
    boxes = ops.cast(boxes, "float32")
    height = boxes[..., 2] - boxes[..., 0]
    width = boxes[..., 3] - boxes[..., 1]
    image_shape = ops.cast(image_shape, "float32")
    image_area = ops.expand_dims(image_shape[:, 0] * image_shape[:, 1], 1)
    ratio = ops.sqrt(height * width) / (_CANONICAL_SIZE / ops.sqrt(image_area))
    # log(x) / log(2), Matterport's log2 (keras.ops.log2 may round differently).
    level = ops.log(ratio) / ops.log(ops.convert_to_tensor(2.0, "float32"))
    level = _CANONICAL_LEVEL + ops.round(level)
    # Padding rows give log2(0) = -inf and inverted boxes NaN; both go to the
    # finest level, where Matterport's int cast also sent them.
    level = ops.where(ops.isnan(level), float(_MIN_LEVEL), level)
    level = ops.clip(level, float(_MIN_LEVEL), float(_MAX_LEVEL))
    return ops.cast(level, "int32")


def _float64_available() -> bool:
    """False on JAX unless ``jax_enable_x64`` is set (float64 casts then stay float32)."""
    if keras.backend.backend() != "jax":
        return True
    import jax
    return bool(jax.config.read("jax_enable_x64"))


def _runtime_zero(x):
    """0.0 (shaped like ``x``) that the compiler cannot prove to be 0 (NaN stays NaN-free:
    only values above 3e38 would pass, and those are not box coordinates)."""
    return ops.where(x > 3e38, x, 0.0)


def _exact(op, a, b):
    """``op(a, b)`` rounded to float32 exactly as one float32 operation would be.

    The operands go through float64, where a product or quotient of two float32
    values rounds to the same float32 as the float32 operation (and a sum is
    exact), and back. Two reasons: XLA replaces a division by a constant with a
    multiplication by its reciprocal, and LLVM contracts ``a * b + c`` into an
    FMA; both move sample positions by an ulp, which changes crops on steep maps
    and decides whether a box ending at 1 samples the border or 0.

    JAX has no float64 by default. There the operation runs in float32 with
    a value the compiler cannot fold to 0 added where it matters: to a
    product (if LLVM contracts that into an FMA, ``fma(a, b, 0)`` is the
    correctly rounded product, and the product can no longer be contracted
    into the next add) and to a divisor (XLA turns a division by a constant
    into a multiplication by its reciprocal; a true division is exact).
    """
    if _float64_available():
        return ops.cast(op(ops.cast(a, "float64"), ops.cast(b, "float64")), "float32")
    a = ops.cast(a, "float32")
    if op is ops.divide:
        return ops.divide(a, ops.cast(b, "float32") + _runtime_zero(a))
    out = op(a, ops.cast(b, "float32"))
    if op is ops.multiply:
        out = out + _runtime_zero(out)
    return out


def _sample_axis(lo, hi, size, crop: int):
    """crop_and_resize's sample coordinates along one axis.

    Args:
        lo, hi: ``[R]`` float32 normalised box edges (y1, y2 or x1, x2).
        size: ``[R]`` float32 map size along the axis (H or W).
        crop: output cells along the axis.

    Returns:
        ``(first [R, crop] int32, second [R, crop] int32, lerp [R, crop] float32,
        inside [R, crop] bool)``: the two neighbouring rows, the interpolation
        weight of the second, and whether the sample lies in ``[0, size-1]``
        (outside samples take the value 0).
    """
    last = size - 1.0
    lo, hi, last = lo[:, None], hi[:, None], last[:, None]
    if crop > 1:
        # The TF kernel, one float32 rounding per operation:
        # scale = (hi - lo) * (H - 1) / (c - 1); in = lo * (H - 1) + i * scale.
        scale = _exact(ops.divide, _exact(ops.multiply, hi - lo, last), float(crop - 1))
        steps = ops.cast(ops.arange(crop), "float32")[None, :]
        pos = _exact(ops.add, _exact(ops.multiply, lo, last), _exact(ops.multiply, steps, scale))
    else:
        middle = _exact(ops.multiply, 0.5 * (lo + hi), last)
        pos = ops.broadcast_to(middle, (ops.shape(lo)[0], 1))
    inside = ops.logical_and(pos >= 0.0, pos <= last)
    # Outside (or NaN) samples are masked; any in-range position keeps the
    # gather indices valid.
    pos = ops.where(inside, pos, 0.0)
    first = ops.floor(pos)
    second = ops.ceil(pos)
    lerp = pos - first
    return ops.cast(first, "int32"), ops.cast(second, "int32"), lerp, inside


def bilinear_crop(flat_features, base, height, width, boxes, crop_size: Tuple[int, int]):
    """Bilinear crops of maps stored as rows of one flat ``[M, C]`` tensor.

    Each box ``r`` samples the ``height[r] x width[r]`` map whose pixel
    ``(y, x)`` is row ``base[r] + y * width[r] + x`` of ``flat_features``, at
    the positions of ``tf.image.crop_and_resize`` (one sample per output cell,
    0 outside the map). All boxes are gathered with one ``take``: shapes are
    static, whatever map each box reads.

    Args:
        flat_features: ``[M, C]`` feature rows (any float dtype).
        base: ``[R]`` int32 row of each box's map pixel (0, 0).
        height, width: ``[R]`` int32 size of each box's map.
        boxes: ``[R, 4]`` normalised ``(y1, x1, y2, x2)`` in that map's frame.
        crop_size: ``(crop_h, crop_w)``.

    Returns:
        ``[R, crop_h, crop_w, C]`` float32.
    """
    crop_h, crop_w = int(crop_size[0]), int(crop_size[1])
    boxes = ops.cast(boxes, "float32")
    y_top, y_bottom, y_lerp, y_in = _sample_axis(boxes[:, 0], boxes[:, 2],
                                                 ops.cast(height, "float32"), crop_h)
    x_left, x_right, x_lerp, x_in = _sample_axis(boxes[:, 1], boxes[:, 3],
                                                 ops.cast(width, "float32"), crop_w)
    base = ops.cast(base, "int32")[:, None, None]
    width = ops.cast(width, "int32")[:, None, None]
    rows = [base + y[:, :, None] * width for y in (y_top, y_bottom)]         # [R, ch, 1]
    corners = [r + x[:, None, :] for r in rows for x in (x_left, x_right)]   # 4 x [R, ch, cw]
    index = ops.reshape(ops.stack(corners, axis=0), (-1,))
    values = ops.cast(ops.take(flat_features, index, axis=0), "float32")
    channels = ops.shape(flat_features)[-1]
    values = ops.reshape(values, (4, -1, crop_h, crop_w, channels))
    # unstack rather than values[i]: the gradient of four strided slices is four
    # full-size zero tensors summed (StridedSliceGrad took ~70 ms of a 128 px
    # training step on TF); unstack's is one stack.
    top_left, top_right, bottom_left, bottom_right = ops.unstack(values, 4, axis=0)
    x_lerp = x_lerp[:, None, :, None]
    y_lerp = y_lerp[:, :, None, None]
    # The kernel's interpolation order: along x first, then y.
    top = top_left + (top_right - top_left) * x_lerp
    bottom = bottom_left + (bottom_right - bottom_left) * x_lerp
    crops = top + (bottom - top) * y_lerp
    inside = ops.logical_and(y_in[:, :, None], x_in[:, None, :])[..., None]
    return ops.where(inside, crops, 0.0)


def crop_and_resize(image, boxes, box_indices, crop_size: Tuple[int, int]):
    """``tf.image.crop_and_resize(image, boxes, box_indices, crop_size)`` (bilinear, 0
    extrapolation) in ``keras.ops``.

    Args:
        image: ``[N, H, W, C]``.
        boxes: ``[R, 4]`` normalised ``(y1, x1, y2, x2)``; ``y * (H - 1)`` is the pixel row.
        box_indices: ``[R]`` int, image of each box.
        crop_size: ``(crop_h, crop_w)``.

    Returns:
        ``[R, crop_h, crop_w, C]`` float32.
    """
    shape = ops.shape(image)
    height, width = shape[1], shape[2]
    flat = ops.reshape(image, (-1, shape[3]))
    box_indices = ops.cast(box_indices, "int32")
    ones = ops.ones_like(box_indices)
    return bilinear_crop(flat, box_indices * (height * width), ones * height, ones * width,
                         boxes, crop_size)


@keras.saving.register_keras_serializable(package="mrcnn")
class PyramidROIAlign(keras.layers.Layer):
    """ROIAlign over a feature pyramid (Matterport's ``PyramidROIAlign``).

    Each box is assigned a level by :func:`roi_pyramid_level` and sampled from
    that level as ``tf.image.crop_and_resize`` would (bilinear, one sample per
    output cell, 0 outside the map). The four levels are flattened into one
    ``[B * sum(h_l * w_l), C]`` tensor and every box reads its level through
    its row offset, so there is no per-level selection of boxes and the graph
    has static shapes (XLA compiles it). Output rows are in input order.

    Args:
        pool_shape: ``(height, width)`` of the pooled maps, e.g. ``(7, 7)``.

    Call arguments:
        inputs: ``[boxes [B, N, 4] normalised, image_meta [B, META], P2, P3, P4, P5]``,
            each ``P*`` ``[B, h, w, C]`` (float32, float16 or bfloat16).

    Returns:
        ``[B, N, pool_h, pool_w, C]`` float32.
    """

    def __init__(self, pool_shape: Sequence[int], **kwargs) -> None:
        # Box arithmetic stays float32; the output is float32 as crop_and_resize's was.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.pool_shape = tuple(int(v) for v in pool_shape)
        if len(self.pool_shape) != 2 or min(self.pool_shape) < 1:
            raise ValueError(f"{self.name}: pool_shape must be two positive ints, got {pool_shape!r}")

    def call(self, inputs):
        boxes, image_meta = inputs[0], inputs[1]
        feature_maps = inputs[2:]
        if len(feature_maps) != _MAX_LEVEL - _MIN_LEVEL + 1:
            raise ValueError(f"{self.name}: expected feature maps P2..P5 (4 tensors), "
                             f"got {len(feature_maps)}")
        # Boxes are inputs to the crop, not something to learn through here.
        boxes = ops.stop_gradient(ops.cast(boxes, "float32"))
        # image_shape field of the meta (see parse_image_meta_graph).
        roi_level = roi_pyramid_level(boxes, image_meta[:, 4:7]) - _MIN_LEVEL  # [B, N]

        shapes = [ops.shape(p) for p in feature_maps]
        heights = ops.stack([ops.cast(s[1], "int32") for s in shapes])
        widths = ops.stack([ops.cast(s[2], "int32") for s in shapes])
        sizes = heights * widths
        offsets = ops.cumsum(sizes) - sizes
        total = ops.sum(sizes)
        channels = shapes[0][3]
        flat = ops.concatenate([ops.reshape(p, (shapes[0][0], -1, channels)) for p in feature_maps],
                               axis=1)
        flat = ops.reshape(flat, (-1, channels))                     # [B * total, C]

        batch, num_rois = ops.shape(boxes)[0], ops.shape(boxes)[1]
        image_ix = ops.arange(batch, dtype="int32")[:, None] * ops.ones_like(roi_level)
        base = image_ix * total + ops.take(offsets, roi_level)
        crops = bilinear_crop(flat, ops.reshape(base, (-1,)),
                              ops.reshape(ops.take(heights, roi_level), (-1,)),
                              ops.reshape(ops.take(widths, roi_level), (-1,)),
                              ops.reshape(boxes, (-1, 4)), self.pool_shape)
        return ops.reshape(crops, (batch, num_rois) + self.pool_shape + (channels,))

    def compute_output_shape(self, input_shape):
        boxes_shape, feature_shape = input_shape[0], input_shape[2]
        return (boxes_shape[0], boxes_shape[1]) + self.pool_shape + (feature_shape[-1],)

    def get_config(self) -> dict:
        base = super().get_config()
        base.update({"pool_shape": list(self.pool_shape)})
        return base
