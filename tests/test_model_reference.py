"""End-to-end check against Matterport's outputs: ref_r50_256.h5 on the reference image.

Two kinds of checks (issue #3; tolerances from the fixture README):

* Stage by stage, each stage fed Matterport's own inputs taken from the fixture
  (its FPN maps, RPN outputs, proposals and detections). Every raw output is
  within 1e-4 absolute (rtol 0) on every element. The box layers
  (ProposalLayer, DetectionLayer) are bit-exact.
* End to end from the image: FPN/RPN to rtol/atol 1e-4, proposals and
  detection boxes to 1e-5 and 1 px. The heads are compared with what the
  reference heads give at *our* boxes (see the note below), again 1e-4 on
  every element. detect() gives the same classes, boxes within 1 px and mask IoU >= 0.99.

Why the heads are not compared directly with Matterport's end-to-end values at
1e-4. Measured here (TF 2.21 CPU, oneDNN on) for issue #3:

1. The backbone differs only in float32 summation order. fpn_p2 differs by up
   to 2.4e-4, on values up to 97. Against a float64 run of the same weights, our
   error is 2.3e-4 and Matterport's own is 6.4e-5. With TF_ENABLE_ONEDNN_OPTS=0
   our error drops to Matterport's level (8.5e-5 from it).
2. That noise reaches the boxes: rpn_bbox differs by 1.2e-4, which moves
   proposals by <= 6.9e-6 and detection boxes by <= 6.6e-6.
   ProposalLayer and DetectionLayer are bit-exact on Matterport's inputs.
3. ROIAlign samples the maps bilinearly, so the heads are steep in the box
   coordinates. Shrinking Matterport's own boxes by 1e-6 (4e-6) moves masks by
   4.4e-5 (1.7e-4) and logits by 5.5e-4 (2.2e-3). This is on rows away from
   level boundaries and the image edge. Rows whose level
   4 + round(log2(sqrt(hw) / (224 / 256))) sits on a rounding boundary can
   change level. Rows ending at y2 or x2 = 1 can flip crop_and_resize's last
   sample between the border value and the zero extrapolation. On those rows
   logits move by up to 2.6 and mrcnn_bbox by up to 4.5.
4. No float32 backbone can do better. With backbone, FPN and RPN in float64,
   proposals still differ from Matterport's by up to 4.5e-6, which is Matterport's
   own rounding. 42 of the 903 IoU-matched classifier rows then differ by more
   than 1e-4 (max 4.1e-4).
5. With the same boxes the heads agree. On Matterport's proposals and maps:
   logits 2.7e-5, bbox 3.9e-5, probabilities 7.5e-6, masks 3.8e-6. A float64
   head is 1.3e-5 from Matterport's logits and 2.5e-5 from ours, so this is
   float32 head noise. At our boxes, our maps versus Matterport's maps change
   the heads by <= 5e-5 (masks 6e-6).
So PyramidROIAlign (level choice, box order, crop_and_resize call) has no
semantic mismatch. It is also bit-exact on the model_graph_ops fixture
(tests/test_layers.py). The end-to-end chain is checked link by link instead.
"""
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from _model_helpers import REF_H5, REF_IMAGE, REF_OUTPUTS, make_config, read_png
from mrcnn.core.boxes import compute_overlaps
from mrcnn.modeling.introspection import resolve_output
from mrcnn.modeling.maskrcnn import MaskRCNN

TOL = dict(atol=1e-4, rtol=0)


@pytest.fixture(scope="module")
def ref():
    return np.load(REF_OUTPUTS)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    m = MaskRCNN("inference", make_config(), str(tmp_path_factory.mktemp("logs")))
    m.report = m.load_weights(REF_H5, by_name=True)
    return m


@pytest.fixture(scope="module")
def raw(model, ref):
    """Raw graph outputs for the fixture's own molded inputs."""
    names = ["mrcnn_detection", "mrcnn_class", "mrcnn_bbox", "mrcnn_mask", "ROI", "rpn_class",
             "rpn_bbox", "mrcnn_class_logits", "fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "fpn_p6"]
    anchors = ref["anchors"][None]
    inputs = [ref["molded_images"].astype(np.float32), ref["image_metas"].astype(np.float32),
              anchors]
    return model.get_intermediates(None, names, inputs=inputs)


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """Each stage of the inference graph as a model of its own inputs.

    A Keras sub-model that starts at intermediate tensors adds nodes to the
    layers it passes through. That would break name lookups on the shared
    `model`, so the stages get their own instance. All tensors are resolved
    before the first sub-model is built.
    """
    m = MaskRCNN("inference", make_config(), str(tmp_path_factory.mktemp("stage_logs")))
    m.load_weights(REF_H5, by_name=True)
    km = m.keras_model
    t = {n: resolve_output(km, n) for n in
         ["fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "fpn_p6", "rpn_class", "rpn_bbox", "ROI",
          "mrcnn_class_logits", "mrcnn_class", "mrcnn_bbox", "mrcnn_detection",
          "detection_boxes", "mrcnn_mask"]}
    image_meta, anchors = km.inputs[1], km.inputs[2]
    maps = [t["fpn_p2"], t["fpn_p3"], t["fpn_p4"], t["fpn_p5"]]
    sub = {
        "rpn": keras.Model(maps + [t["fpn_p6"]], [t["rpn_class"], t["rpn_bbox"]]),
        "proposals": keras.Model([t["rpn_class"], t["rpn_bbox"], anchors], t["ROI"]),
        "classifier": keras.Model([t["ROI"], image_meta] + maps,
                                  [t["mrcnn_class_logits"], t["mrcnn_class"], t["mrcnn_bbox"]]),
        "detection": keras.Model([t["ROI"], t["mrcnn_class"], t["mrcnn_bbox"], image_meta],
                                 t["mrcnn_detection"]),
        "mask": keras.Model([t["detection_boxes"], image_meta] + maps, t["mrcnn_mask"]),
    }

    def run(name):
        def call(*inputs):
            out = sub[name]([np.asarray(x) for x in inputs], training=False)
            if isinstance(out, (list, tuple)):
                return [np.asarray(o) for o in out]
            return np.asarray(out)
        return call
    return SimpleNamespace(**{name: run(name) for name in sub})


def _ref_maps(ref, levels=range(2, 6)):
    return [ref[f"fpn_p{i}"] for i in levels]


def _meta(ref):
    return ref["image_metas"].astype(np.float32)


def test_weights_load_completely(model):
    report = model.report
    assert len(report.loaded) == 131
    assert not (report.missing_in_file or report.unused_in_file or report.mismatched)


def test_inputs_match_fixture(model, ref):
    image = read_png(REF_IMAGE)
    np.testing.assert_array_equal(image, ref["input_image"])
    molded, metas, windows = model.mold_inputs([image])
    np.testing.assert_array_equal(molded, ref["molded_images"])
    np.testing.assert_array_equal(metas, ref["image_metas"])
    np.testing.assert_array_equal(windows, ref["windows"])
    np.testing.assert_array_equal(model.get_anchors(molded.shape[1:]), ref["anchors"])


# ----------------------------------------------------------- stages on Matterport's inputs

def test_rpn_head_on_reference_features(stages, ref):
    rpn_class, rpn_bbox = stages.rpn(*_ref_maps(ref, range(2, 7)))
    # Seen: 1.8e-5 and 8.8e-5 (rpn_bbox reaches 47.6). Against float64 the
    # rpn_bbox error is 7.6e-5 for us and 2.9e-5 for Matterport (oneDNN conv order).
    np.testing.assert_allclose(rpn_class, ref["rpn_class"], **TOL)
    # Conv accumulation error grows with the magnitude, so another CPU's kernels may need the
    # small relative term (1e-5 of 47.6 is 4.8e-4 on the largest values only).
    np.testing.assert_allclose(rpn_bbox, ref["rpn_bbox"], atol=1e-4, rtol=1e-5)


def test_proposals_on_reference_rpn_outputs(stages, ref):
    rois = stages.proposals(ref["rpn_class"], ref["rpn_bbox"], ref["anchors"][None])
    np.testing.assert_array_equal(rois, ref["rpn_rois"])


def test_classifier_head_on_reference_rois(stages, ref):
    """ROIAlign + classifier head on Matterport's proposals and maps, every row.

    This includes the 113 rows that the end-to-end comparison cannot pin down:
    61 zero-area rows, 2 at a level boundary and 51 on the bottom/right edge.
    """
    logits, probs, bbox = stages.classifier(ref["rpn_rois"], _meta(ref), *_ref_maps(ref))
    np.testing.assert_allclose(logits, ref["mrcnn_class_logits"], **TOL)  # seen 2.7e-5
    np.testing.assert_allclose(probs, ref["mrcnn_class"], **TOL)  # seen 7.5e-6
    np.testing.assert_allclose(bbox, ref["mrcnn_bbox"], **TOL)  # seen 3.9e-5


def test_detection_layer_on_reference_head_outputs(stages, ref):
    detections = stages.detection(ref["rpn_rois"], ref["mrcnn_class"], ref["mrcnn_bbox"],
                                  _meta(ref))
    np.testing.assert_array_equal(detections, ref["detections"])


def test_mask_head_on_reference_detections(stages, ref):
    assert (ref["detections"][0, :, 4] > 0).all()  # 100 real detections, no padding rows
    masks = stages.mask(ref["detections"][..., :4], _meta(ref), *_ref_maps(ref))
    np.testing.assert_allclose(masks, ref["mrcnn_mask"], **TOL)  # seen 3.8e-6


# ------------------------------------------------------------------ end to end from the image

@pytest.mark.parametrize("name", ["rpn_class", "rpn_bbox", "fpn_p2", "fpn_p3", "fpn_p4",
                                  "fpn_p5", "fpn_p6"])
def test_rpn_outputs(raw, ref, name):
    # Float32 backbone noise (module docstring, point 1): up to 2.4e-4 on |x| <= 97.
    np.testing.assert_allclose(raw[name], ref[name], rtol=1e-4, atol=1e-4)


def test_rpn_rois_match_by_iou(raw, ref):
    ours, theirs = raw["ROI"][0], ref["rpn_rois"][0]
    assert ours.shape == theirs.shape == (1000, 4)
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.nan_to_num(compute_overlaps(ours, theirs))
    best = iou.argmax(axis=1)
    matched = (iou.max(axis=1) > 0.99) | (np.abs(ours - theirs).max(axis=1) < 1e-5)
    assert matched.mean() > 0.99
    # Matched proposals differ only by the backbone noise (seen 6.9e-6). This
    # is the box difference the head comparisons below depend on.
    paired = np.where(iou.max(axis=1) > 0.99, best, np.arange(len(ours)))
    np.testing.assert_allclose(ours[matched], theirs[paired][matched], atol=2e-5, rtol=0)


def test_classifier_head(raw, ref, stages):
    """End-to-end heads match the heads run at the same proposals on Matterport's maps.

    Together with test_classifier_head_on_reference_rois and the proposal
    check above, this covers the whole chain at 1e-4. The one step left out is
    the steep response to box coordinates (module docstring, points 3-4).
    """
    logits, probs, bbox = stages.classifier(raw["ROI"], _meta(ref), *_ref_maps(ref))
    np.testing.assert_allclose(raw["mrcnn_class_logits"], logits, **TOL)  # seen 5.0e-5
    np.testing.assert_allclose(raw["mrcnn_class"], probs, **TOL)  # seen 1.0e-5
    np.testing.assert_allclose(raw["mrcnn_bbox"], bbox, **TOL)  # seen 4.5e-5


def test_detections_and_masks(raw, ref, stages):
    ours, theirs = raw["mrcnn_detection"][0], ref["detections"][0]
    np.testing.assert_array_equal(ours[:, 4], theirs[:, 4])
    np.testing.assert_allclose(ours[:, :4], theirs[:, :4], atol=1e-5)  # seen 6.6e-6
    np.testing.assert_allclose(ours[:, 5], theirs[:, 5], atol=1e-5)
    # The mask head at our boxes, on Matterport's maps (seen 6.2e-6). Against
    # Matterport's masks directly the difference is 3.5e-4. That comes from
    # the 6.6e-6 box difference (module docstring, point 3). The 19 rows whose
    # boxes match to 1e-7 agree to 4.3e-6.
    assert (ours[:, 4] > 0).all()
    masks = stages.mask(ours[None, :, :4], _meta(ref), *_ref_maps(ref))
    np.testing.assert_allclose(raw["mrcnn_mask"], masks, **TOL)


def test_detect_matches_matterport_detect(model, ref):
    image = read_png(REF_IMAGE)
    r = model.detect([image])[0]
    assert set(r) == {"rois", "class_ids", "scores", "masks"}
    assert r["rois"].dtype == np.int32 and r["class_ids"].dtype == np.int32
    assert r["masks"].dtype == bool and r["masks"].shape == (200, 300, len(r["class_ids"]))
    np.testing.assert_array_equal(r["class_ids"], ref["detect_class_ids"])
    assert np.abs(r["rois"] - ref["detect_rois"]).max() <= 1
    np.testing.assert_allclose(r["scores"], ref["detect_scores"], atol=1e-5)
    inter = (r["masks"] & ref["detect_masks"]).sum(axis=(0, 1))
    union = (r["masks"] | ref["detect_masks"]).sum(axis=(0, 1))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 1.0)
    assert iou.min() >= 0.99
    assert ref["detect_masks"].sum() > 1000  # the comparison is not vacuous
