"""The training step with frozen BatchNorm folded into the convolutions (TensorFlow).

MaskRCNNTrainingModel runs its training graph through fold.FoldedGraph(training=True);
these tests compare it with Keras' own execution of the same graph (the unfolded
layers) on a ResNet-50 model at 128 px: same losses, same gradients.
"""
import re

import numpy as np
import pytest
import keras
import tensorflow as tf

from _model_helpers import small_config, synthetic_batch
from mrcnn import model as modellib
from mrcnn.modeling.fold import bn_is_affine, fold_pays_in_training
from mrcnn.modeling.maskrcnn import MaskRCNNTrainingModel

pytestmark = pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the fold is TF-only")


def _model(tmp_path, layers="all", **overrides):
    keras.utils.set_random_seed(0)
    model = modellib.MaskRCNN("training", small_config(**overrides), str(tmp_path))
    model.set_trainable(layers, verbose=0)
    return model


def _losses_and_grads(km, batch, folded: bool):
    seed_state = km.get_layer("proposal_targets").seed_generator.state
    start = np.asarray(seed_state.value)
    inputs = [tf.convert_to_tensor(x) for x in batch]
    km.fold_frozen_batchnorm = folded  # False: Keras' own executor

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outputs = km(inputs, training=True)
            loss = km.compute_loss(y_pred=outputs)
        grads = tape.gradient(loss, km.trainable_variables)
        return outputs[-5:], loss, grads

    concrete = step.get_concrete_function()
    out = step()
    seed_state.assign(start)  # both runs draw the same ROI samples
    types = {op.type for op in concrete.graph.get_operations()}
    names = " ".join(op.name for op in concrete.graph.get_operations())
    return [float(np.mean(v)) for v in out[0]], float(out[1]), [np.asarray(g) for g in out[2]], types, names


def _has_bn(op_names: str, layer: str) -> bool:
    return re.search(rf"/{layer}(_\d+)?/batchnorm", op_names) is not None


def test_folded_training_graph_gives_the_same_losses_and_gradients(tmp_path):
    model = _model(tmp_path)
    km = model.keras_model
    assert isinstance(km, MaskRCNNTrainingModel)
    batch = synthetic_batch(model.config)
    plain_losses, plain_total, plain_grads, _, plain_names = _losses_and_grads(km, batch, folded=False)
    losses, total, grads, types, names = _losses_and_grads(km, batch, folded=True)
    assert all(l > 0 for l in plain_losses[:3]), plain_losses  # a real step, not an empty one
    np.testing.assert_allclose(losses, plain_losses, rtol=2e-4, atol=1e-6)
    assert total == pytest.approx(plain_total, rel=2e-4)
    names_of = [v.path for v in km.trainable_variables]
    errors = {}
    for name, g, p in zip(names_of, grads, plain_grads):
        norm = np.linalg.norm(p)
        if norm > 0:
            errors[name] = np.linalg.norm(g - p) / norm
    # Every weight's gradient, gamma and beta of the folded BatchNorms included (they get
    # theirs through the folded kernel and bias). Rounding flips a few ReLUs of this
    # flat synthetic image, which moves some gradients by ~0.1%; most agree to ~1e-6.
    assert len(errors) > 150
    worst = max(errors, key=errors.get)
    assert errors[worst] < 1e-2, (worst, errors[worst])
    assert np.median(list(errors.values())) < 1e-4
    assert any("gamma" in n for n in names_of)
    # The BatchNorm passes of the early, large feature maps are gone from the folded step
    # (kept in Keras' execution); stage 5 at 128 px has more kernel than feature map, and
    # folding would cost more there (fold.fold_pays_in_training), so its BatchNorms stay.
    assert _has_bn(plain_names, "bn_conv1") and not _has_bn(names, "bn_conv1")
    assert _has_bn(plain_names, "bn2a_branch2a") and not _has_bn(names, "bn2a_branch2a")
    assert _has_bn(names, "bn5a_branch2b")
    assert "BiasAdd" in types


def test_batchnorm_with_batch_statistics_is_not_folded(tmp_path):
    # TRAIN_BN = True (Matterport's option for large batches): the BatchNorms normalise
    # with the batch's statistics in training, which is not a fixed affine map.
    model = _model(tmp_path, TRAIN_BN=True)
    km = model.keras_model
    bn = km.get_layer("bn_conv1")
    # Matterport wires it with training=True: batch statistics in every call.
    assert bn.fixed_training is True
    assert not bn_is_affine(bn, training=True) and not bn_is_affine(bn, training=False)
    batch = synthetic_batch(model.config)
    plain_losses, _, _, _, _ = _losses_and_grads(km, batch, folded=False)
    losses, _, _, _, names = _losses_and_grads(km, batch, folded=True)
    np.testing.assert_allclose(losses, plain_losses, rtol=2e-4, atol=1e-6)
    assert "bn_conv1" in names


def test_frozen_layers_fold_by_trainable_flag(tmp_path):
    model = _model(tmp_path, layers="heads", TRAIN_BN=None)
    km = model.keras_model
    # TRAIN_BN=None follows the learning phase, but a frozen (non-trainable) layer uses
    # its moving statistics in Keras 3: foldable; a trainable head BatchNorm is not.
    assert bn_is_affine(km.get_layer("bn_conv1"), training=True)
    assert not bn_is_affine(km.get_layer("mrcnn_mask_bn1"), training=True)


def test_fold_pays_where_the_feature_map_outweighs_the_kernel():
    import keras.layers as KL
    conv = KL.Conv2D(512, 3, padding="same")
    conv.build((None, 4, 4, 512))
    assert not fold_pays_in_training(conv, keras.KerasTensor((None, 4, 4, 512)))    # 8 K outputs, 2.4 M kernel
    assert fold_pays_in_training(conv, keras.KerasTensor((None, 64, 64, 512)))      # 2.1 M outputs
    assert fold_pays_in_training(conv, keras.KerasTensor((None, None, None, 512)))  # unknown: fold
    td = KL.TimeDistributed(KL.Conv2D(256, 3, padding="same"))
    td.build((None, 100, 14, 14, 256))
    assert fold_pays_in_training(td, keras.KerasTensor((None, 100, 14, 14, 256)))   # ROIs count as outputs
    assert not fold_pays_in_training(td, keras.KerasTensor((None, 2, 14, 14, 256)))
