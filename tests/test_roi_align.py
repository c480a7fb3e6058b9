"""keras.ops crop_and_resize / PyramidROIAlign against tf.image.crop_and_resize.

Bit-exact eagerly and in tf.function; under XLA within 1e-5 (FMA contraction) with the
same sample positions (same zero cells).
"""
import numpy as np
import pytest
import tensorflow as tf

from mrcnn.modeling.roi_align import PyramidROIAlign, crop_and_resize, roi_pyramid_level

CROP_SIZES = [(7, 7), (14, 14), (1, 1), (1, 5), (4, 1), (2, 3)]


def _boxes(rng, count):
    """Normal, partly-outside, inverted, degenerate, whole-image and zero boxes."""
    normal = np.sort(rng.random((count, 2, 2)), axis=1).transpose(0, 2, 1).reshape(count, 4)
    outside = rng.uniform(-0.4, 1.4, (count, 4))                  # partly/fully outside, some inverted
    special = np.array([[0, 0, 1, 1], [0.5, 0.5, 1, 1], [0, 0, 0.5, 1], [0.3, 0.3, 0.3, 0.3],
                        [0.3, 0.1, 0.3, 0.9], [0, 0, 0, 0], [1, 1, 1, 1], [0.8, 0.2, 0.2, 0.8]])
    return np.concatenate([normal, outside, special]).astype(np.float32)


@pytest.mark.parametrize("height,width", [(9, 13), (1, 6), (17, 1), (32, 32)])
def test_crop_and_resize_matches_tf_exactly(height, width):
    rng = np.random.default_rng(height * 100 + width)
    images = rng.standard_normal((3, height, width, 4)).astype(np.float32)
    boxes = _boxes(rng, 20)
    index = rng.integers(0, 3, len(boxes)).astype(np.int32)
    for crop in CROP_SIZES:
        expected = tf.image.crop_and_resize(images, boxes, index, crop).numpy()
        got = np.asarray(crop_and_resize(images, boxes, index, crop))
        assert got.shape == (len(boxes),) + crop + (4,)
        np.testing.assert_array_equal(got, expected, err_msg=f"crop {crop}")


def test_crop_and_resize_exact_under_xla_including_the_bottom_right_edge():
    # Boxes ending at 1: the kernel's last sample is (H-1)/(c-1)*(c-1), which
    # rounds above H-1 (-> 0) for some H and c; XLA must round the same way.
    rng = np.random.default_rng(3)
    fn = tf.function(crop_and_resize, jit_compile=True, reduce_retracing=True)
    zeros_at_edge = 0
    for height in (4, 7, 8, 13, 18, 25):
        images = rng.standard_normal((2, height, height + 3, 2)).astype(np.float32)
        boxes = _boxes(rng, 10)
        index = rng.integers(0, 2, len(boxes)).astype(np.int32)
        for crop in [(7, 7), (14, 14), (1, 1), (6, 3)]:
            expected = tf.image.crop_and_resize(images, boxes, index, crop).numpy()
            got = fn(images, boxes, index, crop).numpy()
            # XLA contracts the interpolation into FMAs (1e-6 off); the sample
            # positions, hence which cells are 0, are the kernel's exactly.
            np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5, err_msg=f"H={height} crop {crop}")
            np.testing.assert_array_equal(got == 0, expected == 0)
            zeros_at_edge += int((expected[20, -1] == 0).all(axis=-1).sum())
    assert zeros_at_edge > 0  # the edge flip did occur in this sweep


def test_crop_and_resize_nan_box_gives_zeros_and_bf16_maps():
    images = np.arange(2 * 5 * 5 * 1, dtype=np.float32).reshape(2, 5, 5, 1)
    boxes = np.float32([[np.nan, 0, 1, 1], [0, 0, 1, 1]])
    got = np.asarray(crop_and_resize(images, boxes, np.int32([0, 1]), (3, 3)))
    np.testing.assert_array_equal(got[0], 0.0)
    np.testing.assert_array_equal(got[1, :, :, 0], [[25, 27, 29], [35, 37, 39], [45, 47, 49]])
    half = np.asarray(crop_and_resize(tf.cast(images, tf.bfloat16), boxes, np.int32([0, 1]), (3, 3)))
    assert half.dtype == np.float32
    np.testing.assert_array_equal(half[1], got[1])  # small integers are exact in bf16


def _pyramid(rng, batch=2, size=64, channels=3):
    maps = [rng.standard_normal((batch, size // s, size // s, channels)).astype(np.float32)
            for s in (4, 8, 16, 32)]
    meta = np.zeros((batch, 12 + 3), np.float32)
    meta[:, 4:7] = [size, size, 3]
    return maps, meta


def _reference_pyramid(boxes, meta, maps, pool):
    """Per-box crop_and_resize from the box's level (the old layer's semantics)."""
    levels = np.asarray(roi_pyramid_level(boxes, meta[:, 4:7]))
    out = np.zeros(boxes.shape[:2] + pool + (maps[0].shape[-1],), np.float32)
    for b in range(boxes.shape[0]):
        for n in range(boxes.shape[1]):
            level = levels[b, n] - 2
            out[b, n] = tf.image.crop_and_resize(maps[level][b:b + 1], boxes[b, n:n + 1],
                                                 [0], pool).numpy()[0]
    return out, levels


def test_pyramid_roi_align_one_gather_matches_per_level_crops_eager_and_xla():
    rng = np.random.default_rng(7)
    maps, meta = _pyramid(rng, size=1024)
    boxes = np.stack([_boxes(rng, 6), _boxes(rng, 6)])
    # One box per level 5, 4, 3, 2 at the head of each image.
    boxes[:, :4] = [[0, 0, 1, 1], [0.1, 0.1, 0.3, 0.3], [0.2, 0.2, 0.3, 0.3], [0.3, 0.3, 0.32, 0.32]]
    layer = PyramidROIAlign((7, 7))
    expected, levels = _reference_pyramid(boxes, meta, maps, (7, 7))
    assert set(np.unique(levels)) == {2, 3, 4, 5}
    np.testing.assert_array_equal(np.asarray(layer([boxes, meta] + maps)), expected)
    xla = tf.function(lambda *x: layer(list(x)), jit_compile=True)
    np.testing.assert_allclose(xla(boxes, meta, *maps).numpy(), expected, rtol=0, atol=1e-5)


def test_pyramid_roi_align_gradient_matches_crop_and_resize_gradient():
    rng = np.random.default_rng(11)
    maps, meta = _pyramid(rng, batch=1, size=128)
    boxes = _boxes(rng, 5)[None]
    weights = rng.standard_normal((1, boxes.shape[1], 7, 7, 3)).astype(np.float32)
    maps_v = [tf.Variable(m) for m in maps]
    levels = np.asarray(roi_pyramid_level(boxes, meta[:, 4:7]))[0]
    with tf.GradientTape(persistent=True) as tape:
        ours = tf.reduce_sum(PyramidROIAlign((7, 7))([boxes, meta] + maps_v) * weights)
        ref_parts = []
        for n in range(boxes.shape[1]):
            crop = tf.image.crop_and_resize(maps_v[levels[n] - 2], boxes[0, n:n + 1], [0], (7, 7))
            ref_parts.append(tf.reduce_sum(crop * weights[0, n]))
        ref = tf.add_n(ref_parts)
    assert len(set(levels.tolist())) > 1
    for m, g_ours, g_ref in zip(maps, tape.gradient(ours, maps_v), tape.gradient(ref, maps_v)):
        g_ref = np.zeros_like(m) if g_ref is None else tf.convert_to_tensor(g_ref).numpy()
        g_ours = tf.convert_to_tensor(g_ours).numpy()
        np.testing.assert_allclose(g_ours, g_ref, atol=1e-5)


def test_inference_roi_align_crops_per_level_in_chunks_with_the_layers_values(monkeypatch):
    """fold's inference form (crop_and_resize per level, a static number of boxes per call,
    written in place): the layer's values exactly, for every level, chunks, a spare padded
    row, NaN/inf boxes and batch 2; bfloat16 maps (no kernel) go to the layer itself."""
    from mrcnn.modeling import fold
    monkeypatch.setattr(fold, "_CROP_CHUNK", 3)  # several chunks per level, last one padded
    rng = np.random.default_rng(13)
    maps, meta = _pyramid(rng, size=1024)
    boxes = np.stack([_boxes(rng, 8), _boxes(rng, 8)])
    boxes[:, :4] = [[0, 0, 1, 1], [0.1, 0.1, 0.3, 0.3], [0.2, 0.2, 0.3, 0.3], [0.3, 0.3, 0.32, 0.32]]
    boxes[0, 5] = [np.nan, 0, 1, 1]
    boxes[1, 6] = [0, -np.inf, 1, np.inf]
    levels = np.asarray(roi_pyramid_level(boxes, meta[:, 4:7]))
    assert set(np.unique(levels)) == {2, 3, 4, 5} and (np.bincount(levels.ravel())[2:] > 3).any()
    for pool in [(7, 7), (14, 14), (2, 3)]:
        layer = PyramidROIAlign(pool)
        run = fold._native_roi_align(layer)
        fn = tf.function(lambda *x: run(list(x)))
        got = fn(boxes, meta, *maps).numpy()
        expected = np.asarray(layer([boxes, meta] + maps))
        assert got.shape == expected.shape == (2, boxes.shape[1]) + pool + (3,)
        np.testing.assert_array_equal(got, expected, err_msg=f"pool {pool}")
        np.testing.assert_array_equal(got[0, 5], 0.0)
        np.testing.assert_array_equal(got[1, 6], 0.0)
        graph = fn.get_concrete_function(boxes, meta, *maps).graph
        crops = [op for f in [graph] + [graph._functions[k].graph for k in graph._functions]
                 for op in f.get_operations() if op.type == "CropAndResize"]
        assert len(crops) == 4
        assert all(op.inputs[1].shape.as_list() == [3, 4] for op in crops)  # static box count
    half = [tf.cast(m, tf.bfloat16) for m in maps]
    layer = PyramidROIAlign((7, 7))
    got = tf.function(lambda *x: fold._native_roi_align(layer)(list(x)))(boxes, meta, *half)
    np.testing.assert_array_equal(got.numpy(), np.asarray(layer.call([boxes, meta] + half)))
