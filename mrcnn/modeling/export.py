"""Export an inference model as a TensorFlow SavedModel for serving.

The serving function ``serve`` takes one uint8 image ``[H, W, C]`` of any
size (C = 3 RGB; for 3-channel models also 1 grey, 2 grey+alpha, 4 RGBA, converted as
``Dataset.load_image`` does; an empty image or 5+ channels fail with an
``InvalidArgumentError`` saying so). 3-channel models have two more endpoints with the
same outputs for the other dtypes ``detect`` takes: ``serve_uint16`` (16-bit images,
min-max stretched) and ``serve_float`` (float32: values in 0..1 are scaled by 255, values
in 0..255 kept as levels, others stretched; NaN/inf refused), converted by the rules of
:func:`mrcnn.data.dataset.to_rgb_uint8` (tests check they agree). Each does everything
``MaskRCNN.detect`` does, inside the graph:
``square`` resizing exactly as ``resize_image`` (bilinear weights of
skimage's ``order=1`` resize, truncation to uint8, centred zero padding),
mean subtraction, image meta, anchors, the network, and unmolding to pixel
boxes of the original image and full-size boolean masks. It returns

* ``rois`` ``[N, 4]`` int32 ``(y1, x1, y2, x2)``, y2/x2 exclusive,
* ``class_ids`` ``[N]`` int32, ``scores`` ``[N]`` float32,
* ``masks`` ``[H, W, N]`` bool.

Reload with ``tf.saved_model.load(path).serve(image)``; no mrcnn import needed.
"""
from __future__ import annotations

import os

import keras
import numpy as np
import tensorflow as tf

__all__ = ["export_saved_model", "serving_fn", "serving_fns"]


def _interp_weights(out_size, in_size):
    """``[out, in]`` float64 bilinear weights (skimage ``order=1``, ``mode="constant"``).

    Output pixel i samples input coordinate ``(i + 0.5) * in / out - 0.5``;
    neighbours outside ``[0, in - 1]`` contribute the constant 0.
    """
    out_f = tf.cast(out_size, tf.float64)
    in_f = tf.cast(in_size, tf.float64)
    coords = (tf.range(out_f) + 0.5) * (in_f / out_f) - 0.5
    lo = tf.floor(coords)
    frac = coords - lo
    lo = tf.cast(lo, tf.int32)
    depth = tf.cast(in_size, tf.int32)
    return (tf.one_hot(lo, depth, dtype=tf.float64) * (1.0 - frac)[:, None]
            + tf.one_hot(lo + 1, depth, dtype=tf.float64) * frac[:, None])


def _resize_square(image: tf.Tensor, min_dim: int, max_dim: int, min_scale: float):
    """``resize_image(mode="square")`` in TF: ``(molded uint8-valued float64, window, scale)``."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    hf, wf = tf.cast(h, tf.float64), tf.cast(w, tf.float64)
    scale = tf.constant(1.0, tf.float64)
    if min_dim:
        scale = tf.maximum(scale, min_dim / tf.minimum(hf, wf))
    if min_scale:
        scale = tf.maximum(scale, tf.constant(float(min_scale), tf.float64))
    image_max = tf.maximum(hf, wf)
    scale = tf.where(tf.round(image_max * scale) > max_dim, max_dim / image_max, scale)
    new_h = tf.cast(tf.round(hf * scale), tf.int32)
    new_w = tf.cast(tf.round(wf * scale), tf.int32)
    pixels = tf.cast(image, tf.float64)

    def resized():
        wy = _interp_weights(new_h, h)
        wx = _interp_weights(new_w, w)
        out = tf.einsum("oh,hwc->owc", wy, pixels)
        out = tf.einsum("pw,owc->opc", wx, out)
        # skimage clips to the input's global range but keeps outputs that are
        # exactly the border value 0; then astype truncates.
        low, high = tf.reduce_min(pixels), tf.reduce_max(pixels)
        keep_zero = tf.equal(out, 0.0) & (low > 0.0)
        out = tf.where(keep_zero, tf.zeros_like(out), tf.clip_by_value(out, low, high))
        return tf.cast(tf.cast(out, tf.int32), tf.float64)

    pixels = tf.cond(tf.equal(scale, 1.0), lambda: pixels, resized)
    top = (max_dim - new_h) // 2
    left = (max_dim - new_w) // 2
    pixels = tf.pad(pixels, [[top, max_dim - new_h - top], [left, max_dim - new_w - left], [0, 0]])
    pixels = tf.ensure_shape(pixels, [max_dim, max_dim, None])
    window = tf.stack([top, left, new_h + top, new_w + left])
    return pixels, window, scale


def _paste_masks(masks: tf.Tensor, boxes: tf.Tensor, height, width) -> tf.Tensor:
    """``unmold_masks`` in TF: ``[N, h, w]`` soft masks into ``[H, W, N]`` bool."""
    mh, mw = tf.shape(masks)[1], tf.shape(masks)[2]

    def axis_weights(start, stop, size, in_size):
        # Row r of the image samples mask coordinate (r - start + 0.5) * in / (stop - start) - 0.5.
        length = tf.cast(stop - start, tf.float64)
        r = tf.cast(tf.range(size), tf.float64) - tf.cast(start, tf.float64)
        coords = (r + 0.5) * (tf.cast(in_size, tf.float64) / length) - 0.5
        lo = tf.floor(coords)
        frac = coords - lo
        lo = tf.cast(lo, tf.int32)
        inside = tf.cast((r >= 0) & (r < length), tf.float64)[:, None]
        return inside * (tf.one_hot(lo, in_size, dtype=tf.float64) * (1.0 - frac)[:, None]
                         + tf.one_hot(lo + 1, in_size, dtype=tf.float64) * frac[:, None])

    def one(args):
        mask, box = args
        wy = axis_weights(box[0], box[2], height, mh)
        wx = axis_weights(box[1], box[3], width, mw)
        full = tf.matmul(tf.matmul(wy, tf.cast(mask, tf.float64)), wx, transpose_b=True)
        return full >= 0.5

    full = tf.map_fn(one, (masks, boxes), fn_output_signature=tf.TensorSpec([None, None], tf.bool))
    full = tf.reshape(full, [tf.shape(boxes)[0], height, width])
    return tf.transpose(full, [1, 2, 0])


def _checked_rgb(image: tf.Tensor, channels: int) -> tf.Tensor:
    """Refuse empty images; for 3-channel models turn grey/grey+alpha/RGBA into 3 channels.

    The channel rules of :func:`mrcnn.data.dataset.to_rgb_uint8` (alpha dropped, grey
    repeated), for any dtype; the value conversion is :func:`_to_uint8_levels`.
    """
    shape = tf.shape(image)
    checks = [tf.debugging.assert_positive(
        shape[:2], message="image is empty: need height and width >= 1")]
    if channels != 3:
        with tf.control_dependencies(checks):
            return tf.identity(image)
    checks.append(tf.debugging.assert_less_equal(
        shape[2], 4, message="image must have 1 to 4 channels (grey, grey+alpha, RGB, RGBA)"))
    checks.append(tf.debugging.assert_positive(shape[2], message="image has 0 channels"))
    with tf.control_dependencies(checks):
        image = tf.identity(image)
    grey = tf.concat([image[:, :, :1]] * 3, axis=2)  # Tile has no uint16 kernel
    rgb = tf.cond(shape[2] >= 3, lambda: image[:, :, :3], lambda: grey)
    return tf.ensure_shape(rgb, [None, None, 3])


def _to_uint8_levels(image: tf.Tensor) -> tf.Tensor:
    """``to_rgb_uint8``'s value rules in TF, for uint16 and float images (channels already chosen).

    Returns uint8-valued float64 ``[H, W, 3]``. Floats with all values in 0..1 (and not all 0)
    are scaled by 255, floats in 0..255 are rounded, everything else (every uint16 image)
    is min-max stretched over the whole image; a constant image becomes 0. Rounding is
    half-to-even, as NumPy's. Non-finite float values fail with InvalidArgumentError.
    """
    is_float = image.dtype.is_floating
    f = tf.cast(image, tf.float64)
    if is_float:
        f = tf.debugging.assert_all_finite(f, "image has non-finite values (NaN or inf)")
    lo, hi = tf.reduce_min(f), tf.reduce_max(f)
    stretched = tf.clip_by_value(tf.round((f / 2 - lo / 2) * (255.0 / (hi / 2 - lo / 2))), 0.0, 255.0)
    out = tf.where(hi <= lo, tf.zeros_like(f), stretched)
    if is_float:
        out = tf.where((lo >= 0.0) & (hi <= 255.0), tf.round(f), out)
        out = tf.where((lo >= 0.0) & (hi <= 1.0) & (hi > 0.0), tf.round(f * 255.0), out)
    return out


def serving_fns(model) -> dict:
    """``{endpoint name: tf.function}`` for a MaskRCNN inference model (see module doc)."""
    config = model.config
    if config.IMAGE_RESIZE_MODE != "square":
        raise ValueError(f"export supports IMAGE_RESIZE_MODE='square' (fixed network input), "
                         f"got {config.IMAGE_RESIZE_MODE!r}")
    if model.mode != "inference":
        raise ValueError("export needs a model built in 'inference' mode")
    keras_model = model.keras_model
    max_dim = int(config.IMAGE_MAX_DIM)
    channels = int(config.IMAGE_CHANNEL_COUNT)
    anchors = tf.constant(model.get_anchors(config.IMAGE_SHAPE)[np.newaxis], tf.float32)
    mean_pixel = tf.constant(np.asarray(config.MEAN_PIXEL, np.float64))
    num_classes = int(config.NUM_CLASSES)

    def detect_one(image, shape):
        """The network and unmolding for one uint8-valued image ``[H, W, C]`` (any dtype)."""
        height, width = shape[0], shape[1]
        pixels, window, scale = _resize_square(image, config.IMAGE_MIN_DIM, max_dim,
                                               config.IMAGE_MIN_SCALE)
        molded = tf.cast(pixels - mean_pixel, tf.float32)[tf.newaxis]
        meta = tf.concat([
            tf.zeros([1], tf.float64), tf.cast(shape, tf.float64),
            tf.constant([max_dim, max_dim, channels], tf.float64), tf.cast(window, tf.float64),
            scale[tf.newaxis], tf.zeros([num_classes], tf.float64)], axis=0)
        meta = tf.cast(meta, tf.float32)[tf.newaxis]
        outputs = keras_model([molded, meta, anchors], training=False)
        detections, mrcnn_mask = outputs[0][0], outputs[3][0]

        # Detections stop at the first zero class id (zero padding).
        is_pad = tf.equal(detections[:, 4], 0)
        n = tf.cond(tf.reduce_any(is_pad),
                    lambda: tf.cast(tf.argmax(tf.cast(is_pad, tf.int32)), tf.int32),
                    lambda: tf.shape(detections)[0])
        boxes = detections[:n, :4]
        class_ids = tf.cast(detections[:n, 4], tf.int32)
        scores = detections[:n, 5]
        masks = tf.gather(tf.transpose(mrcnn_mask[:n], [0, 3, 1, 2]), class_ids, batch_dims=1)

        # Molded normalised boxes -> original pixels (norm_boxes / denorm_boxes).
        norm_scale = tf.constant([max_dim - 1, max_dim - 1, max_dim - 1, max_dim - 1], tf.float64)
        win = tf.cast((tf.cast(window, tf.float64) - [0.0, 0.0, 1.0, 1.0]) / norm_scale, tf.float32)
        shift = tf.stack([win[0], win[1], win[0], win[1]])
        size = tf.stack([win[2] - win[0], win[3] - win[1], win[2] - win[0], win[3] - win[1]])
        boxes = (boxes - shift) / size
        hw = tf.cast(tf.stack([height - 1, width - 1, height - 1, width - 1]), tf.float64)
        boxes = tf.cast(tf.round(tf.cast(boxes, tf.float64) * hw + [0.0, 0.0, 1.0, 1.0]), tf.int32)
        keep = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) > 0
        boxes = tf.boolean_mask(boxes, keep)
        class_ids = tf.boolean_mask(class_ids, keep)
        scores = tf.boolean_mask(scores, keep)
        masks = tf.boolean_mask(masks, keep)
        full_masks = _paste_masks(masks, boxes, height, width)
        return {"rois": boxes, "class_ids": class_ids, "scores": scores, "masks": full_masks}

    spec_channels = None if channels == 3 else channels

    @tf.function(input_signature=[tf.TensorSpec([None, None, spec_channels], tf.uint8, name="image")])
    def serve(image):
        image = _checked_rgb(image, channels)
        return detect_one(image, tf.shape(image))

    fns = {"serve": serve}
    if channels == 3:
        def converted(dtype):
            @tf.function(input_signature=[tf.TensorSpec([None, None, None], dtype, name="image")])
            def serve_converted(image):
                image = _to_uint8_levels(_checked_rgb(image, channels))
                return detect_one(image, tf.shape(image))
            return serve_converted
        fns["serve_uint16"] = converted(tf.uint16)
        fns["serve_float"] = converted(tf.float32)
    return fns


def serving_fn(model):
    """The uint8 ``serve(image)`` tf.function for a MaskRCNN inference model."""
    return serving_fns(model)["serve"]


def export_saved_model(model, path: str) -> str:
    """Write ``model`` (inference mode, square resizing) as a SavedModel at ``path``.

    The SavedModel has the endpoint ``serve`` (also the ``serving_default``
    signature) and, for 3-channel models, ``serve_uint16`` and ``serve_float``, described
    in the module docstring.

    Returns:
        ``path``.
    """
    archive = keras.export.ExportArchive()
    archive.track(model.keras_model)
    for name, fn in serving_fns(model).items():
        archive.add_endpoint(name=name, fn=fn)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    archive.write_out(path, verbose=False)
    return path
