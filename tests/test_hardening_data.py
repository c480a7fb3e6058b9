"""Issue 15, data side: every wrong value a Dataset returns ends in a SampleError naming
the image (skipped and counted, or raised under STRICT_DATA_CHECKS). No model graph."""
import logging

import numpy as np
import pytest

from mrcnn.config import Config, ConfigError
from mrcnn.data.dataset import Dataset, to_rgb_uint8
from mrcnn.data.loader import SkipCounter, data_generator, load_image_gt
from mrcnn.data.validate import SampleError, check_dataset, check_image_array, check_sample


class Cfg(Config):
    NAME = "harden"
    NUM_CLASSES = 1 + 3
    IMAGES_PER_GPU = 1
    GPU_COUNT = 1
    IMAGE_MIN_DIM = 64
    IMAGE_MAX_DIM = 64
    RPN_ANCHOR_SCALES = (8, 16, 32, 64, 128)
    MAX_GT_INSTANCES = 4
    RPN_TRAIN_ANCHORS_PER_IMAGE = 32


class StrictCfg(Cfg):
    STRICT_DATA_CHECKS = True


def _image(h=20, w=30):
    return np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)


def _mask(h=20, w=30, n=2):
    m = np.zeros((h, w, n), bool)
    for i in range(n):
        m[2 + i:6 + i, 3:9 + i, i] = True
    return m


_DEFAULT = object()


def _check(image=_DEFAULT, mask=_DEFAULT, ids=_DEFAULT, config=None):
    image = _image() if image is _DEFAULT else image
    mask = _mask() if mask is _DEFAULT else mask
    ids = np.array([1, 3]) if ids is _DEFAULT else ids
    return check_sample(image, mask, ids, config or Cfg(), 7, "/data/img7.png")


# ---------------------------------------------------------------------------------------------
# check_sample: accepted forms and their exact normalisation
# ---------------------------------------------------------------------------------------------
def test_good_sample_is_returned_unchanged():
    image, mask, ids = _check()
    np.testing.assert_array_equal(image, _image())
    np.testing.assert_array_equal(mask, _mask())
    assert ids.dtype == np.int32 and ids.tolist() == [1, 3]


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32])
def test_zero_one_masks_of_any_number_type_become_bool(dtype):
    _, mask, _ = _check(mask=_mask().astype(dtype))
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask, _mask())


def test_crowd_ids_integral_floats_and_single_2d_mask():
    _, _, ids = _check(ids=np.array([-2.0, 3.0]))
    assert ids.tolist() == [-2, 3] and ids.dtype == np.int32
    _, mask, ids = _check(mask=_mask(n=1)[:, :, 0], ids=2)
    assert mask.shape == (20, 30, 1) and ids.tolist() == [2]


def test_grey_rgba_float_16bit_images_are_converted_like_load_image():
    grey = np.arange(600, dtype=np.uint8).reshape(20, 30)
    for image in (grey, grey[:, :, None], np.dstack([grey] * 3 + [grey * 0]), grey.astype(float),
                  grey / 255.0):
        out, _, _ = _check(image=image)
        np.testing.assert_array_equal(out, np.dstack([grey] * 3))
    g16 = np.full((20, 30), 1000, np.uint16)
    g16[0, 0] = 3000
    out, _, _ = _check(image=g16)
    np.testing.assert_array_equal(out, to_rgb_uint8(g16))
    assert out[0, 0, 0] == 255 and out[1, 1, 0] == 0


def test_no_instances_forms():
    for mask, ids in ((np.zeros((0, 0, 0), bool), np.zeros(0)), (np.zeros((20, 30, 0)), []),):
        _, m, i = _check(mask=mask, ids=ids)
        assert m.shape == (20, 30, 0) and m.dtype == bool and i.shape == (0,) and i.dtype == np.int32


def test_empty_instance_is_dropped_and_logged_or_raises_when_strict(caplog):
    mask = _mask(n=3)
    mask[:, :, 1] = False
    with caplog.at_level(logging.WARNING, "mrcnn.data"):
        _, m, ids = _check(mask=mask, ids=[1, 2, 3])
    assert ids.tolist() == [1, 3] and m.shape[-1] == 2
    np.testing.assert_array_equal(m, mask[:, :, [0, 2]])
    assert "image id 7 (/data/img7.png): dropped 1 instances with empty masks (indices [1])" in caplog.text
    with pytest.raises(SampleError, match=r"image id 7 \(/data/img7.png\): instances \[1\] have empty"):
        _check(mask=mask, ids=[1, 2, 3], config=StrictCfg())


# ---------------------------------------------------------------------------------------------
# check_sample: rejected forms, by category
# ---------------------------------------------------------------------------------------------
BAD_CLASS_IDS = {
    "id >= NUM_CLASSES": ([1, 4], r"class ids \[4\] are out of range: valid are 1\.\.3"),
    "huge id": ([1, 10 ** 6], r"class ids \[1000000\] are out of range"),
    "background id 0": ([0, 1], r"class ids \[0\] are out of range"),
    "crowd below -(N-1)": ([1, -4], r"class ids \[-4\] are out of range"),
    "int64 overflow": (np.array([1, 2 ** 40]), r"class ids out of range"),
    "fractional": ([1.5, 2], r"class ids must be integers"),
    "NaN": ([np.nan, 1], r"class ids must be integers"),
    "inf": ([np.inf, 1], r"class ids must be integers"),
    "strings": (["car", "dog"], r"class ids must be integers, got dtype <U3"),
    "object": (np.array([1, None], dtype=object), r"class ids must be integers, got dtype object"),
    "bool": (np.array([True, True]), r"class ids must be integers, got dtype bool"),
    "2-D": ([[1, 2]], r"class ids must be a 1-D array \[N\], got shape \(1, 2\)"),
    "None": (None, r"load_mask returned None as class ids"),
    "too many": ([1, 2, 3], r"2 masks but 3 class ids"),
    "too few": ([1], r"2 masks but 1 class ids"),
    "none for masks": ([], r"2 masks but 0 class ids"),
}


@pytest.mark.parametrize("case", sorted(BAD_CLASS_IDS))
def test_bad_class_ids_raise_naming_the_image(case):
    ids, message = BAD_CLASS_IDS[case]
    with pytest.raises(SampleError, match=r"^image id 7 \(/data/img7.png\): .*" + message):
        _check(ids=ids)


BAD_MASKS = {
    "label map values": (np.stack([np.arange(600).reshape(20, 30) % 5] * 2, -1),
                         r"masks must be bool or 0/1, found values \[2, 3, 4\]"),
    "0/255": (_mask().astype(np.uint8) * 255, r"found values \[255\]"),
    "negative": (-_mask().astype(int), r"found values \[-1\]"),
    "NaN": (np.where(_mask(), np.nan, 0.0), r"found values \[nan\]"),
    "0.5": (_mask() * 0.5, r"found values \[0.5\]"),
    "object": (_mask().astype(object), r"mask dtype object is not bool or numeric"),
    "strings": (np.full((20, 30, 2), "a"), r"mask dtype <U1 is not bool or numeric"),
    "transposed": (np.transpose(_mask(), (1, 0, 2)), r"mask size 30x20 differs from the image size 20x30"),
    "channels first": (np.transpose(_mask(), (2, 0, 1)), r"mask size 2x20 differs"),
    "4-D": (_mask()[None], r"masks must be \[H, W, N\], got shape \(1, 20, 30, 2\)"),
    "1-D": (np.zeros(5, bool), r"masks must be \[H, W, N\], got shape \(5,\)"),
    "scalar": (np.bool_(True), r"masks must be \[H, W, N\], got shape \(\)"),
    "None": (None, r"load_mask returned None as masks"),
    "2-D with 2 ids": (_mask()[:, :, 0], r"masks must be \[H, W, N\], got shape \(20, 30\) \(with 2"),
    "empty size": (np.zeros((0, 30, 2), bool), r"mask size 0x30 differs"),
}


@pytest.mark.parametrize("case", sorted(BAD_MASKS))
def test_bad_masks_raise_naming_the_image(case):
    mask, message = BAD_MASKS[case]
    with pytest.raises(SampleError, match=r"^image id 7 \(/data/img7.png\): .*" + message):
        _check(mask=mask)


BAD_IMAGES = {
    "NaN pixel": (np.where(np.eye(20, 30, dtype=bool)[..., None], np.nan, 1.0) * np.ones(3),
                  r"image has 60 non-finite values \(NaN or inf\) of 1800"),
    "inf pixel": (np.full((20, 30, 3), np.inf), r"image has 1800 non-finite values"),
    "None": (None, r"got None instead of an image array"),
    "object": (np.empty((20, 30, 3), object), r"image dtype object is not numeric"),
    "complex": (np.ones((20, 30, 3), complex), r"image dtype complex128 is not numeric"),
    "string": ("img.png", r"image dtype <U7 is not numeric \(.*got str\)"),
    "ragged list": ([[1, 2], [3]], r"cannot convert list to an array"),
    "1-D": (np.zeros(30, np.uint8), r"expected an image of shape \[H, W\] or \[H, W, C\], got shape \(30,\)"),
    "4-D": (np.zeros((1, 20, 30, 3), np.uint8), r"got shape \(1, 20, 30, 3\)"),
    "5 channels": (np.zeros((20, 30, 5), np.uint8), r"\[H, W, 1\.\.4\], got shape \(20, 30, 5\)"),
    "empty": (np.zeros((0, 30, 3), np.uint8), r"empty image of shape \(0, 30, 3\)"),
    "no channels": (np.zeros((20, 30, 0), np.uint8), r"empty image of shape \(20, 30, 0\)"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_bad_images_raise_naming_the_image(case):
    image, message = BAD_IMAGES[case]
    with pytest.raises(SampleError, match=r"^image id 7 \(/data/img7.png\): load_image returned a bad "
                                          r"image: .*" + message):
        _check(image=image)


def test_mask_size_is_checked_against_the_converted_image():
    # a grey [H, W] image is fine with [H, W, N] masks; a mask of another size is not
    _check(image=np.zeros((20, 30), np.uint8))
    with pytest.raises(SampleError, match="mask size 20x30 differs from the image size 21x30"):
        _check(image=np.zeros((21, 30), np.uint8))


def test_other_channel_counts_keep_values_and_need_that_many_channels():
    class FourChannels(Cfg):
        IMAGE_CHANNEL_COUNT = 4
        MEAN_PIXEL = np.array([1.0, 2.0, 3.0, 4.0])
    image = np.random.RandomState(0).rand(20, 30, 4).astype(np.float32) * 1000
    out, _, _ = _check(image=image, config=FourChannels())
    assert out is not None and out.dtype == np.float32
    np.testing.assert_array_equal(out, image)
    with pytest.raises(SampleError, match=r"expected an image of shape \[H, W, 4\], got shape \(20, 30, 3\)"):
        _check(image=_image(), config=FourChannels())
    grey = check_image_array(np.ones((5, 6)), channels=1)
    assert grey.shape == (5, 6, 1)


def test_check_dataset_class_count():
    ds = _Bad({})
    check_dataset(ds, Cfg())
    with pytest.raises(ValueError, match=r"train dataset has 4 classes .* config.NUM_CLASSES is 3"):
        check_dataset(ds, type("C", (Cfg,), {"NUM_CLASSES": 3})(), "train")
    with pytest.raises(ValueError, match="not prepared"):
        check_dataset(Dataset(), Cfg())


def test_config_attributes_are_validated():
    assert Config.STRICT_DATA_CHECKS is False and Config.CHECKPOINTS_KEEP is None
    for keep in (0, -1, 2.5, True, "3"):
        with pytest.raises(ConfigError, match="CHECKPOINTS_KEEP must be None"):
            type("C", (Cfg,), {"CHECKPOINTS_KEEP": keep})()
    with pytest.raises(ConfigError, match="STRICT_DATA_CHECKS must be True or False"):
        type("C", (Cfg,), {"STRICT_DATA_CHECKS": "yes"})()
    assert type("C", (Cfg,), {"CHECKPOINTS_KEEP": 2})().CHECKPOINTS_KEEP == 2


# ---------------------------------------------------------------------------------------------
# load_image_gt / data_generator with a user Dataset that returns bad values
# ---------------------------------------------------------------------------------------------
class _Bad(Dataset):
    """Images 0..5; ``bad`` maps an image id to (image, mask, class_ids) to return instead."""

    def __init__(self, bad):
        super().__init__()
        for c in (1, 2, 3):
            self.add_class("t", c, f"c{c}")
        for i in range(6):
            self.add_image("t", i, f"/data/img{i}.png")
        self.prepare()
        self.bad = bad

    def load_image(self, image_id):
        return self.bad[image_id][0] if image_id in self.bad else np.full((40, 40, 3), 90, np.uint8)

    def load_mask(self, image_id):
        if image_id in self.bad:
            return self.bad[image_id][1], self.bad[image_id][2]
        m = np.zeros((40, 40, 1), bool)
        m[5:20, 8:30] = True
        return m, np.array([2], np.int32)


def test_load_image_gt_raises_sample_error_naming_id_and_path():
    ds = _Bad({3: (np.zeros((40, 40, 3), np.uint8), _mask(40, 40, 1), np.array([9]))})
    with pytest.raises(SampleError, match=r"^image id 3 \(/data/img3.png\): class ids \[9\] are out of range"):
        load_image_gt(ds, Cfg(), 3)
    image, meta, ids, boxes, masks = load_image_gt(ds, Cfg(), 0, use_mini_mask=False)
    assert ids.tolist() == [2] and boxes.tolist() == [[8, 13, 32, 48]] and image.shape == (64, 64, 3)


def test_load_mask_returning_one_array_is_a_sample_error():
    class OneValue(_Bad):
        def load_mask(self, image_id):
            return np.zeros((40, 40, 1), bool)
    with pytest.raises(SampleError, match=r"image id 0 \(/data/img0.png\): load_mask must return "
                                          r"\(masks, class_ids\), got ndarray"):
        load_image_gt(OneValue({}), Cfg(), 0)


def test_data_generator_skips_and_counts_bad_samples_or_raises_when_strict():
    bad = {1: (np.full((40, 40, 3), np.nan), _mask(40, 40, 1), [1]),
           2: (np.zeros((40, 40, 3), np.uint8), _mask(40, 40, 2), [1])}
    ds = _Bad(bad)
    skips = SkipCounter("gen")
    gen = data_generator(ds, Cfg(), shuffle=False, batch_size=1, skip_counter=skips)
    seen = [int(next(gen)[0][1][0][0]) for _ in range(4)]  # image_meta[0] is the image id
    assert seen == [0, 3, 4, 5] and skips.counts == {"error": 2}
    gen = data_generator(ds, StrictCfg(), shuffle=False, batch_size=1)
    next(gen)
    with pytest.raises(SampleError, match=r"image id 1 \(/data/img1.png\): load_image returned a bad image: "
                                          r"image has 4800 non-finite values"):
        next(gen)


def test_augmentation_returning_nan_or_float_masks():
    ds = _Bad({})

    def nan_aug(image, mask):
        return image.astype(np.float32) * np.nan, mask
    with pytest.raises(SampleError, match=r"image id 0 \(/data/img0.png\): the augmentation returned an "
                                          r"image of dtype float32 with non-finite"):
        load_image_gt(ds, Cfg(), 0, augmentation=nan_aug)

    def float_mask_aug(image, mask):
        return image, mask.astype(np.float32) * 0.9
    _, _, ids, boxes, masks = load_image_gt(ds, Cfg(), 0, augmentation=float_mask_aug, use_mini_mask=False)
    assert masks.dtype == bool and ids.tolist() == [2] and boxes.tolist() == [[8, 13, 32, 48]]


def test_huge_finite_image_values_are_stretched_not_overflowed():
    image = np.zeros((20, 30, 3))
    image[0, 0] = 1e308
    image[1, 1] = -1e308
    out, _, _ = _check(image=image)
    assert out[0, 0, 0] == 255 and out[1, 1, 0] == 0 and out[2, 2, 0] == 128
