"""Training graph: names, losses (empty GT, weighting, L2), set_trainable, one SGD step."""
import re

import numpy as np
import pytest

from _model_helpers import REF_H5, make_config, small_config, synthetic_batch
from mrcnn.config import LOSS_NAMES
from mrcnn.modeling.maskrcnn import LAYER_REGEX, MaskRCNN, TRAINING_OUTPUTS


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return MaskRCNN("training", small_config(IMAGES_PER_GPU=2),
                    str(tmp_path_factory.mktemp("logs")))


def test_graph_keeps_matterport_names(model):
    km = model.keras_model
    assert [t.name for t in km.inputs] == [
        "input_image", "input_image_meta", "input_rpn_match", "input_rpn_bbox",
        "input_gt_class_ids", "input_gt_boxes", "input_gt_masks"]
    assert len(km.outputs) == len(TRAINING_OUTPUTS) == 14
    for name in ["anchors", "ROI", "proposal_targets", "output_rois", "roi_align_classifier",
                 "roi_align_mask", "rpn_model", "mrcnn_class_logits", "mrcnn_mask"] + list(LOSS_NAMES):
        km.get_layer(name)
    # The anchors are a graph constant: no variable, so no decay and no gradient.
    assert not km.get_layer("anchors").weights


def _losses(model, batch):
    out = model.keras_model(batch, training=True)
    return {n: float(np.asarray(v)) for n, v in zip(LOSS_NAMES, out[-5:])}


def test_raw_uint8_inputs_are_molded_in_the_model(model):
    """The input pipeline's uint8 image and int8 anchor labels: molded on the device bit for bit
    as mold_image does, so the model computes what the molded float32/int32 batch gives."""
    import keras
    from mrcnn.core.image import mold_image
    from mrcnn.modeling.maskrcnn import mold_raw_inputs
    cfg = model.config
    batch = synthetic_batch(cfg, batch_size=2)
    raw_image = np.round(np.asarray(batch[0], np.float64) + cfg.MEAN_PIXEL).astype(np.uint8)
    np.testing.assert_array_equal(mold_image(raw_image, cfg).astype(np.float32), batch[0])
    raw = [raw_image, batch[1], np.asarray(batch[2]).astype(np.int8)] + list(batch[3:])
    tensors = [keras.ops.convert_to_tensor(x) for x in raw]
    got = mold_raw_inputs(tensors, cfg)
    assert isinstance(got, list) and len(got) == 7
    np.testing.assert_array_equal(np.asarray(got[0]), batch[0])
    assert keras.backend.standardize_dtype(got[2].dtype) == "int32"
    np.testing.assert_array_equal(np.asarray(got[2]), batch[2])
    assert all(g is t for g, t in zip(got[3:], tensors[3:]))
    # Every value 0..255 in every channel, and the dict form by input name.
    ramp = np.stack([np.arange(256, dtype=np.uint8)] * 3, axis=-1).reshape(1, 16, 16, 3)
    out = mold_raw_inputs({"input_image": keras.ops.convert_to_tensor(ramp)}, cfg)
    np.testing.assert_array_equal(np.asarray(out["input_image"]), mold_image(ramp, cfg).astype(np.float32))
    # Molded inputs (Matterport's data_generator) pass unchanged.
    molded = [keras.ops.convert_to_tensor(x) for x in batch]
    assert all(g is t for g, t in zip(mold_raw_inputs(molded, cfg), molded))
    # The RPN losses depend only on the image and the given labels: the same from either form.
    a, b = _losses(model, raw), _losses(model, batch)
    assert a["rpn_class_loss"] == b["rpn_class_loss"] and a["rpn_bbox_loss"] == b["rpn_bbox_loss"]
    with pytest.raises(ValueError, match="MEAN_PIXEL"):
        mold_raw_inputs([keras.ops.convert_to_tensor(np.zeros((1, 8, 8, 4), np.uint8))] + tensors[1:], cfg)


def test_empty_ground_truth_gives_zero_box_and_mask_losses(model):
    losses = _losses(model, synthetic_batch(model.config, batch_size=2, empty=True))
    assert all(np.isfinite(v) for v in losses.values()), losses
    assert losses["rpn_bbox_loss"] == 0.0
    assert losses["mrcnn_bbox_loss"] == 0.0
    assert losses["mrcnn_mask_loss"] == 0.0
    assert losses["rpn_class_loss"] > 0 and losses["mrcnn_class_loss"] > 0


def test_compute_loss_weights_terms_and_adds_l2(model):
    km = model.keras_model
    batch = synthetic_batch(model.config, batch_size=2)
    y_pred = km(batch, training=True)
    raw = {n: float(np.asarray(v)) for n, v in zip(LOSS_NAMES, y_pred[-5:])}
    terms = {n: float(v) for n, v in km.loss_terms(y_pred).items()}
    assert terms == pytest.approx(raw)
    decay = sum(model.config.WEIGHT_DECAY * np.sum(np.square(np.asarray(w))) / np.size(w)
                for w in km.trainable_weights if w.name not in ("gamma", "beta"))
    assert float(km.weight_decay()) == pytest.approx(decay, rel=1e-4)
    assert decay > 0
    total = float(km.compute_loss(y_pred=y_pred))
    assert total == pytest.approx(sum(raw.values()) + decay, rel=1e-5)
    # LOSS_WEIGHTS scales the term it names.
    weighted = MaskRCNN("training", small_config(LOSS_WEIGHTS=dict(
        rpn_class_loss=1., rpn_bbox_loss=1., mrcnn_class_loss=3., mrcnn_bbox_loss=1.,
        mrcnn_mask_loss=1.)), model.model_dir).keras_model
    scaled = weighted.loss_terms(y_pred)
    assert float(scaled["mrcnn_class_loss"]) == pytest.approx(3 * raw["mrcnn_class_loss"])


def test_set_trainable_presets(model):
    km = model.keras_model
    names = model.set_trainable("heads", verbose=0)
    assert names and all(re.fullmatch(LAYER_REGEX["heads"], n) for n in names)
    assert {"rpn_conv_shared", "fpn_p2", "mrcnn_class_conv1", "mrcnn_mask"} <= set(names)
    assert not km.get_layer("res5c_branch2c").trainable
    assert km.get_layer("mrcnn_class_conv1").layer.trainable
    heads_count = len(km.trainable_weights)
    names_4 = model.set_trainable("4+", verbose=0)
    assert "res4a_branch2a" in names_4 and "res3a_branch2a" not in names_4
    model.set_trainable("all", verbose=0)
    assert len(km.trainable_weights) > heads_count
    assert not km.get_layer("mrcnn_class_bn1").layer.trainable_weights == []


def test_training_model_loads_reference_h5_strictly(tmp_path):
    config = make_config(IMAGE_MIN_DIM=128, IMAGE_MAX_DIM=128,
                         RPN_ANCHOR_SCALES=(8, 16, 32, 64, 128))
    model = MaskRCNN("training", config, str(tmp_path))
    report = model.load_weights(REF_H5, by_name=True)
    assert len(report.loaded) == 131 and not report.missing_in_file


def test_compile_needs_training_mode(tmp_path):
    model = MaskRCNN("inference", small_config(IMAGES_PER_GPU=1), str(tmp_path))
    with pytest.raises(ValueError, match="training"):
        model.compile(0.01, 0.9)


def test_one_step_changes_every_head_layer(tmp_path):
    """With given ROIs around the GT (USE_RPN_ROIS=False) every head gets a gradient."""
    config = small_config(IMAGES_PER_GPU=1, USE_RPN_ROIS=False, LEARNING_RATE=0.01)
    model = MaskRCNN("training", config, str(tmp_path))
    km = model.keras_model
    assert km.inputs[-1].name == "input_roi"
    batch = synthetic_batch(config, batch_size=1)
    rng = np.random.RandomState(1)
    gt = batch[5][0][:2]
    rois = np.concatenate([gt + rng.randint(-3, 4, (20, 2, 4)) for _ in range(1)]).reshape(-1, 4)
    rand = np.sort(rng.randint(0, 128, (config.POST_NMS_ROIS_TRAINING - len(rois), 2, 2)), axis=1)
    rand = np.stack([rand[:, 0, 0], rand[:, 0, 1], rand[:, 1, 0] + 1, rand[:, 1, 1] + 1], axis=1)
    rois = np.clip(np.concatenate([rois, rand]), 0, 128).astype(np.int32)
    batch.append(rois[None])
    trainable = model.set_trainable("heads", verbose=0)
    model.compile(config.LEARNING_RATE, config.LEARNING_MOMENTUM)
    before = {l.name: [w.numpy().copy() for w in l.weights] for l in km.layers if l.weights}
    history = km.fit(batch, batch_size=1, epochs=1, verbose=0)
    for name in ("loss",) + tuple(LOSS_NAMES):
        assert np.isfinite(history.history[name][0]), name
    assert history.history["mrcnn_mask_loss"][0] > 0 and history.history["mrcnn_bbox_loss"][0] > 0
    for layer in km.layers:
        if not layer.weights:
            continue
        changed = any(not np.array_equal(a, np.asarray(b)) for a, b in
                      zip(before[layer.name], [w.numpy() for w in layer.weights]))
        if layer.name.startswith(("mrcnn_", "rpn_", "fpn_")):
            assert changed, f"{layer.name} did not change"
            assert layer.name in trainable or layer.name == "rpn_model"
        else:
            assert not changed, f"frozen layer {layer.name} changed"
