"""Winograd 3x3 convolutions at inference (issue 14): mrcnn/modeling/winograd.py and its use in FoldedGraph.

- The F(m, 3) matrices reproduce a 1-D correlation exactly (float64).
- ``winograd_conv3x3`` equals ``tf.nn.conv2d`` (+ bias, ReLU) in shape and to float32 rounding
  on odd sizes, 1x1 maps, batches, dynamic shapes.
- The shape rule picks only 3x3 stride-1 'same' float32 convolutions with >= 128 channels.
- ``FoldedGraph`` runs them as Winograd (plain, BN-folded, TimeDistributed ROI batches), gives
  the Keras model's outputs, and reads the live weights.
- ``detect()`` on the Matterport fixture gives the same detections with and without it.
"""
from __future__ import annotations

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

from _model_helpers import REF_H5, REF_IMAGE, make_config, read_png
from mrcnn.modeling import fold, winograd
from mrcnn.modeling.maskrcnn import MaskRCNN


@pytest.mark.parametrize("m", [2, 4, 6])
def test_matrices_compute_1d_correlation(m):
    bt, g, at = winograd.winograd_matrices(m)
    a = m + 2
    assert bt.shape == (a, a) and g.shape == (a, 3) and at.shape == (m, a)
    rng = np.random.RandomState(m)
    for _ in range(5):
        d, f = rng.standard_normal(a), rng.standard_normal(3)
        ref = np.array([d[k:k + 3] @ f for k in range(m)])
        np.testing.assert_allclose(at @ ((g @ f) * (bt @ d)), ref, rtol=0, atol=1e-12)
    # Lavin & Gray's published F(2x2, 3x3) input transform, up to the sign of each row (a row
    # sign of B^T is undone by the same sign in G's row).
    if m == 2:
        np.testing.assert_array_equal(np.abs(bt), np.abs([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0],
                                                          [0, 1, 0, -1]]))


def _conv_ref(x, k, b, relu):
    y = tf.nn.bias_add(tf.nn.conv2d(x, k, 1, "SAME"), b)
    return (tf.nn.relu(y) if relu else y).numpy()


@pytest.mark.parametrize("m", [2, 4, 6])
@pytest.mark.parametrize("shape,relu", [((1, 1, 1, 8), False), ((2, 7, 5, 8), True),
                                        ((3, 14, 14, 16), True), ((1, 13, 29, 12), False),
                                        ((1, 6, 12, 4), True)])
def test_conv_equals_conv2d(m, shape, relu):
    rng = np.random.RandomState(sum(shape) + m)
    cout = 10
    x = tf.constant(rng.standard_normal(shape).astype(np.float32))
    k = tf.constant(rng.standard_normal((3, 3, shape[3], cout)).astype(np.float32))
    b = tf.constant(rng.standard_normal(cout).astype(np.float32))
    ref = _conv_ref(x, k, b, relu)
    # Dynamic batch and spatial size, as in detect()'s graph.
    fn = tf.function(lambda x: winograd.winograd_conv3x3(x, winograd.transform_kernel(k, m), m, b, relu),
                     input_signature=[tf.TensorSpec([None, None, None, shape[3]], tf.float32)])
    y = fn(x).numpy()
    assert y.shape == ref.shape
    scale = np.abs(ref).max()
    # Measured: F(2x2) 4e-7, F(4x4) 3e-6, F(6x6) 6e-6 of the output's scale.
    assert np.abs(y - ref).max() <= 2e-5 * scale
    if relu:
        assert (y >= 0).all() and (ref == 0).any()


@pytest.mark.parametrize("m", [4, 6])
def test_conv_in_strips_equals_conv2d(m):
    """A small ``max_bytes`` splits the map into many strips (each written in place into the
    output): same result as one strip, every row written."""
    rng = np.random.RandomState(7)
    x = tf.constant(rng.standard_normal((2, 31, 19, 8)).astype(np.float32))
    k = tf.constant(rng.standard_normal((3, 3, 8, 6)).astype(np.float32))
    b = tf.constant(rng.standard_normal(6).astype(np.float32))
    ref = _conv_ref(x, k, b, False)
    u = winograd.transform_kernel(k, m)
    for max_bytes in (1, 4000, 1 << 30):  # one tile row per strip, a few rows, the whole map
        y = tf.function(lambda x: winograd.winograd_conv3x3(x, u, m, b, max_bytes=max_bytes))(x).numpy()
        assert y.shape == ref.shape
        assert np.abs(y - ref).max() <= 2e-5 * np.abs(ref).max()


def test_two_convs_of_one_input_keep_their_own_outputs():
    """Each convolution's preallocated output is its own, even with equal shapes in one graph
    (grappler must not merge the two buffers that the strips write in place)."""
    rng = np.random.RandomState(8)
    x = tf.constant(rng.standard_normal((1, 20, 20, 8)).astype(np.float32))
    k1, k2 = (tf.constant(rng.standard_normal((3, 3, 8, 8)).astype(np.float32)) for _ in range(2))

    @tf.function
    def both(x):
        y1 = winograd.winograd_conv3x3(x, winograd.transform_kernel(k1, 6), 6, max_bytes=4000)
        y2 = winograd.winograd_conv3x3(x, winograd.transform_kernel(k2, 6), 6, max_bytes=4000)
        return y1, y2

    for y, k in zip(both(x), (k1, k2)):
        ref = tf.nn.conv2d(x, k, 1, "SAME").numpy()
        assert np.abs(y.numpy() - ref).max() <= 2e-5 * np.abs(ref).max()


def test_conv_static_shape_and_no_bias():
    rng = np.random.RandomState(1)
    x = tf.constant(rng.standard_normal((2, 9, 11, 32)).astype(np.float32))
    k = tf.constant(rng.standard_normal((3, 3, 32, 24)).astype(np.float32))
    y = winograd.winograd_conv3x3(x, winograd.transform_kernel(k, 6), 6)
    assert y.shape == (2, 9, 11, 24)
    ref = tf.nn.conv2d(x, k, 1, "SAME").numpy()
    assert np.abs(y.numpy() - ref).max() <= 2e-5 * np.abs(ref).max()


def test_shape_rule():
    def conv(cin, cout, **kw):
        layer = keras.layers.Conv2D(cout, kw.pop("k", 3), **kw)
        layer.build((None, 16, 16, cin))
        return layer

    assert winograd.is_winograd_conv(conv(256, 512, padding="same"), "float32")
    assert winograd.is_winograd_conv(conv(128, 128, padding="same", activation="relu"), "float32")
    assert not winograd.is_winograd_conv(conv(64, 64, padding="same"), "float32")  # thin: slower
    assert not winograd.is_winograd_conv(conv(256, 256, padding="valid"), "float32")
    assert not winograd.is_winograd_conv(conv(256, 256, padding="same", strides=2), "float32")
    assert not winograd.is_winograd_conv(conv(256, 256, padding="same", dilation_rate=2), "float32")
    assert not winograd.is_winograd_conv(conv(256, 256, k=1, padding="same"), "float32")
    assert not winograd.is_winograd_conv(conv(256, 256, padding="same"), "bfloat16")


def _small_model(seed=0):
    """Image path: conv+relu (plain), conv+BN (folded); ROI path: TimeDistributed conv+BN, conv+relu."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((None, None, 128))
    rois = keras.Input((None, 14, 14, 128))
    x = keras.layers.Conv2D(160, 3, padding="same", activation="relu", name="plain")(image)
    x = keras.layers.Conv2D(128, 3, padding="same", name="folded")(x)
    x = keras.layers.BatchNormalization(name="folded_bn")(x)
    x = keras.layers.Conv2D(128, 3, strides=2, padding="same", name="strided")(x)
    r = keras.layers.TimeDistributed(keras.layers.Conv2D(128, 3, padding="same"), name="roi_conv")(rois)
    r = keras.layers.TimeDistributed(keras.layers.BatchNormalization(), name="roi_bn")(r)
    r = keras.layers.Activation("relu")(r)
    r = keras.layers.TimeDistributed(keras.layers.Conv2D(128, 3, padding="same", activation="relu"),
                                     name="roi_conv2")(r)
    model = keras.Model([image, rois], [x, r])
    rng = np.random.RandomState(seed)
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.BatchNormalization):
            n = inner.gamma.shape[0]
            inner.set_weights([rng.uniform(0.5, 1.5, n), rng.uniform(-0.2, 0.2, n),
                               rng.uniform(-0.2, 0.2, n), rng.uniform(0.5, 2.0, n)])
    return model


def _assert_close(out, ref):
    for a, b in zip(ref, out):
        a, b = np.asarray(a), np.asarray(b)
        assert a.shape == b.shape
        assert np.abs(a - b).max() <= 2e-5 * np.abs(a).max()


def test_folded_graph_runs_winograd_and_matches_keras():
    model = _small_model()
    rng = np.random.RandomState(2)
    inputs = [tf.constant(rng.standard_normal((1, 23, 17, 128)).astype(np.float32)),
              tf.constant(rng.standard_normal((1, 5, 14, 14, 128)).astype(np.float32))]
    graph = fold.FoldedGraph(model, use_winograd=True)
    assert sorted(graph.winograd_convs) == ["folded", "plain", "roi_conv", "roi_conv2"]
    spec = [tf.TensorSpec([None, None, None, 128]), tf.TensorSpec([None, None, 14, 14, 128])]
    fn = tf.function(lambda a, b: graph([a, b]), input_signature=spec)
    # The traced graph has no Conv2D left but the strided one; one strip loop per Winograd conv.
    ops = [op.type for op in fn.get_concrete_function().graph.get_operations()]
    assert ops.count("Conv2D") == 1
    assert sum(t in ("While", "StatelessWhile") for t in ops) == 4
    ref = model(inputs, training=False)
    _assert_close(fn(*inputs), ref)
    assert fold.FoldedGraph(model, use_winograd=False).winograd_convs == []

    # Live weights: new kernels and BN statistics are used at the next call, no rebuild.
    for name in ("plain", "folded"):
        layer = model.get_layer(name)
        layer.set_weights([w * 1.5 for w in layer.get_weights()])
    bn = model.get_layer("roi_bn").layer
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([gamma * 2.0, beta, mean, var])
    ref2 = model(inputs, training=False)
    assert not np.allclose(np.asarray(ref2[0]), np.asarray(ref[0]))
    _assert_close(fn(*inputs), ref2)


def _rpn_like_model(seed=0):
    """An RPN-like head as a nested model (Matterport's rpn_model): 3x3 conv + ReLU whose only
    consumers are two linear 1x1 convs, applied to two maps; plus a 3x3 conv whose output is
    also a model output (not fusable)."""
    keras.utils.set_random_seed(seed)
    fmap = keras.Input((None, None, 128))
    shared = keras.layers.Conv2D(160, 3, padding="same", activation="relu", name="shared")(fmap)
    cls = keras.layers.Conv2D(6, 1, name="cls")(shared)
    box = keras.layers.Conv2D(12, 1, name="box")(shared)
    head = keras.Model([fmap], [cls, box], name="head_model")
    a, b = keras.Input((None, None, 128)), keras.Input((None, None, 128))
    out_a, out_b = head([a]), head([b])
    exposed = keras.layers.Conv2D(128, 3, padding="same", name="exposed")(b)
    side = keras.layers.Conv2D(8, 1, name="side")(exposed)
    return keras.Model([a, b], list(out_a) + list(out_b) + [exposed, side])


def test_one_by_one_heads_fused_into_winograd_strips(monkeypatch):
    """The heads are computed strip by strip inside the Winograd convolution (the 160-channel
    map is never made), in small strips too, with the same outputs as Keras; a conv whose
    output is also a model output keeps its map and its 1x1 consumer."""
    model = _rpn_like_model()
    rng = np.random.RandomState(3)
    inputs = [tf.constant(rng.standard_normal((1, 29, 23, 128)).astype(np.float32)),
              tf.constant(rng.standard_normal((1, 12, 8, 128)).astype(np.float32))]
    ref = model(inputs, training=False)
    graph = fold.FoldedGraph(model, use_winograd=True)
    assert sorted(graph.winograd_convs) == ["exposed", "shared"]
    assert sorted(graph.fused_heads) == ["box", "cls"]
    spec = [tf.TensorSpec([None, None, None, 128])] * 2
    fn = tf.function(lambda a, b: graph([a, b]), input_signature=spec)
    concrete = fn.get_concrete_function()
    # Only the side 1x1 conv stays a Conv2D: the heads are matrix products in the strips.
    assert [op.type for op in concrete.graph.get_operations()].count("Conv2D") == 1
    _assert_close(fn(*inputs), ref)
    with monkeypatch.context() as patch:  # many strips: each strip's head rows land in place
        patch.setattr(winograd, "winograd_conv3x3",
                      functools.partial(winograd.winograd_conv3x3, max_bytes=20000))
        fn_small = tf.function(lambda a, b: fold.FoldedGraph(model, use_winograd=True)([a, b]))
        _assert_close(fn_small(*inputs), ref)
    # Under XLA the convolutions stay conv2d and the heads are their own convolutions again.
    xla = tf.function(lambda a, b: graph([a, b]), jit_compile=True)
    _assert_close(xla(*inputs), ref)


def test_winograd_convs_run_one_after_the_other():
    """Each Winograd convolution's output buffer waits for the previous one's output
    (WinogradChain): the loops of independent convolutions (the RPN's levels) do not run at once."""
    model = _rpn_like_model(1)
    graph = fold.FoldedGraph(model, use_winograd=True)
    spec = [tf.TensorSpec([None, None, None, 128])] * 2
    g = tf.function(lambda a, b: graph([a, b]), input_signature=spec).get_concrete_function().graph
    empties = [op for op in g.get_operations() if op.type == "Empty"]
    assert len(empties) == 3  # shared on each map, exposed
    # The dependencies sit on the ops of the buffer's shape (made inside the same control context).
    waits = [[c.type for i in op.inputs[0].op.inputs for c in i.op.control_inputs] for op in empties]
    # The first waits for its kernel only; the others also for the previous output.
    assert sorted(w.count("EnsureShape") for w in waits) == [0, 1, 1]


def test_env_switch(monkeypatch):
    model = _small_model(1)
    monkeypatch.setenv("MRCNN_WINOGRAD", "0")
    assert not winograd.winograd_enabled()
    assert fold.FoldedGraph(model).winograd_convs == []
    monkeypatch.setenv("MRCNN_WINOGRAD", "1")
    assert len(fold.FoldedGraph(model).winograd_convs) == 4


def test_detect_with_and_without_winograd_on_fixture(tmp_path, monkeypatch):
    """Same classes, boxes within 1 px, scores within 1e-5 and mask IoU >= 0.99: the
    tolerances of test_model_reference.py's detect() check against Matterport."""
    image = read_png(REF_IMAGE)
    results = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("MRCNN_WINOGRAD", flag)
        m = MaskRCNN("inference", make_config(), str(tmp_path / flag))
        m.load_weights(REF_H5, by_name=True)
        if flag == "1":
            names = fold.FoldedGraph(m.keras_model).winograd_convs
            # FPN 3x3 (4), RPN shared conv, mask head (4), backbone stages 3-5 3x3 (13 for R50).
            assert {"fpn_p2", "rpn_conv_shared", "mrcnn_mask_conv1", "res4a_branch2b"} <= set(names)
            assert "res2a_branch2b" not in names and len(names) == 4 + 1 + 4 + 13
        results[flag] = m.detect([image])[0]
        del m
        keras.backend.clear_session()
    a, b = results["1"], results["0"]
    assert len(b["class_ids"]) == 100
    np.testing.assert_array_equal(a["class_ids"], b["class_ids"])
    assert np.abs(a["rois"] - b["rois"]).max() <= 1
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
    inter = (a["masks"] & b["masks"]).sum(axis=(0, 1))
    union = (a["masks"] | b["masks"]).sum(axis=(0, 1))
    assert np.where(union > 0, inter / np.maximum(union, 1), 1.0).min() >= 0.99
    assert b["masks"].sum() > 1000
