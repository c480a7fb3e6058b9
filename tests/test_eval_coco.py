"""COCO evaluation on the real COCO mini sample (6 val2017 images, one crowd RLE)."""
import contextlib
import copy
import io
import os
import types

import numpy as np
import pytest
from pycocotools import mask as mask_api
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from helpers import DATA
from mrcnn.evaluation import coco as ce

ANN = os.path.join(DATA, "coco_val2017_mini", "annotations.json")


@pytest.fixture(scope="module")
def coco_gt():
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(ANN)


@pytest.fixture(scope="module")
def class_map(coco_gt):
    """internal class id (1..80, 0 = BG) -> COCO category id, like Matterport's CocoDataset."""
    return {i + 1: c for i, c in enumerate(sorted(coco_gt.getCatIds()))}


@pytest.fixture(scope="module")
def gt_instances(coco_gt, class_map):
    """Per COCO image id: non-crowd GT as (boxes y1x1y2x2, internal class ids, [H,W,N] masks)."""
    inverse = {v: k for k, v in class_map.items()}
    out = {}
    for img_id in coco_gt.getImgIds():
        info = coco_gt.imgs[img_id]
        anns = coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=[img_id], iscrowd=False))
        masks = np.zeros((info["height"], info["width"], len(anns)), bool)
        boxes = np.zeros((len(anns), 4))
        for i, a in enumerate(anns):
            masks[..., i] = coco_gt.annToMask(a) > 0
            x, y, w, h = a["bbox"]
            boxes[i] = [y, x, y + h, x + w]
        ids = np.array([inverse[a["category_id"]] for a in anns], int)
        out[img_id] = (boxes, ids, masks)
    return out


def _results(gt_instances, class_map, transform=None):
    results = []
    for img_id, (boxes, ids, masks) in gt_instances.items():
        if transform:
            boxes, ids, masks = transform(boxes, ids, masks)
        scores = np.linspace(1.0, 0.5, len(ids)) if len(ids) else np.zeros(0)
        results += ce.build_coco_results(class_map, [img_id], boxes, ids, scores, masks)
    return results


def _quiet(fn, *a, **k):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*a, **k)


def test_sample_is_what_source_md_says(coco_gt, gt_instances):
    assert len(coco_gt.getImgIds()) == 6 and len(coco_gt.getAnnIds()) == 36
    assert len(coco_gt.getAnnIds(iscrowd=True)) == 1
    assert gt_instances[89][1].size == 0  # image without annotations


def test_encode_masks_round_trips_and_is_json_ready():
    m = np.zeros((7, 5, 2), bool)
    m[1:4, 2:5, 0] = True
    m[6, 0, 1] = True
    rles = ce.encode_masks(m)
    assert [r["size"] for r in rles] == [[7, 5], [7, 5]]
    assert all(isinstance(r["counts"], str) for r in rles)
    back = mask_api.decode([dict(r, counts=r["counts"].encode()) for r in rles])
    np.testing.assert_array_equal(back.astype(bool), m)
    assert ce.encode_masks(np.zeros((3, 3, 0), bool)) == []
    with pytest.raises(ValueError, match=r"\[H, W, N\]"):
        ce.encode_masks(np.zeros((3, 3)))


def test_boxes_to_xywh():
    np.testing.assert_array_equal(ce.boxes_to_xywh(np.array([[10, 20, 40, 60]])), [[20, 10, 40, 30]])
    assert ce.boxes_to_xywh(np.zeros((0, 4))).shape == (0, 4)


def test_build_coco_results_maps_categories_through_dataset():
    ds = types.SimpleNamespace(get_source_class_id=lambda c, s: {1: 18, 2: 44}[c] if s == "coco" else 0)
    masks = np.zeros((4, 6, 2), bool)
    masks[0:2, 0:3, 0] = masks[2:4, 3:6, 1] = True
    res = ce.build_coco_results(ds, [1234], np.array([[0, 0, 2, 3], [2, 3, 4, 6]]),
                                np.array([2, 1]), np.array([0.9, 0.25]), masks)
    assert [r["category_id"] for r in res] == [44, 18]
    assert res[0]["bbox"] == [0.0, 0.0, 3.0, 2.0] and res[1]["bbox"] == [3.0, 2.0, 3.0, 2.0]
    assert res[1]["score"] == 0.25 and res[0]["image_id"] == 1234
    assert mask_api.area([dict(r["segmentation"]) for r in res]).tolist() == [6, 6]
    no_masks = ce.build_coco_results({1: 5}, [1], np.array([[0, 0, 1, 1]]), [1], [0.5])
    assert "segmentation" not in no_masks[0]
    with pytest.raises(ValueError, match=r"image \[7\]: 1 rois but 2 class ids"):
        ce.build_coco_results(None, [7], np.array([[0, 0, 1, 1]]), [1, 2], [0.5, 0.4])
    with pytest.raises(ValueError, match="class id 3 has no COCO category"):
        ce.build_coco_results({1: 5}, [1], np.array([[0, 0, 1, 1]]), [3], [0.5])


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_ground_truth_as_detections_scores_one(coco_gt, gt_instances, class_map, iou_type):
    results = _results(gt_instances, class_map)
    before = copy.deepcopy(results)
    stats = _quiet(ce.evaluate_coco, coco_gt, results, iou_type)
    assert results == before  # loadRes mutates its input; ours must not
    assert set(stats) == set(ce.STAT_NAMES)
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        # COCO averages 101 recall points, so a perfect score can be 1 - 1 ulp.
        assert stats[k] == pytest.approx(1.0, abs=1e-12), (k, stats)


def _perturb(boxes, ids, masks):
    """Drop every third instance and shift the rest by a size-dependent integer offset."""
    keep = np.arange(len(ids)) % 3 != 2
    boxes, ids, masks = boxes[keep], ids[keep], masks[..., keep]
    boxes = np.round(boxes)
    shifted = np.zeros_like(masks)
    for i in range(len(ids)):
        dy = int(max(1, (boxes[i, 2] - boxes[i, 0]) // 6))
        boxes[i, [0, 2]] += dy
        shifted[dy:, :, i] = masks[:-dy, :, i]
    return boxes, ids, shifted


def _direct_pycocotools(coco_gt, gt_instances, class_map, iou_type):
    """The same perturbed detections scored by pycocotools alone (no mrcnn code)."""
    anns = []
    for img_id, (boxes, ids, masks) in gt_instances.items():
        boxes, ids, masks = _perturb(boxes, ids, masks)
        scores = np.linspace(1.0, 0.5, len(ids)) if len(ids) else np.zeros(0)
        for i in range(len(ids)):
            y1, x1, y2, x2 = boxes[i]
            ann = {"image_id": img_id, "category_id": class_map[int(ids[i])], "score": float(scores[i])}
            if iou_type == "bbox":
                ann["bbox"] = [x1, y1, x2 - x1, y2 - y1]
            else:
                ann["segmentation"] = mask_api.encode(np.asfortranarray(masks[..., i].astype(np.uint8)))
            anns.append(ann)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(coco_gt, coco_gt.loadRes(anns), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev.stats


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_perturbed_detections_match_direct_pycocotools(coco_gt, gt_instances, class_map, iou_type):
    results = _results(gt_instances, class_map, _perturb)
    stats = _quiet(ce.evaluate_coco, coco_gt, results, iou_type)
    direct = _direct_pycocotools(coco_gt, gt_instances, class_map, iou_type)
    assert [stats[k] for k in ce.STAT_NAMES] == direct.tolist()
    assert 0.2 < stats["AP50"] < 1.0 and stats["AP"] < stats["AP50"]


def test_crowd_region_detection_is_ignored(coco_gt, gt_instances, class_map):
    crowd = coco_gt.loadAnns(coco_gt.getAnnIds(iscrowd=True))[0]
    img_id = crowd["image_id"]
    crowd_mask = coco_gt.annToMask(crowd).astype(bool)[..., None]
    x, y, w, h = crowd["bbox"]
    on_crowd = np.array([[y, x, y + h, x + w]])
    inverse = {v: k for k, v in class_map.items()}
    cls = np.array([inverse[crowd["category_id"]]])
    base = _results(gt_instances, class_map)

    def with_extra(box, mask):
        # A confident detection of the crowd's class, ranked above everything.
        return base + ce.build_coco_results(class_map, [img_id], box, cls, np.array([1.0]), mask)

    for iou_type in ("bbox", "segm"):
        stats = _quiet(ce.evaluate_coco, coco_gt, with_extra(on_crowd, crowd_mask), iou_type)
        assert stats["AP"] == pytest.approx(1.0, abs=1e-12), (iou_type, stats)
    # The same box and mask moved off the crowd is a false positive.
    off = np.zeros_like(crowd_mask)
    off[:int(h), :int(w), 0] = True
    stats = _quiet(ce.evaluate_coco, coco_gt, with_extra(np.array([[0, 0, int(h), int(w)]]), off), "segm")
    assert stats["AP"] < 0.995  # one extra FP in one class of eight


def test_image_ids_restrict_the_evaluation(coco_gt, gt_instances, class_map):
    only = {k: v for k, v in gt_instances.items() if k == 343934}
    results = _results(only, class_map)
    full = _quiet(ce.evaluate_coco, coco_gt, results, "bbox")
    restricted = _quiet(ce.evaluate_coco, coco_gt, results, "bbox", image_ids=[343934])
    assert restricted["AP"] == pytest.approx(1.0, abs=1e-12) and full["AP"] < 0.5
    assert restricted["APs"] == -1.0  # no small objects in that image: COCO's -1


def test_no_detections_scores_zero(coco_gt):
    stats = _quiet(ce.evaluate_coco, coco_gt, [], "segm")
    assert stats["AP"] == 0.0 and stats["AR100"] == 0.0


def test_bad_input_is_explained(coco_gt, gt_instances, class_map):
    with pytest.raises(ValueError, match="iou_type"):
        ce.evaluate_coco(coco_gt, [], "keypoints")
    with pytest.raises(ValueError, match=r"image ids \[5\] are not in the ground-truth"):
        ce.evaluate_coco(coco_gt, [], "bbox", image_ids=[5])
    with pytest.raises(ValueError, match=r"results refer to image ids \[5\]"):
        ce.evaluate_coco(coco_gt, [{"image_id": 5, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}])
    boxes_only = [{"image_id": 89, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}]
    with pytest.raises(ValueError, match="image 89: a result has no 'segmentation'"):
        ce.evaluate_coco(coco_gt, boxes_only, "segm")


def test_verbose_prints_the_summary(coco_gt, gt_instances, class_map, capsys):
    ce.evaluate_coco(coco_gt, _results(gt_instances, class_map), "bbox")
    out = capsys.readouterr().out
    assert "COCO bbox evaluation on 6 images" in out
    assert out.count("Average Precision") == 6 and out.count("Average Recall") == 6


def test_evaluate_model_coco_with_stub_model(coco_gt, gt_instances, class_map):
    ids = coco_gt.getImgIds()
    dataset = types.SimpleNamespace(
        image_ids=list(range(len(ids))),
        image_info=[{"id": i} for i in ids],
        load_image=lambda k: np.zeros(gt_instances[ids[k]][2].shape[:2] + (3,), np.uint8),
        get_source_class_id=lambda c, source: class_map[c])

    class Model:
        def __init__(self):
            self.seen = []

        def detect(self, images, verbose=0):
            img_id = ids[len(self.seen)]
            self.seen.append(img_id)
            boxes, cls, masks = gt_instances[img_id]
            return [{"rois": boxes, "class_ids": cls, "scores": np.ones(len(cls)), "masks": masks}]

    out = _quiet(ce.evaluate_model_coco, Model(), dataset, coco_gt, verbose=False)
    assert set(out) == {"bbox", "segm"}
    assert out["bbox"]["AP"] == pytest.approx(1.0, abs=1e-12)
    assert out["segm"]["AP"] == pytest.approx(1.0, abs=1e-12)
    limited = ce.evaluate_model_coco(Model(), dataset, coco_gt, iou_types=("segm",), limit=2,
                                     verbose=False)
    assert set(limited) == {"segm"} and limited["segm"]["AP"] == pytest.approx(1.0, abs=1e-12)


def test_evaluate_model_coco_with_real_coco_dataset(coco_gt):
    """The package's CocoDataset maps classes back through get_source_class_id and
    image_info ids; a model that 'detects' the dataset's own masks scores mask AP 1."""
    from mrcnn.core.boxes import extract_bboxes
    from mrcnn.data.formats.coco import CocoDataset

    dataset = CocoDataset()
    _quiet(dataset.load_coco, ANN, image_dir=os.path.join(os.path.dirname(ANN), "images"))
    dataset.prepare()
    assert len(dataset.image_ids) == 5  # image 89 has no annotations and is skipped

    class Model:
        def __init__(self):
            self.calls = 0

        def detect(self, images, verbose=0):
            masks, ids = dataset.load_mask(dataset.image_ids[self.calls])
            self.calls += 1
            keep = ids > 0  # crowds carry negative ids
            masks, ids = masks[..., keep], ids[keep]
            return [{"rois": extract_bboxes(masks), "class_ids": ids,
                     "scores": np.ones(len(ids)), "masks": masks}]

    out = ce.evaluate_model_coco(Model(), dataset, coco_gt, verbose=False)
    assert out["segm"]["AP"] == pytest.approx(1.0, abs=1e-12)
    # Boxes come from the masks (whole pixels), COCO's from the polygons: close, not equal.
    assert out["bbox"]["AP50"] == pytest.approx(1.0, abs=1e-12)
    assert 0.5 < out["bbox"]["AP"] <= 1.0


@pytest.mark.slow
def test_end_to_end_with_untrained_maskrcnn(coco_gt, tmp_path, capsys):
    """A real (randomly initialised) MaskRCNN through both evaluators, the
    weight-stats table and display_instances. Scores are meaningless; this
    checks that the pieces fit together on real images."""
    import matplotlib

    matplotlib.use("Agg")
    from _model_helpers import small_config
    from mrcnn import visualize
    from mrcnn.data.formats.coco import CocoDataset
    from mrcnn.evaluation import voc
    from mrcnn.model import MaskRCNN

    config = small_config(NUM_CLASSES=81, DETECTION_MIN_CONFIDENCE=0.0, GPU_COUNT=1, IMAGES_PER_GPU=1)
    dataset = CocoDataset()
    _quiet(dataset.load_coco, ANN, image_dir=os.path.join(os.path.dirname(ANN), "images"), limit=2)
    dataset.prepare()
    model = MaskRCNN(mode="inference", config=config, model_dir=str(tmp_path))

    out = ce.evaluate_model_coco(model, dataset, coco_gt, verbose=True)
    for stats in out.values():
        assert set(stats) == set(ce.STAT_NAMES)
        assert all(v == -1.0 or 0.0 <= v <= 1.0 for v in stats.values())
    assert "Prediction time" in capsys.readouterr().out
    ev = voc.evaluate_model(model, dataset, config, iou_thresholds=[0.5])
    assert ev.num_images == 2 and 0.0 <= ev.mAP <= 1.0

    rows = visualize.display_weight_stats(model)
    assert rows[0][0] == "WEIGHT NAME" and len(rows) > 100
    assert any(r[0].startswith("conv1/kernel") for r in rows)

    image = dataset.load_image(dataset.image_ids[0])
    r = model.detect([image])[0]
    path = tmp_path / "det.png"
    visualize.display_instances(image, r["rois"], r["masks"], r["class_ids"], dataset.class_names,
                                r["scores"], save_path=str(path))
    assert path.stat().st_size > 1000
