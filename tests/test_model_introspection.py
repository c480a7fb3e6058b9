"""get_intermediates / run_graph: layer outputs by name (Matterport's run_graph workflows)."""
import numpy as np
import pytest

from _model_helpers import small_config, synthetic_batch
from mrcnn.modeling.maskrcnn import MaskRCNN


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return MaskRCNN("inference", small_config(IMAGES_PER_GPU=1, DETECTION_MIN_CONFIDENCE=0.0),
                    str(tmp_path_factory.mktemp("logs")))


def _image():
    rng = np.random.RandomState(0)
    return rng.randint(0, 255, (96, 128, 3)).astype(np.uint8)


def test_named_layers_of_the_inference_graph(model):
    config = model.config
    out = model.get_intermediates([_image()], ["rpn_class", "ROI", "mrcnn_class", "res4f_out",
                                               "fpn_p2", "mrcnn_detection", "input_image"])
    assert list(out) == ["rpn_class", "ROI", "mrcnn_class", "res4f_out", "fpn_p2",
                         "mrcnn_detection", "input_image"]
    n_anchors = len(model.get_anchors(config.IMAGE_SHAPE))
    assert out["rpn_class"].shape == (1, n_anchors, 2)
    np.testing.assert_allclose(out["rpn_class"].sum(-1), 1.0, rtol=1e-5)
    assert out["ROI"].shape == (1, config.POST_NMS_ROIS_INFERENCE, 4)
    assert out["mrcnn_class"].shape == (1, config.POST_NMS_ROIS_INFERENCE, config.NUM_CLASSES)
    assert out["res4f_out"].shape == (1, 8, 8, 1024)
    assert out["fpn_p2"].shape == (1, 32, 32, config.TOP_DOWN_PYRAMID_SIZE)
    molded, _, _ = model.mold_inputs([_image()])
    np.testing.assert_array_equal(out["input_image"], molded.astype(np.float32))
    # The same graph as detect(), which runs it with BatchNorm folded into the convolutions
    # (mrcnn/modeling/fold.py): the same detections up to float32 reassociation (seen 1.2e-5).
    molded, metas, _ = model.mold_inputs([_image()])
    detections, _ = model._predict(molded, metas, model.get_anchors(molded.shape[1:])[None])
    np.testing.assert_array_equal(out["mrcnn_detection"][..., 4], detections[..., 4])
    np.testing.assert_allclose(out["mrcnn_detection"], detections, atol=1e-4)


def test_run_graph_with_labels_and_tensors(model, capsys):
    roi_tensor = model.keras_model.get_layer("ROI").output
    out = model.run_graph([_image()], [("proposals", roi_tensor), ("probs", "rpn_class")])
    assert list(out) == ["proposals", "probs"]
    assert out["proposals"].shape[-1] == 4
    assert "proposals" in capsys.readouterr().out  # logged like Matterport


def test_training_graph_needs_inputs_and_splits_multi_output_layers(tmp_path):
    config = small_config(IMAGES_PER_GPU=1)
    model = MaskRCNN("training", config, str(tmp_path))
    with pytest.raises(ValueError, match="inputs="):
        model.get_intermediates([_image()], ["ROI"])
    batch = synthetic_batch(config)
    out = model.get_intermediates(None, ["proposal_targets", "proposal_targets:1", "anchors"],
                                  inputs=batch)
    rois, class_ids, deltas, masks = out["proposal_targets"]
    assert rois.shape == (1, config.TRAIN_ROIS_PER_IMAGE, 4)
    np.testing.assert_array_equal(out["proposal_targets:1"], class_ids)
    assert masks.shape == (1, config.TRAIN_ROIS_PER_IMAGE) + tuple(config.MASK_SHAPE)
    assert out["anchors"].shape == (1, len(model.get_anchors(config.IMAGE_SHAPE)), 4)


def test_bad_names_raise(model):
    with pytest.raises(ValueError, match="no layer named 'nope'"):
        model.get_intermediates([_image()], ["nope"])
    with pytest.raises(ValueError, match="rpn_model.*shared"):
        model.get_intermediates([_image()], ["rpn_model"])
    with pytest.raises(ValueError, match="one output"):
        model.get_intermediates([_image()], ["ROI:1"])
