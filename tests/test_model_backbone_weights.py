"""Backbone, FPN, RPN and the h5 weight loader against the Matterport fixture."""
import os

import h5py
import keras
import numpy as np
import pytest
from keras import layers as KL

from _model_helpers import REF_H5, REF_OUTPUTS, make_config
from mrcnn.modeling.backbone import BatchNorm, build_backbone, resnet_graph
from mrcnn.modeling.rpn import build_rpn_model, rpn_outputs
from mrcnn.modeling.weights import (LoadReport, WeightsFileError, WeightsMismatchError,
                                    load_weights, save_weights)

OUT_NAMES = ["fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "fpn_p6", "rpn_class", "rpn_bbox"]


def backbone_rpn_model(config):
    image = KL.Input(shape=[None, None, 3], name="input_image")
    pyramid = build_backbone(image, config, train_bn=False)
    rpn = build_rpn_model(config.RPN_ANCHOR_STRIDE, len(config.RPN_ANCHOR_RATIOS),
                          config.TOP_DOWN_PYRAMID_SIZE)
    _, rpn_class, rpn_bbox = rpn_outputs(rpn, pyramid)
    return keras.Model(image, pyramid + [rpn_class, rpn_bbox])


@pytest.fixture(scope="module")
def ref():
    return np.load(REF_OUTPUTS)


@pytest.fixture(scope="module")
def model_r50():
    return backbone_rpn_model(make_config())


def test_layer_names_follow_matterport(model_r50):
    names = {l.name for l in model_r50.layers}
    for n in ["conv1", "bn_conv1", "res2a_branch2a", "bn2a_branch1", "res2c_out", "res3d_out",
              "res4f_out", "res5c_out", "fpn_c5p5", "fpn_p4add", "fpn_p5upsampled", "fpn_p6",
              "rpn_model", "rpn_class", "rpn_bbox"]:
        assert n in names, n
    assert "res4g_out" not in names


def test_ref_h5_backbone_and_rpn_match_fixture(model_r50, ref):
    report = load_weights(model_r50, REF_H5, by_name=True, strict=False)
    assert isinstance(report, LoadReport)
    # 53 conv + 53 BN in resnet50, 8 FPN convs, rpn_model.
    assert len(report.loaded) == 115
    assert not report.missing_in_file and not report.mismatched
    assert "mrcnn_mask" in report.unused_in_file
    outs = model_r50(ref["molded_images"].astype(np.float32), training=False)
    for name, out in zip(OUT_NAMES, outs):
        np.testing.assert_allclose(np.asarray(out), ref[name], rtol=1e-4, atol=1e-4, err_msg=name)


def test_frozen_batchnorm_ignores_outer_training_flag(model_r50, ref):
    """TRAIN_BN=False: BN layers use moving statistics even when training=True."""
    x = ref["molded_images"][:, :64, :64].astype(np.float32)
    a = model_r50(x, training=False)[0]
    b = model_r50(x, training=True)[0]
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_batchnorm_none_follows_learning_phase():
    x = np.random.RandomState(0).normal(3, 2, (4, 5, 5, 3)).astype(np.float32)
    inp = KL.Input((5, 5, 3))
    model = keras.Model(inp, BatchNorm(name="bn")(inp, training=None))
    assert model.get_layer("bn").epsilon == pytest.approx(1e-3)
    inf = np.asarray(model(x, training=False))
    train = np.asarray(model(x, training=True))
    np.testing.assert_allclose(inf, x / np.sqrt(1 + 1e-3), rtol=1e-5)
    assert abs(train.mean()) < 1e-4  # batch statistics normalise to zero mean


def test_resnet101_has_23_stage4_blocks():
    image = KL.Input(shape=[64, 64, 3])
    c = resnet_graph(image, "resnet101", stage5=False, train_bn=False)
    assert c[4] is None
    model = keras.Model(image, c[3])
    names = {l.name for l in model.layers}
    assert "res4w_out" in names and "res4x_out" not in names
    with pytest.raises(ValueError, match="resnet152"):
        resnet_graph(image, "resnet152")


def test_resnet50_file_into_resnet101_raises():
    model = backbone_rpn_model(make_config(BACKBONE="resnet101", IMAGE_MIN_DIM=64, IMAGE_MAX_DIM=64))
    before = model.get_layer("conv1").get_weights()[0].copy()
    with pytest.raises(WeightsMismatchError, match="different architecture"):
        load_weights(model, REF_H5, by_name=True, strict=True)
    with pytest.raises(WeightsMismatchError, match="layers with weights"):
        load_weights(model, REF_H5)  # topological
    # Nothing was assigned by the failed calls.
    np.testing.assert_array_equal(model.get_layer("conv1").get_weights()[0], before)


def test_bad_files_raise_clear_errors(tmp_path, model_r50):
    text = tmp_path / "weights.h5"
    text.write_text("<html>404 Not Found</html>")
    with pytest.raises(WeightsFileError, match="not an HDF5 file"):
        load_weights(model_r50, str(text), by_name=True)
    truncated = tmp_path / "truncated.h5"
    with open(REF_H5, "rb") as f:
        truncated.write_bytes(f.read(os.path.getsize(REF_H5) // 3))
    with pytest.raises(WeightsFileError, match="truncated"):
        load_weights(model_r50, str(truncated), by_name=True)
    with pytest.raises(WeightsFileError, match="does not exist"):
        load_weights(model_r50, str(tmp_path / "nope.h5"))
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightsFileError, match="not a Keras weights file"):
        load_weights(model_r50, str(other))


def test_save_weights_writes_matterport_layout_and_round_trips(tmp_path, model_r50):
    path = str(tmp_path / "sub" / "mask_rcnn_x_0001.h5")
    assert save_weights(model_r50, path) == path
    assert [p for p in os.listdir(tmp_path / "sub")] == ["mask_rcnn_x_0001.h5"]
    with h5py.File(path, "r") as f:
        assert f.attrs["backend"] in ("tensorflow", b"tensorflow")
        names = [n.decode() for n in f.attrs["layer_names"]]
        assert names == [l.name for l in model_r50.layers]
        assert [n.decode() for n in f["conv1"].attrs["weight_names"]] == [
            "conv1/kernel:0", "conv1/bias:0"]
        assert [n.decode() for n in f["bn_conv1"].attrs["weight_names"]] == [
            "bn_conv1/gamma:0", "bn_conv1/beta:0", "bn_conv1/moving_mean:0",
            "bn_conv1/moving_variance:0"]
        assert f["rpn_model"]["rpn_conv_shared/kernel:0"].shape == (3, 3, 256, 512)
    fresh = backbone_rpn_model(make_config())
    report = load_weights(fresh, path)  # topological, same architecture
    assert len(report.loaded) == 115
    for a, b in zip(fresh.weights, model_r50.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_anchors_variable_of_tf2_port_checkpoints_is_ignored(tmp_path, model_r50):
    """akTwelve-lineage training checkpoints hold an 'anchors' variable group."""
    path = str(tmp_path / "port.h5")
    save_weights(model_r50, path)
    with h5py.File(path, "a") as f:
        names = list(f.attrs["layer_names"]) + [b"anchors"]
        f.attrs["layer_names"] = np.array(names)
        g = f.create_group("anchors")
        g.attrs["weight_names"] = np.array([b"anchors/Variable:0"])
        g.create_dataset("anchors/Variable:0", data=np.zeros((1, 10, 4), np.float32))
    assert len(load_weights(model_r50, path).loaded) == 115
    report = load_weights(model_r50, path, by_name=True, strict=True)
    assert not report.unused_in_file
