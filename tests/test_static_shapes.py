"""The compiled inference graph has static shapes everywhere and compiles with XLA.

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

