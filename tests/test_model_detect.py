"""detect(): any number of images of any sizes, batching, threads, bad input."""
import threading

import keras
import numpy as np
import pytest

from _model_helpers import matched_share, small_config, unsaturate
from mrcnn.modeling.maskrcnn import ImageInputError, MaskRCNN


def _images(sizes, seed=0):
    rng = np.random.RandomState(seed)
    out = []
    for h, w in sizes:
        image = rng.randint(0, 255, (h, w, 3)).astype(np.uint8)
        image[h // 4: h // 2, w // 4: w // 2] = (250, 30, 30)
        out.append(image)
    return out


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    keras.utils.set_random_seed(1)
    config = small_config(IMAGES_PER_GPU=2, DETECTION_MIN_CONFIDENCE=0.0)
    return unsaturate(MaskRCNN("inference", config, str(tmp_path_factory.mktemp("logs"))))


def _assert_same(a, b, share=1.0):
    """Same detections as sets (order may differ between tied scores).

    With ``share < 1`` a few may differ: another batch size changes conv
    blocking and so the last bits, and with random weights some proposals touch
    the image border, where crop_and_resize's last sample falls either on the
    edge pixel or just outside it (zero) depending on those bits.
    """
    assert abs(len(a["class_ids"]) - len(b["class_ids"])) <= (1 - share) * len(a["class_ids"]) + 1e-9
    assert matched_share(a, b) >= share and matched_share(b, a) >= share


def _check_result(r, image):
    n = len(r["class_ids"])
    assert r["rois"].shape == (n, 4) and r["rois"].dtype == np.int32
    assert r["class_ids"].dtype == np.int32 and r["scores"].shape == (n,)
    assert r["masks"].shape == image.shape[:2] + (n,) and r["masks"].dtype == bool
    if n:
        assert (r["rois"][:, 2] > r["rois"][:, 0]).all() and (r["rois"][:, 3] > r["rois"][:, 1]).all()
        assert (r["class_ids"] >= 1).all() and (r["class_ids"] < 4).all()
        assert np.all(np.diff(r["scores"]) <= 1e-6)  # sorted by score


@pytest.mark.parametrize("count", [1, 3, 5])
def test_detect_any_number_of_sizes(model, count):
    sizes = [(100, 150), (128, 128), (60, 200), (300, 90), (128, 50)][:count]
    images = _images(sizes, seed=count)
    results = model.detect(images)
    assert len(results) == count
    for r, image in zip(results, images):
        _check_result(r, image)
    assert sum(len(r["class_ids"]) for r in results) > 0
    if count > 1:
        # Batched results equal one-image calls (the last batch of 5 has one image).
        for r, image in zip(results, images):
            _assert_same(r, model.detect([image])[0], share=0.9)


def test_pad64_mode_groups_images_by_molded_shape(tmp_path):
    config = small_config(IMAGES_PER_GPU=2, IMAGE_RESIZE_MODE="pad64", IMAGE_MIN_DIM=64,
                          DETECTION_MIN_CONFIDENCE=0.0)
    model = unsaturate(MaskRCNN("inference", config, str(tmp_path)))
    images = _images([(70, 130), (64, 64), (70, 130)])
    results = model.detect(images)
    for r, image in zip(results, images):
        _check_result(r, image)
        _assert_same(r, model.detect([image])[0], share=0.9)
    with pytest.raises(ImageInputError, match="different shapes"):
        model.mold_inputs(images)


def test_threads_agree_with_single_call(model):
    images = _images([(90, 120)], seed=7)
    expected = model.detect(images)[0]
    results, errors = [None] * 8, []

    def work(i):
        try:
            results[i] = model.detect(images)[0]
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        _assert_same(r, expected)


def test_bad_images_raise_naming_the_image(model):
    good = _images([(50, 50)])[0]
    # grey and RGBA images are converted as Dataset.load_image does (issue 15);
    # shapes that are no image still raise
    with pytest.raises(ImageInputError, match="image 1: expected an image of shape"):
        model.detect([good, good[np.newaxis]])
    with pytest.raises(ImageInputError, match="image 0: expected an image of shape"):
        model.detect([np.zeros((20, 20, 5), np.uint8)])
    with pytest.raises(ImageInputError, match="wrap it in a list"):
        model.detect(good)
    with pytest.raises(ImageInputError, match="image 0: empty"):
        model.detect([np.zeros((0, 10, 3), np.uint8)])
    assert model.detect([]) == []


def test_unmold_detections_with_no_detections(model):
    config = model.config
    detections = np.zeros((config.DETECTION_MAX_INSTANCES, 6), np.float32)
    masks = np.zeros((config.DETECTION_MAX_INSTANCES, 28, 28, config.NUM_CLASSES), np.float32)
    boxes, class_ids, scores, full = model.unmold_detections(
        detections, masks, (90, 100, 3), (128, 128, 3), np.array([13, 0, 115, 128]))
    assert boxes.shape == (0, 4) and class_ids.shape == (0,) and scores.shape == (0,)
    assert full.shape == (90, 100, 0) and full.dtype == bool


def test_detect_molded_returns_molded_pixel_boxes(model):
    images = _images([(128, 128), (128, 128)])
    molded, metas, _ = model.mold_inputs(images)
    via_molded = model.detect_molded(molded, metas)
    # A 128x128 image molds to itself, so both paths agree.
    for a, b in zip(via_molded, model.detect(images)):
        _assert_same(a, b)  # same batch, same numbers


def _tiny_backbone(input_image, stage5=True, train_bn=False):
    """A callable BACKBONE: strided convolutions giving C1..C5 at strides 2..32."""
    from keras import layers as KL
    x, feats = input_image, []
    for i, filters in enumerate([8, 16, 16, 32, 32]):
        x = KL.Conv2D(filters, 3, strides=2, padding="same", activation="relu",
                      name=f"tiny_conv{i + 1}")(x)
        feats.append(x)
    return feats


def _tiny_shapes(image_shape):
    return np.array([[int(np.ceil(image_shape[0] / s)), int(np.ceil(image_shape[1] / s))]
                     for s in (4, 8, 16, 32, 64)])


def test_callable_backbone(tmp_path):
    config = small_config(IMAGES_PER_GPU=1, DETECTION_MIN_CONFIDENCE=0.0,
                          BACKBONE=staticmethod(_tiny_backbone),
                          COMPUTE_BACKBONE_SHAPE=staticmethod(_tiny_shapes))
    model = MaskRCNN("inference", config, str(tmp_path))
    names = {l.name for l in model.keras_model.layers}
    assert "tiny_conv5" in names and "res2a_branch2a" not in names
    image = _images([(100, 120)])[0]
    _check_result(model.detect([image])[0], image)
    training = MaskRCNN("training", config, str(tmp_path))
    assert training.keras_model.get_layer("tiny_conv1") is not None
