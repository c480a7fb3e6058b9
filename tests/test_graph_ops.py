"""mrcnn.modeling.graph_ops against Matterport's graph functions (model_graph_ops fixtures)."""
import numpy as np
import pytest
import tensorflow as tf

from helpers import case_ids, load_cases
from mrcnn.modeling import graph_ops as G

GROUP = "model_graph_ops"
FUNCTIONS = ["apply_box_deltas_graph", "clip_boxes_graph", "overlaps_graph", "box_refinement_graph",
             "norm_boxes_graph", "denorm_boxes_graph", "trim_zeros_graph"]
CASES = [c for c in load_cases(GROUP) if c.function.split(".")[-1] in FUNCTIONS]


def _outputs(case, result):
    """Pair each fixture output with the function's result (tuple results in order)."""
    results = result if isinstance(result, tuple) else (result,)
    assert len(results) == len(case.outputs)
    return zip(case.outputs.items(), results)


def test_every_graph_function_has_a_case():
    assert sorted({c.function.split(".")[-1] for c in CASES}) == sorted(FUNCTIONS)


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_matches_matterport_bitwise(case):
    fn = getattr(G, case.function.split(".")[-1])
    for (key, expected), got in _outputs(case, fn(**case.args)):
        got = np.asarray(got)
        assert got.dtype == expected.dtype, key
        assert got.shape == expected.shape, key
        np.testing.assert_array_equal(got, expected, err_msg=f"{case.name}.{key}")


@pytest.mark.parametrize("case", [c for c in CASES if c.function.endswith(
    ("apply_box_deltas_graph", "clip_boxes_graph", "overlaps_graph", "box_refinement_graph"))],
    ids=lambda c: c.name)
def test_bitwise_inside_tf_function_with_static_shapes(case):
    # Grappler rewrites arithmetic when shapes are static; results must not move.
    fn = tf.function(getattr(G, case.function.split(".")[-1]))
    for (key, expected), got in _outputs(case, fn(**case.args)):
        np.testing.assert_array_equal(np.asarray(got), expected, err_msg=f"{case.name}.{key}")


def _case(name):
    return next(c for c in CASES if c.name == name)


def test_batched_boxes_equal_per_image_results():
    a = _case("apply_box_deltas_graph").args
    boxes = np.stack([a["boxes"][:15], a["boxes"][15:]])
    deltas = np.stack([a["deltas"][:15], a["deltas"][15:]])
    batched = np.asarray(G.apply_box_deltas_graph(boxes, deltas))
    for i in range(2):
        # Vectorised exp can round the tail of a buffer differently: 1 ulp.
        np.testing.assert_allclose(batched[i], G.apply_box_deltas_graph(boxes[i], deltas[i]),
                                   rtol=2e-7, atol=1e-7)

    o = _case("overlaps_graph").args
    b1 = np.stack([o["boxes1"], o["boxes1"][::-1]])
    b2 = np.stack([o["boxes2"], o["boxes2"][::-1]])
    batched = np.asarray(G.overlaps_graph(b1, b2))
    assert batched.shape == (2, 30, 12)
    for i in range(2):
        np.testing.assert_array_equal(batched[i], G.overlaps_graph(b1[i], b2[i]))


def test_clip_boxes_accepts_one_window_per_image():
    boxes = np.array([[[-0.1, 0.2, 0.5, 1.3]], [[-0.1, 0.2, 0.5, 1.3]]], np.float32)
    windows = np.array([[0, 0, 1, 1], [0.1, 0.3, 0.4, 0.9]], np.float32)
    got = np.asarray(G.clip_boxes_graph(boxes, windows[:, None, :]))
    np.testing.assert_array_equal(got[0, 0], np.float32([0, 0.2, 0.5, 1]))
    np.testing.assert_array_equal(got[1, 0], np.float32([0.1, 0.3, 0.4, 0.9]))


def test_overlaps_known_values_and_empty_inputs():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[0, 0, 10, 10], [5, 5, 15, 15], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(G.overlaps_graph(a, b), [[1.0, 25 / 175, 0.0]], rtol=1e-6)
    assert G.overlaps_graph(a, np.zeros((0, 4), np.float32)).shape == (1, 0)
    assert G.overlaps_graph(np.zeros((0, 4), np.float32), b).shape == (0, 3)


def test_box_refinement_inverts_apply_box_deltas():
    box = np.array([[0.1, 0.2, 0.4, 0.6], [0.5, 0.5, 0.9, 0.7]], np.float32)
    gt = np.array([[0.15, 0.1, 0.35, 0.7], [0.4, 0.55, 1.0, 0.65]], np.float32)
    deltas = G.box_refinement_graph(box, gt)
    np.testing.assert_allclose(G.apply_box_deltas_graph(box, deltas), gt, atol=1e-6)
    np.testing.assert_array_equal(G.box_refinement_graph(box, box), np.zeros((2, 4), np.float32))


def test_norm_denorm_round_trip_on_pixel_boxes():
    boxes = np.array([[0, 0, 200, 300], [10, 20, 50, 70], [199, 299, 200, 300]], np.int32)
    normed = G.norm_boxes_graph(boxes, (200, 300))
    np.testing.assert_allclose(normed[0], [0, 0, 1, 1], atol=1e-7)
    np.testing.assert_array_equal(G.denorm_boxes_graph(normed, (200, 300)), boxes)


def test_norm_boxes_batched_shapes():
    windows = np.array([[0, 0, 128, 64], [32, 0, 96, 128]], np.float32)
    shapes = np.array([[128, 64], [128, 128]], np.float32)
    got = np.asarray(G.norm_boxes_graph(windows, shapes))
    for i in range(2):
        np.testing.assert_array_equal(got[i], G.norm_boxes_graph(windows[i], tuple(shapes[i])))


def test_trim_zeros_keeps_order_and_handles_empty():
    boxes = np.array([[0, 0, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 0, 5]], np.float32)
    kept, non_zeros = G.trim_zeros_graph(boxes)
    np.testing.assert_array_equal(kept, boxes[[1, 3]])
    np.testing.assert_array_equal(non_zeros, [False, True, False, True])
    kept, non_zeros = G.trim_zeros_graph(np.zeros((0, 4), np.float32))
    assert kept.shape == (0, 4) and non_zeros.shape == (0,)


def test_log2_graph():
    np.testing.assert_allclose(G.log2_graph(np.float32([1, 2, 8, 0.5])), [0, 1, 3, -1], atol=1e-7)
    assert np.isneginf(G.log2_graph(np.float32([0]))[0])


def test_parse_image_meta_graph_layout():
    # compose_image_meta's layout: id, original shape, image shape, window, scale, active ids.
    meta = np.array([[7, 200, 300, 3, 256, 256, 3, 43, 0, 213, 256, 0.85, 1, 1, 0, 1],
                     [8, 100, 100, 3, 256, 256, 3, 0, 0, 256, 256, 2.56, 1, 0, 1, 1]], np.float32)
    m = G.parse_image_meta_graph(meta)
    assert set(m) == {"image_id", "original_image_shape", "image_shape", "window", "scale",
                      "active_class_ids"}
    np.testing.assert_array_equal(m["image_id"], [7, 8])
    np.testing.assert_array_equal(m["original_image_shape"][0], [200, 300, 3])
    np.testing.assert_array_equal(m["image_shape"][1], [256, 256, 3])
    np.testing.assert_array_equal(m["window"][0], [43, 0, 213, 256])
    np.testing.assert_array_equal(m["scale"], np.float32([0.85, 2.56]))
    np.testing.assert_array_equal(m["active_class_ids"], [[1, 1, 0, 1], [1, 0, 1, 1]])


def test_batch_pack_graph():
    x = np.arange(2 * 4 * 2, dtype=np.float32).reshape(2, 4, 2)
    got = np.asarray(G.batch_pack_graph(x, np.array([3, 1]), 2))
    np.testing.assert_array_equal(got, np.concatenate([x[0, :3], x[1, :1]]))
    assert G.batch_pack_graph(x, np.array([0, 0]), 2).shape == (0, 2)
    np.testing.assert_array_equal(G.batch_pack_graph(x, np.array([2, 4]), 1), x[0, :2])


def test_batch_slice_single_and_multiple_outputs():
    x = tf.constant(np.arange(12, dtype=np.float32).reshape(3, 4))
    y = tf.constant(np.ones((3, 4), np.float32))
    np.testing.assert_array_equal(G.batch_slice(x, lambda a: a * 2, 3), np.asarray(x) * 2)
    s, d = G.batch_slice([x, y], lambda a, b: (a + b, a - b), 3, names=["sum", "diff"])
    np.testing.assert_array_equal(s, np.asarray(x) + 1)
    np.testing.assert_array_equal(d, np.asarray(x) - 1)
    # Only the first batch_size items are used, as in Matterport.
    assert G.batch_slice(x, tf.reduce_sum, 2).shape == (2,)


def test_config_value_prefers_explicit_value_and_names_missing_attribute():
    class Cfg:
        PRE_NMS_LIMIT = 6000
    assert G.config_value(Cfg(), "PRE_NMS_LIMIT", None) == 6000
    assert G.config_value(Cfg(), "PRE_NMS_LIMIT", 10) == 10
    with pytest.raises(ValueError, match="RPN_BBOX_STD_DEV"):
        G.config_value(Cfg(), "RPN_BBOX_STD_DEV", None)
    with pytest.raises(ValueError, match="pre_nms_limit"):
        G.config_value(None, "PRE_NMS_LIMIT", None)
