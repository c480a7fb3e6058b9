"""mrcnn.modeling.losses against Matterport's loss functions (model_graph_ops fixtures)."""
import numpy as np
import pytest
import tensorflow as tf

from helpers import case_ids, load_cases
from mrcnn.modeling import losses as L

LOSSES = ["rpn_class_loss_graph", "rpn_bbox_loss_graph", "mrcnn_class_loss_graph",
          "mrcnn_bbox_loss_graph", "mrcnn_mask_loss_graph"]
CASES = [c for c in load_cases("model_graph_ops") if c.function.split(".")[-1] in LOSSES]


class _Cfg:
    IMAGES_PER_GPU = 2


def _call(case, fn=None):
    name = case.function.split(".")[-1]
    fn = fn or getattr(L, name)
    args = dict(case.args)
    if name == "rpn_bbox_loss_graph":
        args.pop("IMAGES_PER_GPU")
        args["config"] = _Cfg()
    return fn(**args)


def test_all_five_losses_have_cases():
    assert sorted(c.function.split(".")[-1] for c in CASES) == sorted(LOSSES)


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_loss_matches_matterport(case):
    got = _call(case)
    assert got.shape == () and got.dtype == tf.float32
    # Masked means add the same terms as Matterport's tf.where selections plus exact
    # zeros, in another float32 summation order: equal up to a few ulp (was bitwise).
    np.testing.assert_array_max_ulp(np.float32(got), case.outputs["loss"], maxulp=4)


@pytest.mark.parametrize("case", CASES, ids=case_ids(CASES))
def test_loss_inside_tf_function(case):
    got = _call(case, tf.function(getattr(L, case.function.split(".")[-1])))
    np.testing.assert_allclose(np.float32(got), case.outputs["loss"], rtol=1e-6)


def test_smooth_l1_matches_matterport():
    case = load_cases("model_graph_ops", "model.smooth_l1_loss")[0]
    got = np.asarray(L.smooth_l1_loss(**case.args))
    expected = case.outputs["loss"]
    assert got.shape == expected.shape == (50, 4)
    # The reference's graph kernels rounded two elements 1 ulp higher.
    np.testing.assert_allclose(got, expected, rtol=2.5e-7, atol=0)
    assert np.mean(got == expected) > 0.98


def test_smooth_l1_branches():
    got = L.smooth_l1_loss(np.float32([0, 0, 0, 0]), np.float32([0.5, -0.5, 2.0, -3.0]))
    np.testing.assert_allclose(got, [0.125, 0.125, 1.5, 2.5])


def test_rpn_class_loss_zero_without_labelled_anchors():
    match = np.zeros((2, 10, 1), np.int32)
    logits = np.random.default_rng(0).normal(size=(2, 10, 2)).astype(np.float32)
    assert float(L.rpn_class_loss_graph(match, logits)) == 0.0


def test_rpn_class_loss_value():
    match = np.array([[[1], [-1], [0]]], np.int32)
    logits = np.array([[[0.0, 2.0], [1.0, 0.0], [9.0, -9.0]]], np.float32)
    expected = np.mean([np.log1p(np.exp(-2.0)), np.log1p(np.exp(-1.0))])
    np.testing.assert_allclose(L.rpn_class_loss_graph(match, logits), expected, rtol=1e-6)


def test_rpn_bbox_loss_zero_without_positives_and_config_not_needed():
    match = np.full((3, 8, 1), -1, np.int32)
    target = np.ones((3, 4, 4), np.float32)
    pred = np.zeros((3, 8, 4), np.float32)
    assert float(L.rpn_bbox_loss_graph(None, target, match, pred)) == 0.0


def test_rpn_bbox_loss_packs_targets_per_image():
    # Image 0 has 2 positives (targets rows 0-1), image 1 has 1 (row 0); other rows ignored.
    match = np.array([[[1], [0], [1]], [[-1], [1], [0]]], np.int32)
    pred = np.zeros((2, 3, 4), np.float32)
    target = np.full((2, 3, 4), 99.0, np.float32)
    target[0, 0], target[0, 1], target[1, 0] = 0.5, -0.5, 2.0
    expected = np.mean([0.125] * 8 + [1.5] * 4)
    np.testing.assert_allclose(L.rpn_bbox_loss_graph(None, target, match, pred), expected, rtol=1e-6)


def test_mrcnn_class_loss_zero_not_nan_when_no_class_is_active():
    ids = np.array([[1, 0]], np.int32)
    logits = np.array([[[0.0, 3.0], [1.0, 0.0]]], np.float32)
    got = L.mrcnn_class_loss_graph(ids, logits, np.zeros((1, 2), np.float32))
    assert float(got) == 0.0


def test_mrcnn_class_loss_uses_each_images_active_classes():
    # Image 0 predicts class 2 (inactive for it), image 1 predicts class 2 (active): only image 1 counts.
    ids = np.array([[2], [2]], np.int32)
    logits = np.array([[[0.0, 0.0, 1.0]], [[0.0, 0.0, 2.0]]], np.float32)
    active = np.array([[1, 1, 0], [1, 1, 1]], np.float32)
    got = float(L.mrcnn_class_loss_graph(ids, logits, active))
    expected = -np.log(np.exp(2.0) / (2 + np.exp(2.0)))
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_head_losses_zero_without_positive_rois():
    ids = np.zeros((2, 5), np.float32)
    bbox = L.mrcnn_bbox_loss_graph(np.ones((2, 5, 4), np.float32), ids, np.zeros((2, 5, 3, 4), np.float32))
    mask = L.mrcnn_mask_loss_graph(np.ones((2, 5, 4, 4), np.float32), ids,
                                   np.full((2, 5, 4, 4, 3), 0.5, np.float32))
    assert float(bbox) == 0.0 and float(mask) == 0.0


def test_head_losses_pick_the_target_class():
    ids = np.array([[2, 0]], np.int32)
    target_bbox = np.zeros((1, 2, 4), np.float32)
    pred_bbox = np.full((1, 2, 3, 4), 5.0, np.float32)
    pred_bbox[0, 0, 2] = 0.5  # only this row/class is scored
    np.testing.assert_allclose(L.mrcnn_bbox_loss_graph(target_bbox, ids, pred_bbox), 0.125)
    target_masks = np.ones((1, 2, 2, 2), np.float32)
    pred_masks = np.full((1, 2, 2, 2, 3), 1e-3, np.float32)
    pred_masks[0, 0, :, :, 2] = 0.25
    np.testing.assert_allclose(L.mrcnn_mask_loss_graph(target_masks, ids, pred_masks),
                               -np.log(0.25 + 1e-7), rtol=1e-6)


def test_mask_loss_finite_for_saturated_predictions():
    ids = np.array([[1]], np.int32)
    target = np.array([[[[0.0, 1.0]]]], np.float32)
    pred = np.array([[[[[0.0, 1.0], [0.0, 0.0]]]]], np.float32)  # [1, 1, 1, 2, 2]
    got = float(L.mrcnn_mask_loss_graph(target, ids, pred))
    assert np.isfinite(got) and got > 10  # both pixels maximally wrong, clipped at eps


def test_gradients_are_finite_for_empty_selections():
    logits = tf.Variable(np.zeros((1, 4, 2), np.float32))
    pred_bbox = tf.Variable(np.zeros((1, 4, 2, 4), np.float32))
    pred_masks = tf.Variable(np.full((1, 4, 2, 2, 2), 0.5, np.float32))
    with tf.GradientTape() as tape:
        total = (L.rpn_class_loss_graph(np.zeros((1, 4, 1), np.int32), logits)
                 + L.mrcnn_bbox_loss_graph(np.zeros((1, 4, 4), np.float32), np.zeros((1, 4)), pred_bbox)
                 + L.mrcnn_mask_loss_graph(np.zeros((1, 4, 2, 2), np.float32), np.zeros((1, 4)),
                                           pred_masks)
                 + L.mrcnn_class_loss_graph(np.zeros((1, 4)), logits, np.zeros((1, 2), np.float32)))
    grads = tape.gradient(total, [logits, pred_bbox, pred_masks])
    assert float(total) == 0.0
    for g in grads:
        assert g is None or np.all(np.isfinite(np.asarray(tf.convert_to_tensor(g))))
