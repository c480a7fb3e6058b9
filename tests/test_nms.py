"""mrcnn.modeling.nms.greedy_nms (keras.ops) against TensorFlow's NMS kernel.

Runs on whichever Keras backend is active (the JAX CI run included); the
reference is ``NonMaxSuppressionV4`` called through TensorFlow on numpy inputs.
Scores are distinct: exact ties may be ordered differently by the kernel's heap.
"""
import numpy as np
import pytest
import tensorflow as tf

from mrcnn.modeling.nms import greedy_nms

LOWEST = np.finfo(np.float32).min


def _tf_nms(boxes, scores, max_output, threshold):
    """TF's kernel on one row: (indices [M] padded with 0, valid [M])."""
    idx, count = tf.raw_ops.NonMaxSuppressionV4(
        boxes=boxes, scores=scores, max_output_size=max_output, iou_threshold=threshold,
        score_threshold=LOWEST, pad_to_max_output_size=True)
    count = int(count)
    return idx.numpy(), np.arange(max_output) < count


def _boxes(rng, n):
    """Overlapping boxes incl. inverted corners, zero-area boxes and exact duplicates."""
    centre = rng.uniform(0, 1, (n, 2))
    size = rng.uniform(0.02, 0.3, (n, 2))
    boxes = np.concatenate([centre - size, centre + size], axis=1)
    boxes[::17] = boxes[::17][:, [2, 3, 0, 1]]           # corners given the other way round
    boxes[5::23, 2] = boxes[5::23, 0]                     # zero height
    boxes[7::19] = boxes[6::19][: len(boxes[7::19])]      # duplicates of the previous box
    return boxes.astype(np.float32)


@pytest.mark.parametrize("threshold", [0.0, 0.5, 0.7, 1.0])
@pytest.mark.parametrize("n,max_output", [(150, 40), (60, 80), (1, 3)])
def test_matches_tf_kernel(threshold, n, max_output):
    rng = np.random.default_rng(n + int(threshold * 10))
    boxes = np.stack([_boxes(rng, n), _boxes(rng, n)])
    scores = np.stack([rng.permutation(n), rng.permutation(n)]).astype(np.float32) / n
    scores[1, ::11] = -np.inf                              # masked rows take no part
    indices, valid = greedy_nms(boxes, scores, max_output, threshold)
    indices, valid = np.asarray(indices), np.asarray(valid)
    assert indices.shape == valid.shape == (2, max_output)
    assert indices.dtype == np.int32 and valid.dtype == bool
    for row in range(2):
        want_idx, want_valid = _tf_nms(boxes[row], scores[row], max_output, threshold)
        np.testing.assert_array_equal(valid[row], want_valid)
        np.testing.assert_array_equal(indices[row], want_idx)
    assert valid[0].sum() > 0 and not np.isin(np.arange(0, n, 11), indices[1][valid[1]]).any()


def test_iou_equal_to_threshold_is_kept():
    # IoU exactly 0.5: the kernel drops a box only when IoU > threshold.
    boxes = np.float32([[[0, 0, 1, 2], [0, 0, 1, 1], [0, 0.5, 1, 1.5]]])
    scores = np.float32([[0.9, 0.8, 0.7]])
    indices, valid = greedy_nms(boxes, scores, 3, 0.5)
    np.testing.assert_array_equal(np.asarray(indices)[0][np.asarray(valid)[0]], [0, 1, 2])
    indices, valid = greedy_nms(boxes, scores, 3, 0.49)
    np.testing.assert_array_equal(np.asarray(indices)[0][np.asarray(valid)[0]], [0])


def test_groups_is_per_group_nms_then_best_overall():
    rng = np.random.default_rng(5)
    n, max_output, threshold = 200, 30, 0.4
    boxes = _boxes(rng, n)[None]
    scores = (rng.permutation(n).astype(np.float32) / n)[None]
    groups = rng.integers(0, 4, (1, n)).astype(np.int32)
    indices, valid = greedy_nms(boxes, scores, max_output, threshold, groups=groups)
    got = np.asarray(indices)[0][np.asarray(valid)[0]]
    kept = []
    for g in range(4):
        masked = np.where(groups[0] == g, scores[0], -np.inf).astype(np.float32)
        idx, ok = _tf_nms(boxes[0], masked, max_output, threshold)
        kept += list(idx[ok])
    want = sorted(kept, key=lambda i: -scores[0, i])[:max_output]
    np.testing.assert_array_equal(got, want)
    assert len(got) == max_output


def test_all_scores_masked_gives_no_output():
    boxes = np.zeros((1, 4, 4), np.float32)
    scores = np.full((1, 4), -np.inf, np.float32)
    indices, valid = greedy_nms(boxes, scores, 5, 0.5)
    assert not np.asarray(valid).any() and not np.asarray(indices).any()
