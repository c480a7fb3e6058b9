"""MatterportSGD: the same updates as keras.optimizers.SGD, run as fused TF kernels."""
import numpy as np
import pytest
import keras

from mrcnn.engine.optimizer import MatterportSGD


def _model(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(2)(x)
    return keras.Model(inputs, outputs)


def _train(optimizer, steps: int = 6, scale: float = 1.0):
    model = _model(0)
    model.compile(optimizer=optimizer, loss="mse")
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4, 6, 6, 3)).astype("float32") * scale
    y = rng.normal(size=(4, 2)).astype("float32") * scale
    losses = [float(model.train_on_batch(x, y)) for _ in range(steps)]
    return model, losses


@pytest.mark.parametrize("clip,scale", [(None, 1.0), (5.0, 1.0), (0.01, 30.0)])
def test_same_weights_as_keras_sgd(clip, scale):
    # clip 0.01 with large inputs: the clip factor is far below 1 at every step.
    kwargs = dict(learning_rate=0.05, momentum=0.9, global_clipnorm=clip)
    ref, ref_losses = _train(keras.optimizers.SGD(**kwargs), scale=scale)
    new, new_losses = _train(MatterportSGD(**kwargs), scale=scale)
    np.testing.assert_allclose(new_losses, ref_losses, rtol=1e-5)
    for a, b in zip(new.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # The weights moved: the comparison is not between two untouched models.
    assert not np.allclose(new.get_weights()[0], _model(0).get_weights()[0])


def test_momentum_slots_match_keras_sgd():
    kwargs = dict(learning_rate=0.05, momentum=0.9, global_clipnorm=5.0)
    ref_opt, new_opt = keras.optimizers.SGD(**kwargs), MatterportSGD(**kwargs)
    _train(ref_opt)
    _train(new_opt)
    assert [v.shape for v in new_opt.variables] == [v.shape for v in ref_opt.variables]
    for a, b in zip(new_opt.variables, ref_opt.variables):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    assert MatterportSGD.from_config(new_opt.get_config()).get_config() == new_opt.get_config()
    restored = keras.optimizers.deserialize(keras.optimizers.serialize(new_opt))
    assert type(restored) is MatterportSGD


def test_non_finite_gradient_makes_weights_nan_like_keras():
    # Keras' clip_by_global_norm turns an infinite norm into NaN updates (so a NaN loss
    # is visible); the fused path keeps that behaviour.
    model = _model(0)
    model.compile(optimizer=MatterportSGD(learning_rate=0.05, momentum=0.9, global_clipnorm=5.0), loss="mse")
    x = np.full((2, 6, 6, 3), np.inf, "float32")
    model.train_on_batch(x, np.zeros((2, 2), "float32"))
    assert np.isnan(model.get_weights()[0]).all()


def test_nesterov_falls_back_to_keras():
    kwargs = dict(learning_rate=0.05, momentum=0.9, nesterov=True, global_clipnorm=5.0)
    ref, _ = _train(keras.optimizers.SGD(**kwargs))
    new, _ = _train(MatterportSGD(**kwargs))
    for a, b in zip(new.get_weights(), ref.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def _update_op_types(optimizer) -> set:
    import tensorflow as tf
    model = _model(0)
    weights = model.trainable_variables
    optimizer.build(weights)

    @tf.function
    def step(grads):
        optimizer.apply(grads, weights)

    grads = [tf.ones(w.shape) for w in weights]
    return {op.type for op in step.get_concrete_function(grads).graph.get_operations()}


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow kernels")
def test_tensorflow_runs_the_fused_kernels():
    types = _update_op_types(MatterportSGD(learning_rate=0.05, momentum=0.9, global_clipnorm=5.0))
    assert "ResourceApplyKerasMomentum" in types and "L2Loss" in types
    assert "Square" not in types
    # Keras' own SGD (the reference above) does not: the tests compare two different paths.
    assert "ResourceApplyKerasMomentum" not in _update_op_types(
        keras.optimizers.SGD(learning_rate=0.05, momentum=0.9, global_clipnorm=5.0))
