"""The Matterport reference checks on Keras' JAX backend.

Keras fixes its backend at import, so this module runs in its own pytest
invocation (``KERAS_BACKEND=jax``, see .ci/run) and skips under TensorFlow.
The end-to-end reference tests of test_model_reference.py are imported and run
here unchanged (same tolerances: FPN/RPN 1e-4, proposals and boxes 1e-5, heads
1e-4, detect() same classes, boxes within 1 px, mask IoU >= 0.99). Its three
bit-exact stage tests have JAX versions below: XLA's ``exp``/``log`` and its
FMA contraction round differently from TensorFlow's CPU kernels (one ulp), so
the box layers agree to ~1e-7 instead of bit for bit.
"""
import threading

import keras
import numpy as np
import pytest

if keras.backend.backend() != "jax":
    pytest.skip("JAX backend checks: run with KERAS_BACKEND=jax (a separate pytest run, "
                "see .ci/run)", allow_module_level=True)

import tensorflow as tf  # noqa: E402  (the reference kernels run beside JAX)

from _model_helpers import REF_IMAGE, read_png  # noqa: E402
from helpers import load_cases  # noqa: E402
from mrcnn.modeling.detection import DetectionLayer  # noqa: E402
from mrcnn.modeling.proposal import ProposalLayer  # noqa: E402
from mrcnn.modeling.roi_align import crop_and_resize, roi_pyramid_level  # noqa: E402
# Fixtures and backend-neutral reference tests, collected here as tests of this module.
from test_model_reference import (TOL, _meta, _ref_maps, model, raw, ref, stages,  # noqa: E402,F401
                                  test_classifier_head, test_detect_matches_matterport_detect,
                                  test_detections_and_masks, test_inputs_match_fixture,
                                  test_mask_head_on_reference_detections,
                                  test_rpn_head_on_reference_features, test_rpn_outputs,
                                  test_rpn_rois_match_by_iou, test_weights_load_completely)

CASES = {c.name: c for c in load_cases("model_graph_ops")}


def test_backend_is_jax(model):
    import jax
    assert keras.backend.backend() == "jax"
    assert isinstance(model.keras_model.get_layer("fpn_p2").kernel.value, jax.Array)


# ------------------------------------------------ JAX versions of the bit-exact stage tests

def _assert_same_boxes(got, want, atol):
    """Same rows in the same order (zero padding included), coordinates within ``atol``."""
    np.testing.assert_array_equal((got == 0).all(-1), (want == 0).all(-1))
    np.testing.assert_allclose(got, want, rtol=0, atol=atol)


def test_proposals_on_reference_rpn_outputs(stages, ref):
    rois = stages.proposals(ref["rpn_class"], ref["rpn_bbox"], ref["anchors"][None])
    _assert_same_boxes(rois, ref["rpn_rois"], atol=1e-6)  # seen 1.2e-7


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("ProposalLayer")])
def test_proposal_layer_fixture_cases(name):
    a = CASES[name].args
    layer = ProposalLayer(a["proposal_count"], a["nms_threshold"], pre_nms_limit=a["PRE_NMS_LIMIT"],
                          rpn_bbox_std_dev=a["RPN_BBOX_STD_DEV"])
    got = np.asarray(layer([a["rpn_probs"], a["rpn_bbox"], a["anchors"]]))
    _assert_same_boxes(got, CASES[name].outputs["proposals"], atol=1e-6)


def _check_detections(got, want):
    np.testing.assert_array_equal(got[..., 4], want[..., 4])          # classes and padding
    np.testing.assert_array_equal(got[..., 5], want[..., 5])          # scores are gathered probs
    np.testing.assert_allclose(got[..., :4], want[..., :4], rtol=0, atol=1e-6)


def test_detection_layer_on_reference_head_outputs(stages, ref):
    detections = stages.detection(ref["rpn_rois"], ref["mrcnn_class"], ref["mrcnn_bbox"],
                                  _meta(ref))
    _check_detections(detections, ref["detections"])


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("DetectionLayer")])
def test_detection_layer_fixture_cases(name):
    # The class-aware single NMS pass of non-TF backends against Matterport's per-class NMS.
    a = CASES[name].args
    layer = DetectionLayer(detection_max_instances=a["DETECTION_MAX_INSTANCES"],
                           detection_min_confidence=a["DETECTION_MIN_CONFIDENCE"],
                           detection_nms_threshold=a["DETECTION_NMS_THRESHOLD"],
                           bbox_std_dev=a["BBOX_STD_DEV"])
    got = np.asarray(layer([a["rois"], a["mrcnn_class"], a["mrcnn_bbox"], a["image_meta"]]))
    _check_detections(got, CASES[name].outputs["detections"])


def test_classifier_head_on_reference_rois(stages, ref):
    """ROIAlign + classifier head on Matterport's proposals and maps.

    Every row within 1e-4 except rows whose pyramid level is decided by the last
    bit of ``log``: there JAX's log and TF's may round ``log2`` to neighbouring
    levels, and the row is pooled from another map (the fixture has 2 such rows).
    """
    logits, probs, bbox = stages.classifier(ref["rpn_rois"], _meta(ref), *_ref_maps(ref))
    boxes = ref["rpn_rois"]
    shape = _meta(ref)[:, 4:7]
    ours = np.asarray(roi_pyramid_level(boxes, shape))
    with tf.device("CPU"):
        h, w = boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]
        area = shape[:, 0:1] * shape[:, 1:2]
        tf_level = tf.math.log(tf.sqrt(h * w) / (224.0 / tf.sqrt(area))) / tf.math.log(2.0)
        tf_level = np.clip(np.nan_to_num(4 + np.round(tf_level.numpy()), nan=2.0), 2, 5)
    same = (ours == tf_level)[0]
    assert (~same).sum() <= 2
    for got, want in [(logits, "mrcnn_class_logits"), (probs, "mrcnn_class"), (bbox, "mrcnn_bbox")]:
        np.testing.assert_allclose(got[0][same], ref[want][0][same], **TOL)


# ------------------------------------------------------------------------- ROIAlign

@pytest.mark.parametrize("height,width", [(9, 13), (4, 7), (32, 32), (25, 28)])
def test_crop_and_resize_matches_tf_kernel(height, width):
    """Same sample positions as the TF kernel (same zero cells, boxes ending at 1
    included) without float64; values within XLA's FMA rounding."""
    import jax
    rng = np.random.default_rng(height * 100 + width)
    images = rng.standard_normal((3, height, width, 4)).astype(np.float32)
    normal = np.sort(rng.random((20, 2, 2)), axis=1).transpose(0, 2, 1).reshape(20, 4)
    special = [[0, 0, 1, 1], [0.5, 0.5, 1, 1], [0, 0, 0.5, 1], [0.3, 0.3, 0.3, 0.3], [0, 0, 0, 0]]
    boxes = np.concatenate([normal, rng.uniform(-0.4, 1.4, (20, 4)), special]).astype(np.float32)
    index = rng.integers(0, 3, len(boxes)).astype(np.int32)
    compiled = jax.jit(crop_and_resize, static_argnums=3)
    for crop in [(7, 7), (14, 14), (1, 1), (4, 1)]:
        want = tf.image.crop_and_resize(images, boxes, index, crop).numpy()
        for got in (crop_and_resize(images, boxes, index, crop), compiled(images, boxes, index, crop)):
            got = np.asarray(got)
            np.testing.assert_array_equal(got == 0, want == 0, err_msg=f"crop {crop}")
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-5, err_msg=f"crop {crop}")


# ------------------------------------------------------------------------- detect()

def test_detect_from_threads_and_after_reloading_weights(model, ref):
    image = read_png(REF_IMAGE)
    first = model.detect([image])[0]
    results = [None] * 4

    def run(i):
        results[i] = model.detect([image])[0]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(results))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        for key in ("rois", "class_ids", "scores", "masks"):
            np.testing.assert_array_equal(r[key], first[key])

    # The compiled function reads the weights at each call, not at its first trace.
    layer = model.keras_model.get_layer("mrcnn_class_logits").layer
    saved = [w.copy() for w in layer.get_weights()]
    try:
        layer.set_weights([np.zeros_like(w) for w in saved])
        assert len(model.detect([image])[0]["class_ids"]) == 0  # uniform scores: all background
    finally:
        layer.set_weights(saved)
    again = model.detect([image])[0]
    np.testing.assert_array_equal(again["class_ids"], ref["detect_class_ids"])
