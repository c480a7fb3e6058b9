"""The compact from-scratch backbone and the RPN / mask-head width options (not in Matterport)."""
import numpy as np
import pytest
from keras import layers as KL

from _model_helpers import REF_H5, make_config, small_config
from mrcnn.config import Config, ConfigError
from mrcnn.modeling.compact import small_backbone, small_backbone_shapes
from mrcnn.modeling.weights import WeightsMismatchError


def test_small_backbone_strides_widths_and_shapes_agree():
    image = KL.Input(shape=[128, 192, 3])
    feats = small_backbone(image, widths=(8, 12, 16, 20, 24))
    assert [tuple(f.shape[1:]) for f in feats] == [
        (64, 96, 8), (32, 48, 12), (16, 24, 16), (8, 12, 20), (4, 6, 24)]
    # COMPUTE_BACKBONE_SHAPE gives P2..P6 (strides 4..64), rounding up like "same" padding.
    np.testing.assert_array_equal(small_backbone_shapes((128, 192, 3)),
                                  [[32, 48], [16, 24], [8, 12], [4, 6], [2, 3]])
    np.testing.assert_array_equal(small_backbone_shapes((100, 70)), [[25, 18], [13, 9], [7, 5], [4, 3], [2, 2]])
    with pytest.raises(ValueError, match="5 stage widths"):
        small_backbone(image, widths=(8, 16))


def _kernel(model, name):
    return tuple(model.keras_model.get_layer(name).get_weights()[0].shape)


def test_head_widths_follow_the_config(tmp_path):
    import mrcnn.model as modellib
    config = small_config(BACKBONE=staticmethod(small_backbone),
                          COMPUTE_BACKBONE_SHAPE=staticmethod(small_backbone_shapes),
                          RPN_CONV_CHANNELS=24, MASK_HEAD_CHANNELS=16, TOP_DOWN_PYRAMID_SIZE=32)
    for mode in ("training", "inference"):
        model = modellib.MaskRCNN(mode=mode, config=config, model_dir=str(tmp_path))
        rpn = model.keras_model.get_layer("rpn_model")
        assert rpn.get_layer("rpn_conv_shared").get_weights()[0].shape == (3, 3, 32, 24)
        assert rpn.get_layer("rpn_class_raw").get_weights()[0].shape == (1, 1, 24, 6)
        assert _kernel(model, "mrcnn_mask_conv1") == (3, 3, 32, 16)
        assert _kernel(model, "mrcnn_mask_conv4") == (3, 3, 16, 16)
        assert _kernel(model, "mrcnn_mask_deconv") == (2, 2, 16, 16)
        assert _kernel(model, "mrcnn_mask") == (1, 1, 16, config.NUM_CLASSES)
        assert model.keras_model.get_layer("small_c5_conv2").get_weights()[0].shape == (3, 3, 128, 128)


def test_defaults_are_matterports_and_bad_widths_are_refused():
    assert Config.RPN_CONV_CHANNELS == 512 and Config.MASK_HEAD_CHANNELS == 256
    for attr in ("RPN_CONV_CHANNELS", "MASK_HEAD_CHANNELS"):
        bad = type("Bad", (Config,), {"NAME": "bad", "NUM_CLASSES": 2, attr: 0})
        with pytest.raises(ConfigError, match=attr):
            bad()


def test_matterport_weights_refuse_a_narrow_rpn(tmp_path):
    import mrcnn.model as modellib
    model = modellib.MaskRCNN(mode="inference", config=make_config(RPN_CONV_CHANNELS=64),
                              model_dir=str(tmp_path))
    with pytest.raises(WeightsMismatchError, match=r"rpn_conv_shared/kernel.*\(3, 3, 256, 64\).*RPN_CONV_CHANNELS"):
        model.load_weights(REF_H5, by_name=True)


def test_compact_model_mixin_sets_the_profile_and_yields_to_overrides():
    from mrcnn.modeling.compact import CompactModel

    class Mine(CompactModel, Config):
        NAME = "mine"
        NUM_CLASSES = 3
        MASK_HEAD_CHANNELS = 32

    config = Mine()
    assert config.BACKBONE is small_backbone and config.COMPUTE_BACKBONE_SHAPE is small_backbone_shapes
    assert (config.RPN_CONV_CHANNELS, config.MASK_HEAD_CHANNELS, config.TOP_DOWN_PYRAMID_SIZE) == (64, 32, 64)
    again = Mine.from_dict(config.to_dict())
    assert again.BACKBONE is small_backbone and again.MASK_HEAD_CHANNELS == 32
    assert Config.RPN_CONV_CHANNELS == 512  # the mixin does not touch Config itself
