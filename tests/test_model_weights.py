"""MaskRCNN.load_weights / save_weights on whole models: exclude, wrong backbone, round trip."""
import h5py
import numpy as np
import pytest

from _model_helpers import HEAD_LAYERS, REF_H5, make_config
from mrcnn.modeling.maskrcnn import MaskRCNN
from mrcnn.modeling.weights import WeightsFileError, WeightsMismatchError

SMALL = dict(IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128, RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128),
             POST_NMS_ROIS_INFERENCE=50, DETECTION_MAX_INSTANCES=10)


def _h5_values(layer_name):
    with h5py.File(REF_H5, "r") as f:
        g = f[layer_name]
        return [g[n][()] for n in g.attrs["weight_names"]]


def test_exclude_heads_into_three_class_model(tmp_path):
    model = MaskRCNN("inference", make_config(NUM_CLASSES=3, **SMALL), str(tmp_path))
    km = model.keras_model
    fresh_logits = km.get_layer("mrcnn_class_logits").get_weights()[0].copy()
    with pytest.raises(WeightsMismatchError, match="mrcnn_class_logits"):
        model.load_weights(REF_H5, by_name=True)
    report = model.load_weights(REF_H5, by_name=True, exclude=HEAD_LAYERS)
    assert sorted(report.excluded) == sorted(HEAD_LAYERS)
    assert len(report.loaded) == 131 - 3  # mrcnn_bbox has no weights
    assert not (report.missing_in_file or report.unused_in_file or report.mismatched)
    for name, got in [("res3b_branch2b", km.get_layer("res3b_branch2b").get_weights()),
                      ("mrcnn_mask_bn2", km.get_layer("mrcnn_mask_bn2").get_weights()),
                      ("rpn_model", km.get_layer("rpn_model").get_weights())]:
        for a, b in zip(got, _h5_values(name)):
            np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(km.get_layer("mrcnn_class_logits").get_weights()[0], fresh_logits)
    assert "excluded (4)" in report.summary()


def test_resnet101_model_rejects_resnet50_file(tmp_path):
    model = MaskRCNN("inference", make_config(BACKBONE="resnet101", **SMALL), str(tmp_path))
    with pytest.raises(WeightsMismatchError, match=r"different architecture.*res4g"):
        model.load_weights(REF_H5, by_name=True)
    with pytest.raises(WeightsMismatchError, match="BACKBONE"):
        model.load_weights(REF_H5)


def test_non_h5_and_truncated_files(tmp_path):
    model = MaskRCNN("inference", make_config(**SMALL), str(tmp_path))
    bad = tmp_path / "mask_rcnn_coco.h5"
    bad.write_bytes(b"\x89PNG not really weights")
    with pytest.raises(WeightsFileError, match="mask_rcnn_coco.h5.*not an HDF5 file"):
        model.load_weights(str(bad), by_name=True)
    cut = tmp_path / "cut.h5"
    cut.write_bytes(open(REF_H5, "rb").read()[:4_000_000])
    with pytest.raises(WeightsFileError, match="cut.h5"):
        model.load_weights(str(cut), by_name=True)


def test_save_then_load_sets_epoch_from_checkpoint_name(tmp_path):
    model = MaskRCNN("inference", make_config(**SMALL), str(tmp_path))
    model.load_weights(REF_H5, by_name=True)
    path = tmp_path / "ref20240102T0304" / "mask_rcnn_ref_0007.h5"
    model.save_weights(str(path))
    other = MaskRCNN("inference", make_config(**SMALL), str(tmp_path))
    report = other.load_weights(str(path))
    assert len(report.loaded) == 131
    assert other.epoch == 7
    assert other.log_dir == str(tmp_path / "ref20240102T0304")
    assert other.find_last() == str(path)
    for a, b in zip(model.keras_model.weights, other.keras_model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # Keras-native files are handed to Keras.
    native = str(tmp_path / "native.weights.h5")
    model.save_weights(native)
    third = MaskRCNN("inference", make_config(**SMALL), str(tmp_path))
    assert third.load_weights(native).keras_native
    np.testing.assert_array_equal(third.keras_model.get_layer("conv1").get_weights()[0],
                                  model.keras_model.get_layer("conv1").get_weights()[0])


def test_find_last_without_logs_raises(tmp_path):
    model = MaskRCNN("inference", make_config(**SMALL), str(tmp_path / "none"))
    with pytest.raises(FileNotFoundError, match="ref"):
        model.find_last()


def test_backbone_only_file_loads_leniently_like_imagenet_weights(tmp_path):
    """The ImageNet ResNet-50 file has only res*/bn* layers; Matterport loads it
    by name even into resnet101 (stage-4 blocks g..w stay random)."""
    import keras
    from keras import layers as KL

    from mrcnn.modeling.backbone import resnet_graph
    from mrcnn.modeling.weights import save_weights

    image = KL.Input(shape=[None, None, 3])
    backbone = keras.Model(image, resnet_graph(image, "resnet50", stage5=True, train_bn=False)[4])
    path = save_weights(backbone, str(tmp_path / "resnet50_notop.h5"))
    model = MaskRCNN("inference", make_config(BACKBONE="resnet101", **SMALL), str(tmp_path))
    report = model.load_weights(path, by_name=True)
    assert len(report.loaded) == 106  # 53 convolutions + 53 batch norms
    assert "res4g_branch2a" in report.missing_in_file and "fpn_p2" in report.missing_in_file
    np.testing.assert_array_equal(model.keras_model.get_layer("res4f_branch2c").get_weights()[0],
                                  backbone.get_layer("res4f_branch2c").get_weights()[0])
    with pytest.raises(WeightsMismatchError, match="different architecture"):
        model.load_weights(path, by_name=True, strict=True)
