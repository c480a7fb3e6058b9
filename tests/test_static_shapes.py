"""The inference graph and the training step have static shapes everywhere and compile with XLA.

A data-dependent shape (tf.where, boolean_mask, unique, dynamic_stitch, NMS V3)
is a host sync and a recompile risk on a GPU and is rejected by XLA; this keeps
the property from eroding.
"""
import numpy as np
import pytest
import tensorflow as tf

from _model_helpers import small_config
from mrcnn.modeling.introspection import dynamic_shape_ops
from mrcnn.model import MaskRCNN


@pytest.fixture(scope="module")
def inference_model(tmp_path_factory):
    return MaskRCNN("inference", small_config(), str(tmp_path_factory.mktemp("static_logs")))


def _specs(model):
    config = model.config
    anchors = model.get_anchors((128, 128))
    return (tf.TensorSpec([1, 128, 128, 3]), tf.TensorSpec([1, config.IMAGE_META_SIZE]),
            tf.TensorSpec([1, anchors.shape[0], 4]))


def test_inference_graph_has_no_data_dependent_shapes(inference_model):
    km = inference_model.keras_model
    fn = tf.function(lambda a, b, c: km([a, b, c], training=False))
    assert dynamic_shape_ops(fn.get_concrete_function(*_specs(inference_model))) == []


def test_dynamic_shape_ops_finds_where_and_boolean_mask():
    fn = tf.function(lambda x: tf.boolean_mask(x, x > 0) * 2.0)
    found = dynamic_shape_ops(fn.get_concrete_function(tf.TensorSpec([5])))
    assert "Where" in {t for _, t, _ in found}


def test_inference_graph_compiles_with_xla_and_matches(inference_model):
    km = inference_model.keras_model
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (128, 128, 3)).astype(np.uint8)
    molded, metas, _ = inference_model.mold_inputs([image])
    anchors = inference_model.get_anchors(molded.shape[1:])[None]
    args = [tf.constant(molded, tf.float32), tf.constant(metas, tf.float32), tf.constant(anchors)]
    xla = tf.function(lambda a, b, c: km([a, b, c], training=False), jit_compile=True)(*args)
    plain = km(args, training=False)
    assert [tuple(o.shape) for o in xla] == [tuple(o.shape) for o in plain]
    # Up to the RPN the graphs agree to float32 noise (XLA's convolutions round
    # differently); with random weights the scores are near ties afterwards.
    np.testing.assert_allclose(xla[5].numpy(), plain[5].numpy(), atol=1e-4)
    np.testing.assert_allclose(xla[6].numpy(), plain[6].numpy(), atol=1e-3)


# ----------------------------------------------------------------------------- training step

def _training_model(tmp_path, jit_compile=False, **overrides):
    """A tiny training model (plain conv backbone) given its own ROIs, seeded."""
    import keras
    from _train_helpers import TinyConfig
    cfg = type("StaticTinyConfig", (TinyConfig,), {"USE_RPN_ROIS": False, **overrides})()
    keras.utils.set_random_seed(0)
    model = MaskRCNN("training", cfg, str(tmp_path))
    model.set_trainable("all", verbose=0)
    model.compile(0.01, 0.9, jit_compile=jit_compile)
    return model


def _training_batch(config):
    """7 synthetic inputs plus ``input_roi``: jittered GT boxes and random boxes (pixels)."""
    from _model_helpers import synthetic_batch
    batch = synthetic_batch(config, batch_size=config.BATCH_SIZE)
    rng = np.random.RandomState(0)
    b, n = config.BATCH_SIZE, config.POST_NMS_ROIS_TRAINING
    gt = batch[5][:, :2].astype(np.float32)
    rois = gt[:, rng.randint(0, 2, n)] + rng.normal(0, 6, (b, n, 4))
    corners = np.sort(rng.uniform(0, 128, (b, n - n // 2, 2, 2)), axis=2)  # (y, x) sorted apart
    rois[:, n // 2:] = corners.reshape(b, -1, 4)[..., [0, 2, 1, 3]]
    return batch + [np.clip(rois, 0, 127).astype(np.int32)]


def test_training_step_has_no_data_dependent_shapes(tmp_path):
    """Forward pass, the five losses, their gradients and the SGD update: all static."""
    model = _training_model(tmp_path, USE_RPN_ROIS=True)  # proposals feed the targets
    km = model.keras_model
    batch = _training_batch(model.config)[:len(km.inputs)]
    km.optimizer.build(km.trainable_variables)
    step = tf.function(lambda *x: km.train_step((list(x),)))
    specs = [tf.TensorSpec(b.shape, b.dtype) for b in batch]
    assert dynamic_shape_ops(step.get_concrete_function(*specs)) == []


def test_training_step_compiles_with_xla(tmp_path):
    """jit_compile=True compiles the whole step; its first losses (computed before the
    update) are the uncompiled forward pass's up to float noise, same ROI draws included."""
    from mrcnn.config import LOSS_NAMES
    model = _training_model(tmp_path, jit_compile=True)
    km = model.keras_model
    batch = _training_batch(model.config)
    generator = km.get_layer("proposal_targets").seed_generator
    state = generator.state.numpy()
    plain = km(batch, training=True)[-len(LOSS_NAMES):]
    generator.state.assign(state)
    xla = km.train_on_batch(batch, return_dict=True)
    assert km.jit_compile is True
    for name, value in zip(LOSS_NAMES, plain):
        assert xla[name] == pytest.approx(float(value), rel=1e-4, abs=1e-6), name
    assert xla["mrcnn_mask_loss"] > 0 and xla["mrcnn_bbox_loss"] > 0


@pytest.mark.slow
def test_xla_training_matches_the_plain_step_after_steps(tmp_path):
    """Five SGD steps with and without XLA from the same seed: the same losses up to
    float32 noise at every step, and the loss goes down."""
    batch = _training_batch(_training_model(tmp_path).config)
    losses = {}
    for jit in (False, True):
        model = _training_model(tmp_path, jit_compile=jit)
        assert model.keras_model.jit_compile is jit
        losses[jit] = [model.keras_model.train_on_batch(batch, return_dict=True) for _ in range(5)]
    for step, (plain, xla) in enumerate(zip(losses[False], losses[True])):
        for name, value in plain.items():
            # float32 noise (XLA's convolutions round differently) grows a little per step
            assert xla[name] == pytest.approx(value, rel=1e-4 * (step + 1), abs=1e-5), (step, name)
    assert losses[True][0]["mrcnn_mask_loss"] > 0 and losses[True][0]["mrcnn_bbox_loss"] > 0
    assert losses[True][-1]["loss"] < 0.7 * losses[True][0]["loss"]
