"""load_image_gt, build_rpn_targets, detection targets and image meta against Matterport's fixtures."""
import numpy as np
import pytest

from helpers import FIXTURES, case_ids, load_cases
from mrcnn.core import image as I
from mrcnn.data import loader, targets
from mrcnn.data.dataset import Dataset
from samples.shapes.shapes import ShapesConfig

NPZ = np.load(f"{FIXTURES}/model_targets.npz")


class Pad64Config(ShapesConfig):
    IMAGE_RESIZE_MODE = "pad64"


CONFIGS = {"shapes128_square": ShapesConfig, "shapes128_pad64": Pad64Config}


class FixtureShapes(Dataset):
    """The 3-image shapes dataset the fixtures were made from, read back from the npz."""

    def __init__(self):
        super().__init__()
        for i, name in enumerate(["square", "circle", "triangle"], 1):
            self.add_class("shapes", i, name)
        for i in range(3):
            self.add_image("shapes", image_id=i, path=None)
        self.prepare()

    def load_image(self, image_id):
        return NPZ[f"dataset.image.{image_id}"]

    def load_mask(self, image_id):
        return NPZ[f"dataset.mask.{image_id}"].astype(bool), NPZ[f"dataset.class_ids.{image_id}"].astype(np.int32)


def _eq(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def _params(fn):
    cases = load_cases("model_targets", fn)
    assert cases
    return pytest.mark.parametrize("case", cases, ids=case_ids(cases))


@_params("model.load_image_gt")
def test_load_image_gt(case):
    cfg = CONFIGS[case.args["config"]]()
    out = loader.load_image_gt(FixtureShapes(), cfg, case.args["dataset_image_id"],
                               use_mini_mask=case.args["USE_MINI_MASK"])
    for got, key in zip(out, ["image", "image_meta", "gt_class_ids", "gt_boxes", "gt_masks"]):
        _eq(got, case.outputs[key])


@_params("model.parse_image_meta")
def test_parse_image_meta(case):
    got = I.parse_image_meta(case.args["meta"])
    for k, v in case.outputs.items():
        assert got[k].dtype == v.dtype
        _eq(got[k], v)


@_params("model.compose_image_meta")
def test_compose_image_meta(case):
    _eq(I.compose_image_meta(**case.args), case.outputs["meta"])


@_params("model.mold_image")
def test_mold_image(case):
    cfg = ShapesConfig()
    cfg.MEAN_PIXEL = case.args["MEAN_PIXEL"]
    _eq(I.mold_image(case.args["images"], cfg), case.outputs["molded"])


@_params("model.unmold_image")
def test_unmold_image(case):
    _eq(I.unmold_image(case.args["normalized_images"], ShapesConfig()), case.outputs["images"])


class _RpnCfg:
    def __init__(self, n, std):
        self.RPN_TRAIN_ANCHORS_PER_IMAGE = n
        self.RPN_BBOX_STD_DEV = std


@_params("model.build_rpn_targets")
def test_build_rpn_targets(case):
    a = case.args
    if "np_random_seed_before_call" in a:
        np.random.seed(a["np_random_seed_before_call"])
    match, bbox = targets.build_rpn_targets(a["image_shape"], a["anchors"], a["gt_class_ids"], a["gt_boxes"],
                                            _RpnCfg(a["RPN_TRAIN_ANCHORS_PER_IMAGE"], a["RPN_BBOX_STD_DEV"]))
    assert match.dtype == np.int32
    _eq(match, case.outputs["rpn_match"])
    _eq(bbox, case.outputs["rpn_bbox"])


@_params("model.generate_random_rois")
def test_generate_random_rois(case):
    a = dict(case.args)
    np.random.seed(a.pop("np_random_seed_before_call"))
    _eq(targets.generate_random_rois(**a), case.outputs["rois"])


@_params("model.build_detection_targets")
def test_build_detection_targets(case):
    a = dict(case.args)
    np.random.seed(a.pop("np_random_seed_before_call"))
    cfg = ShapesConfig()
    assert cfg.USE_MINI_MASK
    got = targets.build_detection_targets(a["rpn_rois"], a["gt_class_ids"], a["gt_boxes"], a["gt_masks"], cfg)
    for g, key in zip(got, ["rois", "roi_gt_class_ids", "bboxes", "masks"]):
        _eq(g, case.outputs[key])


def test_rpn_targets_without_instances_are_all_negative_or_neutral():
    cfg = ShapesConfig()
    anchors = NPZ["anchors.shapes128_square"]
    np.random.seed(0)
    match, bbox = targets.build_rpn_targets((128, 128, 3), anchors, np.zeros([0], np.int32),
                                            np.zeros([0, 4], np.int32), cfg)
    assert (match == 1).sum() == 0
    assert (match == -1).sum() == cfg.RPN_TRAIN_ANCHORS_PER_IMAGE
    assert not bbox.any()


def test_load_image_gt_rejects_mismatched_masks():
    class Bad(FixtureShapes):
        def load_mask(self, image_id):
            return np.zeros((10, 10, 2), bool), np.array([1, 2], np.int32)

    with pytest.raises(ValueError, match="image id 1"):
        loader.load_image_gt(Bad(), ShapesConfig(), 1)


def test_data_generator_batches_and_skips_empty(caplog):
    class WithEmpty(FixtureShapes):
        def load_mask(self, image_id):
            if image_id == 1:
                return np.zeros((96, 160, 0), bool), np.zeros([0], np.int32)
            return super().load_mask(image_id)

    cfg = ShapesConfig()
    counter = loader.SkipCounter("test")
    gen = loader.data_generator(WithEmpty(), cfg, shuffle=False, batch_size=2, skip_counter=counter)
    inputs, outputs = next(gen)
    assert outputs == []
    images, meta, rpn_match, rpn_bbox, class_ids, boxes, masks = inputs
    assert images.shape == (2, 128, 128, 3) and images.dtype == np.float32
    assert list(meta[:, 0]) == [0, 2]  # image 1 skipped
    assert rpn_match.shape == (2, 4092, 1)
    assert class_ids.shape == (2, cfg.MAX_GT_INSTANCES)
    assert masks.shape == (2, 56, 56, cfg.MAX_GT_INSTANCES)
    assert counter.counts == {"no instances": 1}
    assert "skipped image id 1" in caplog.text
