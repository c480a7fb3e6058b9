"""VOC-style evaluation: Matterport's per-image functions against the reference
fixtures (bit-exact), plus the dataset-level helpers on hand-made detections."""
import numpy as np
import pytest

from helpers import case_ids, load_cases
from mrcnn.evaluation import voc

MATCH_CASES = load_cases("utils_eval", "utils.compute_matches")
AP_CASES = load_cases("utils_eval", "utils.compute_ap")
RANGE_CASES = load_cases("utils_eval", "utils.compute_ap_range")
RECALL_CASES = load_cases("utils_eval", "utils.compute_recall")


def test_fixture_groups_are_present():
    assert len(MATCH_CASES) == 9 and len(AP_CASES) == 6
    assert len(RANGE_CASES) == 3 and len(RECALL_CASES) == 9


@pytest.mark.parametrize("case", MATCH_CASES, ids=case_ids(MATCH_CASES))
def test_compute_matches_matches_matterport(case):
    gt_match, pred_match, overlaps = voc.compute_matches(**case.args)
    np.testing.assert_array_equal(gt_match, case.outputs["gt_match"])
    np.testing.assert_array_equal(pred_match, case.outputs["pred_match"])
    assert overlaps.dtype == case.outputs["overlaps"].dtype
    np.testing.assert_array_equal(overlaps, case.outputs["overlaps"])


@pytest.mark.parametrize("case", AP_CASES, ids=case_ids(AP_CASES))
def test_compute_ap_matches_matterport(case):
    m_ap, precisions, recalls, overlaps = voc.compute_ap(**case.args)
    assert m_ap == case.outputs["mAP"]
    np.testing.assert_array_equal(precisions, case.outputs["precisions"])
    np.testing.assert_array_equal(recalls, case.outputs["recalls"])
    np.testing.assert_array_equal(overlaps, case.outputs["overlaps"])


@pytest.mark.parametrize("case", RANGE_CASES, ids=case_ids(RANGE_CASES))
def test_compute_ap_range_matches_matterport(case):
    # The fixture names the arguments gt_boxes...; Matterport's signature says
    # gt_box..., so pass them by position.
    assert voc.compute_ap_range(*_range_positional(case.args)) == case.outputs["AP"]


def _range_positional(args):
    keys = ["gt_boxes", "gt_class_ids", "gt_masks", "pred_boxes", "pred_class_ids",
            "pred_scores", "pred_masks", "iou_thresholds", "verbose"]
    return [args[k] for k in keys]


def test_compute_ap_range_accepts_numpy_thresholds_and_prints(capsys):
    args = _range_positional(RANGE_CASES[0].args)[:7]
    mean_ap = voc.compute_ap_range(*args, iou_thresholds=np.array([0.5, 0.75]), verbose=1)
    expected = [c.outputs["mAP"] for c in AP_CASES if c.name.startswith("compute_ap_case0")]
    assert mean_ap == pytest.approx(np.mean(expected))
    out = capsys.readouterr().out
    assert "AP @0.50:" in out and "AP @0.50-0.75:" in out


def test_compute_ap_range_rejects_empty_thresholds():
    with pytest.raises(ValueError, match="empty"):
        voc.compute_ap_range(*_range_positional(RANGE_CASES[0].args)[:7], iou_thresholds=[])


@pytest.mark.parametrize("case", RECALL_CASES, ids=case_ids(RECALL_CASES))
def test_compute_recall_matches_matterport(case):
    recall, positive_ids = voc.compute_recall(**case.args)
    assert recall == case.outputs["recall"]
    np.testing.assert_array_equal(positive_ids, case.outputs["positive_ids"])


def test_trim_zeros():
    x = np.array([[0, 0, 0, 0], [1, 2, 3, 4], [0, 0, 0, 0], [0, 0, 0, 1]])
    np.testing.assert_array_equal(voc.trim_zeros(x), x[[1, 3]])
    assert voc.trim_zeros(np.zeros((0, 4))).shape == (0, 4)
    with pytest.raises(ValueError, match="2-D"):
        voc.trim_zeros(np.zeros(4))


def test_zero_padded_rows_are_ignored():
    case = AP_CASES[0]
    a = case.args
    pad = lambda x, n: np.concatenate([x, np.zeros((n,) + x.shape[1:], x.dtype)])
    padded = dict(a, gt_boxes=pad(a["gt_boxes"], 2), gt_class_ids=pad(a["gt_class_ids"], 2),
                  gt_masks=np.concatenate([a["gt_masks"], np.zeros(a["gt_masks"].shape[:2] + (2,),
                                                                    a["gt_masks"].dtype)], -1))
    assert voc.compute_ap(**padded)[0] == case.outputs["mAP"]


def test_compute_matches_bad_input_is_explained():
    a = MATCH_CASES[0].args
    with pytest.raises(ValueError, match="pred: 7 boxes but 3 class ids"):
        voc.compute_matches(**dict(a, pred_class_ids=a["pred_class_ids"][:3]))
    with pytest.raises(ValueError, match=r"gt_masks must be \[H, W, N\]"):
        voc.compute_matches(**dict(a, gt_masks=a["gt_masks"][..., 0]))


def test_no_predictions_gives_zero_ap():
    a = AP_CASES[0].args
    ap, precisions, recalls, overlaps = voc.compute_ap(
        a["gt_boxes"], a["gt_class_ids"], a["gt_masks"], np.zeros((0, 4)), np.zeros(0, int),
        np.zeros(0), np.zeros(a["gt_masks"].shape[:2] + (0,)))
    assert ap == 0.0 and overlaps.shape == (0, 5)
    np.testing.assert_array_equal(recalls, [0, 1])


# --------------------------------------------------------------------------- dataset level

def _square_masks(boxes, shape=(40, 40)):
    masks = np.zeros(shape + (len(boxes),), bool)
    for i, (y1, x1, y2, x2) in enumerate(boxes):
        masks[y1:y2, x1:x2, i] = True
    return masks


def _image(gt_boxes, gt_ids, pred_boxes, pred_ids, scores):
    gt_boxes, pred_boxes = np.array(gt_boxes).reshape(-1, 4), np.array(pred_boxes).reshape(-1, 4)
    gt = (gt_boxes, np.array(gt_ids, int), _square_masks(gt_boxes))
    pred = {"rois": pred_boxes, "class_ids": np.array(pred_ids, int),
            "scores": np.array(scores, float), "masks": _square_masks(pred_boxes)}
    return gt, pred


def test_perfect_detections_give_ap_one_everywhere():
    images = [_image([[0, 0, 10, 10], [20, 20, 30, 35]], [1, 2], [[0, 0, 10, 10], [20, 20, 30, 35]],
                     [1, 2], [0.9, 0.8]),
              _image([[5, 5, 25, 25]], [2], [[5, 5, 25, 25]], [2], [0.7])]
    ev = voc.evaluate_dataset(images)
    assert ev.num_images == 2 and ev.mAP == 1.0 and ev.mAP_range == 1.0
    assert ev.class_ap == {1: 1.0, 2: 1.0} and ev.class_ap_range == {1: 1.0, 2: 1.0}
    assert len(ev.ap_per_threshold) == 10
    prec, rec = ev.curves["all"]
    assert rec[-2] == 1.0 and prec[1] == 1.0


def test_dataset_mean_equals_mean_of_per_image_fixture_aps():
    # Each fixture case as one image: the dataset mAP is the mean of compute_ap.
    items, expected = [], []
    for case in AP_CASES:
        if case.args["iou_threshold"] != 0.5:
            continue
        a = case.args
        items.append(voc.ImageResult(a["gt_boxes"], a["gt_class_ids"], a["gt_masks"],
                                     a["pred_boxes"], a["pred_class_ids"], a["pred_scores"],
                                     a["pred_masks"], case.name))
        expected.append(case.outputs["mAP"])
    ev = voc.evaluate_dataset(items, iou_thresholds=[0.5, 0.75])
    assert ev.mAP == np.mean(expected)  # bit-exact: same per-image APs, same mean
    assert set(ev.image_aps) == {c.name for c in AP_CASES if c.args["iou_threshold"] == 0.5}
    at75 = [c.outputs["mAP"] for c in AP_CASES if c.args["iou_threshold"] == 0.75]
    assert ev.ap_per_threshold[0.75] == pytest.approx(np.mean(at75))
    assert ev.mAP_range == pytest.approx((np.mean(expected) + np.mean(at75)) / 2)


def test_pooled_class_ap_by_hand():
    # class 1: GT in two images; predictions: TP (0.9), FP (0.8), TP (0.3) -> P/R steps
    # recall 0.5 @ precision 1, recall 1.0 @ precision 2/3 -> AP = 0.5*1 + 0.5*2/3.
    images = [_image([[0, 0, 10, 10]], [1], [[0, 0, 10, 10], [30, 30, 39, 39]], [1, 1], [0.9, 0.8]),
              _image([[10, 10, 20, 20]], [1], [[10, 10, 20, 20]], [1], [0.3])]
    ev = voc.evaluate_dataset(images, iou_thresholds=[0.5])
    assert ev.class_ap[1] == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert ev.class_mAP == ev.class_ap[1]
    # Per-image view: image 0 AP 1.0 (the FP ranks after the TP), image 1 AP 1.0.
    assert ev.mAP == 1.0
    prec, rec = ev.curves[1]
    np.testing.assert_allclose(rec, [0, 0.5, 0.5, 1, 1])
    np.testing.assert_allclose(prec, [1, 1, 2 / 3, 2 / 3, 0])


def test_confusion_matrix_and_frequent_class_map():
    # image 0: gt 1 found as class 2 (0.9), gt 2 found as 2 (0.8), a stray class-1 box (0.7),
    #          a low-score class-3 box (0.2, below the 0.5 cut: not counted);
    # image 1: gt 1 found as 1, gt 3 missed.
    images = [_image([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2],
                     [[0, 0, 10, 10], [20, 20, 30, 30], [32, 32, 39, 39], [0, 30, 8, 39]],
                     [2, 2, 1, 3], [0.9, 0.8, 0.7, 0.2]),
              _image([[5, 5, 15, 15], [25, 25, 35, 35]], [1, 3], [[5, 5, 15, 15]], [1], [0.6])]
    ev = voc.evaluate_dataset(images, iou_thresholds=[0.5], num_classes=4)
    expected = np.zeros((4, 4), int)
    expected[1, 2] = 1  # gt 1 -> predicted 2
    expected[2, 2] = 1
    expected[1, 1] = 1
    expected[0, 1] = 1  # stray detection
    expected[3, 0] = 1  # missed
    np.testing.assert_array_equal(ev.confusion, expected)
    assert ev.gt_counts == {1: 2, 2: 1, 3: 1}
    # class 1: detections 0.7 (FP), 0.6 (TP) over 2 gt -> AP 0.5 * 0.5; class 2: 0.9 (FP: on a
    # class-1 object), 0.8 (TP) over 1 gt -> 0.5; class 3: one FP, one gt -> 0.
    assert ev.class_ap[1] == pytest.approx(0.25)
    assert ev.class_ap[2] == pytest.approx(0.5) and ev.class_ap[3] == 0.0
    assert ev.mAP_over_classes(2) == pytest.approx(0.25)
    assert ev.mAP_over_classes(1) == pytest.approx((0.25 + 0.5 + 0.0) / 3)
    assert np.isnan(ev.mAP_over_classes(5))
    table = ev.confusion_table(["BG", "cat", "dog", "fox"])
    assert "gt \\ pred" in table and table.splitlines()[3].split() == ["cat", "0", "1", "1", "0"]
    assert "confusion" in ev.summary(["BG", "cat", "dog", "fox"])


def test_crowd_gt_and_empty_images():
    crowd = _image([[0, 0, 10, 10], [20, 20, 30, 30]], [-1, 1], [[20, 20, 30, 30]], [1], [0.5])
    empty = _image(np.zeros((0, 4), int), [], np.zeros((0, 4), int), [], [])
    only_fp = _image(np.zeros((0, 4), int), [], [[0, 0, 5, 5]], [2], [0.9])
    ev = voc.evaluate_dataset([crowd, empty, only_fp], iou_thresholds=[0.5])
    assert ev.num_images == 3
    assert list(ev.image_aps) == [0]  # images without GT have no per-image AP
    assert ev.class_ap[1] == 1.0
    assert np.isnan(ev.class_ap[2])  # a class with detections but no GT has no AP
    assert ev.class_mAP == 1.0  # ... and is left out of the class mean
    assert "class" in ev.summary(["BG", "one", "two"]) and "one" in ev.summary(["BG", "one", "two"])


def test_evaluate_dataset_reports_bad_images():
    gt, pred = _image([[0, 0, 10, 10]], [1], [[0, 0, 10, 10]], [1], [0.5])
    bad = dict(pred, scores=np.array([0.5, 0.4]))
    with pytest.raises(ValueError, match="image 7: 1 predicted boxes but 2 scores"):
        voc.evaluate_dataset([(gt, bad, 7)])
    with pytest.raises(ValueError, match="image 0: detections lacks key"):
        voc.evaluate_dataset([(gt, {"rois": pred["rois"]})])
    with pytest.raises(TypeError, match="image 0"):
        voc.evaluate_dataset([42])
    with pytest.raises(ValueError, match="empty"):
        voc.evaluate_dataset([(gt, pred)], iou_thresholds=[])


def test_evaluate_model_with_stub_model(monkeypatch):
    import sys
    import types

    gts = {0: _image([[0, 0, 10, 10]], [1], [[0, 0, 10, 10]], [1], [0.9]),
           1: _image([[5, 5, 15, 15]], [2], [[20, 20, 30, 30]], [2], [0.9])}

    def load_image_gt(dataset, config, image_id, augment=False, augmentation=None,
                      use_mini_mask=False):
        (boxes, ids, masks), _ = gts[image_id]
        return np.zeros((40, 40, 3), np.uint8), None, ids, boxes, masks

    class Model:
        calls = []

        def detect(self, images, verbose=0):
            self.calls.append(len(images))
            return [gts[len(self.calls) - 1][1]]

    fake = types.ModuleType("mrcnn.data.loader")
    fake.load_image_gt = load_image_gt
    monkeypatch.setitem(sys.modules, "mrcnn.data.loader", fake)
    ds = types.SimpleNamespace(image_ids=[0, 1])
    ev = voc.evaluate_model(Model(), ds, config=None, iou_thresholds=[0.5])
    assert ev.image_aps == {0: 1.0, 1: 0.0} and ev.mAP == 0.5


def test_evaluate_model_with_real_loader_and_coco_dataset():
    """evaluate_model uses the real load_image_gt (resized, crowds with negative ids)."""
    import contextlib
    import io
    import os

    from helpers import DATA
    from mrcnn.config import Config
    from mrcnn.data.formats.coco import CocoDataset
    from mrcnn.data.loader import load_image_gt

    class SmallConfig(Config):
        NAME = "eval_test"
        NUM_CLASSES = 81
        IMAGE_MIN_DIM = IMAGE_MAX_DIM = 256
        IMAGES_PER_GPU = 1

    config = SmallConfig()
    dataset = CocoDataset()
    with contextlib.redirect_stdout(io.StringIO()):
        root = os.path.join(DATA, "coco_val2017_mini")
        dataset.load_coco(os.path.join(root, "annotations.json"), image_dir=os.path.join(root, "images"))
    dataset.prepare()
    ids = list(dataset.image_ids[:3])

    class Model:  # detects the ground truth of the image it is given, plus one miss
        def __init__(self):
            self.k = 0

        def detect(self, images, verbose=0):
            assert images[0].shape == (256, 256, 3)
            _, _, cls, boxes, masks = load_image_gt(dataset, config, ids[self.k], use_mini_mask=False)
            self.k += 1
            keep = cls > 0
            return [{"rois": boxes[keep], "class_ids": cls[keep], "scores": np.linspace(1, 0.5, keep.sum()),
                     "masks": masks[..., keep]}]

    ev = voc.evaluate_model(Model(), dataset, config, image_ids=ids, iou_thresholds=[0.5, 0.75])
    assert ev.num_images == 3 and ev.mAP == 1.0 and ev.mAP_range == 1.0
    assert all(v == 1.0 for v in ev.class_ap.values())
