import numpy as np
import pytest

from mrcnn.config import Config, ConfigError


class ShapesConfig(Config):
    NAME = "shapes"
    NUM_CLASSES = 1 + 3
    IMAGE_MIN_DIM = 128
    IMAGE_MAX_DIM = 128
    GPU_COUNT = 1
    IMAGES_PER_GPU = 8


def test_matterport_defaults_and_derived_fields():
    class Coco(Config):
        NAME = "coco"
        NUM_CLASSES = 81
    c = Coco()
    assert c.BATCH_SIZE == 2
    assert c.IMAGE_SHAPE.tolist() == [1024, 1024, 3]
    assert c.IMAGE_META_SIZE == 93
    assert c.BACKBONE == "resnet101"
    assert c.RPN_ANCHOR_SCALES == (32, 64, 128, 256, 512)
    assert c.DETECTION_MIN_CONFIDENCE == 0.7
    assert c.TRAIN_BN is False
    np.testing.assert_array_equal(c.MEAN_PIXEL, [123.7, 116.8, 103.9])


def test_subclass_attributes_and_crop_shape():
    c = ShapesConfig()
    assert c.BATCH_SIZE == 8 and c.IMAGE_SHAPE.tolist() == [128, 128, 3]
    assert c.IMAGE_META_SIZE == 16

    class Crop(ShapesConfig):
        IMAGE_RESIZE_MODE = "crop"
        IMAGE_MIN_DIM = 64
    assert Crop().IMAGE_SHAPE.tolist() == [64, 64, 3]


@pytest.mark.parametrize("attrs, words", [
    ({"IMAGE_MAX_DIM": 100, "IMAGE_MIN_DIM": 100}, "divisible by 64"),
    ({"MEAN_PIXEL": np.array([1.0, 2.0])}, "MEAN_PIXEL"),
    ({"NUM_CLASSES": 1}, "NUM_CLASSES"),
    ({"IMAGE_RESIZE_MODE": "stretch"}, "IMAGE_RESIZE_MODE"),
    ({"BACKBONE": "vgg16"}, "BACKBONE"),
    ({"LOSS_WEIGHTS": {"rpn_class_loss": 1.0}}, "LOSS_WEIGHTS"),
    ({"IMAGES_PER_GPU": 0}, "IMAGES_PER_GPU"),
    ({"RPN_ANCHOR_SCALES": (32, 64)}, "RPN_ANCHOR_SCALES"),
])
def test_validation_errors_name_the_attribute(attrs, words):
    bad = type("Bad", (ShapesConfig,), attrs)
    with pytest.raises(ConfigError, match=words):
        bad()


def test_four_channel_config_is_valid():
    class Rgbd(ShapesConfig):
        IMAGE_CHANNEL_COUNT = 4
        MEAN_PIXEL = np.array([1.0, 2.0, 3.0, 4.0])
    assert Rgbd().IMAGE_SHAPE.tolist() == [128, 128, 4]


def test_dict_round_trip_and_unknown_key():
    c = ShapesConfig()
    d = c.to_dict()
    assert d["NAME"] == "shapes" and d["BATCH_SIZE"] == 8
    d["IMAGES_PER_GPU"] = 2
    c2 = ShapesConfig.from_dict(d)
    assert isinstance(c2, ShapesConfig)
    assert c2.BATCH_SIZE == 2  # derived fields are recomputed, not copied
    assert ShapesConfig.IMAGES_PER_GPU == 8  # the class itself is untouched
    np.testing.assert_array_equal(c2.MEAN_PIXEL, c.MEAN_PIXEL)
    assert isinstance(c2.RPN_ANCHOR_SCALES, tuple)
    with pytest.raises(ConfigError, match="IMAGE_MAX_DIMS"):
        ShapesConfig.from_dict({"IMAGE_MAX_DIMS": 256})


def test_json_and_display(capsys):
    c = ShapesConfig()
    assert '"NAME": "shapes"' in c.to_json()
    c.display()
    out = capsys.readouterr().out
    assert "IMAGE_META_SIZE                16" in out
    assert "NUM_CLASSES                    4" in out
