"""Fast per-image path vs Matterport's load_image_gt / build_rpn_targets on real COCO images."""
import os

import numpy as np
import pytest

from helpers import DATA
from mrcnn.config import Config
from mrcnn.core.anchors import get_anchor_index, get_pixel_anchors
from mrcnn.core.image import mold_image
from mrcnn.data import fast, loader, targets
from mrcnn.data.formats.coco import CocoDataset

MINI = os.path.join(DATA, "coco_val2017_mini")


class DefaultConfig(Config):
    NAME = "coco_default"
    NUM_CLASSES = 81


@pytest.fixture(scope="module")
def coco():
    ds = CocoDataset()
    ds.load_coco(os.path.join(MINI, "annotations.json"), os.path.join(MINI, "images"))
    ds.prepare()
    return ds, DefaultConfig()


def test_fast_path_matches_matterport_on_coco(coco):
    ds, cfg = coco
    anchors = get_pixel_anchors(cfg, cfg.IMAGE_SHAPE)
    index = get_anchor_index(cfg, cfg.IMAGE_SHAPE)
    crowd_seen = 0
    for i in ds.image_ids:
        ref = loader.load_image_gt(ds, cfg, i)
        new = fast.load_image_gt_fast(ds, cfg, i)
        assert np.abs(ref[0].astype(int) - new[0].astype(int)).max() <= 1  # float32 lerp vs skimage
        np.testing.assert_array_equal(ref[1], new[1])
        np.testing.assert_array_equal(ref[2], new[2])
        np.testing.assert_array_equal(ref[3], new[3])
        np.testing.assert_array_equal(ref[4], new[4])  # mini masks: identical (IoU 1.0) on these images
        np.testing.assert_array_equal(mold_image(ref[0].astype(np.float32), cfg).astype(np.float32),
                                      fast.mold_image_fast(ref[0], cfg))
        crowd_seen += int(np.sum(ref[2] < 0))
        a = targets.build_rpn_targets(ref[0].shape, anchors, ref[2], ref[3], cfg, rng=np.random.RandomState(7))
        b = targets.build_rpn_targets(ref[0].shape, anchors, ref[2], ref[3], cfg, rng=np.random.RandomState(7),
                                      anchor_index=index)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert crowd_seen == 1  # the crowd branch of the sparse overlaps ran


def test_fast_image_resize_with_bright_border_within_one_level():
    from mrcnn.core.image import resize_image
    rng = np.random.RandomState(1)
    image = rng.randint(40, 256, (37, 29, 3)).astype(np.uint8)  # min > 0: skimage clips the border
    cfg = DefaultConfig()
    ref = resize_image(image, min_dim=cfg.IMAGE_MIN_DIM, max_dim=cfg.IMAGE_MAX_DIM, mode="square")
    new = fast.resize_image_fast(image, cfg)
    assert ref[1:4] == new[1:4]
    assert np.abs(ref[0].astype(int) - new[0].astype(int)).max() <= 1


def test_resize_crops_bilinear_matches_skimage():
    from mrcnn.core.image import resize
    from mrcnn.core.masks import resize_crops_bilinear
    rng = np.random.RandomState(0)
    for shape, out in (((7, 5), (56, 56)), ((300, 90), (56, 56)), ((3, 4, 3), (10, 7))):
        x = rng.rand(*shape)
        # skimage clips to the input's range (clip=True); the caller of resize_crops_bilinear does that.
        ours = np.clip(resize_crops_bilinear(x, out), x.min(), x.max())
        np.testing.assert_allclose(ours, resize(x, out), atol=1e-12)


@pytest.mark.slow
def test_fast_path_with_augmentation_matches_matterport_on_coco(coco):
    """Matterport's usual augmentation, imgaug and the albumentations equivalent, same seed: boxes,
    class ids and mini masks identical; the image within 2 grey levels (the resize's 1 level, scaled
    by Multiply up to 1.2 and spread by the rotation's interpolation)."""
    A = pytest.importorskip("albumentations")
    from mrcnn.data.augment import import_imgaug
    iaa = import_imgaug().augmenters
    ds, cfg = coco
    augs = [iaa.Sequential([iaa.Fliplr(0.5), iaa.Affine(rotate=(-10, 10)), iaa.Multiply((0.8, 1.2))]),
            A.Compose([A.HorizontalFlip(p=0.5), A.Affine(rotate=(-10, 10), p=1.0),
                       A.MultiplicativeNoise(multiplier=(0.8, 1.2), per_channel=False, elementwise=False, p=1.0)])]
    for aug in augs:
        for i in ds.image_ids:
            ref = loader.load_image_gt(ds, cfg, i, augmentation=aug, augment_seed=3 + i)
            new = fast.load_image_gt_fast(ds, cfg, i, augmentation=aug, augment_seed=3 + i)
            assert np.abs(ref[0].astype(int) - new[0].astype(int)).max() <= 2
            np.testing.assert_array_equal(ref[1], new[1])
            np.testing.assert_array_equal(ref[2], new[2])
            np.testing.assert_array_equal(ref[3], new[3])
            np.testing.assert_array_equal(ref[4], new[4])
