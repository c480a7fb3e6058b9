"""Training curves from TensorBoard event logs and from Keras History dicts."""
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from mrcnn.evaluation import curves  # noqa: E402

LOSSES = {"loss": [3.0, 2.0, 1.5], "rpn_class_loss": [0.5, 0.3, 0.2], "mrcnn_mask_loss": [0.7, 0.6, 0.4]}


def _scalar(tag, value, step):
    """What tf.summary.scalar writes (a float32 scalar tensor tagged for the
    scalars plugin), done with TF core's tf.summary.write so the test does not
    need the tensorboard package."""
    import tensorflow as tf
    from tensorflow.core.framework import summary_pb2

    meta = summary_pb2.SummaryMetadata()
    meta.plugin_data.plugin_name = "scalars"
    tf.summary.write(tag, tf.constant(value, tf.float32), step=step, metadata=meta)


def _write_log(log_dir, train, val, extra_batch=True):
    import tensorflow as tf

    for run, values in (("train", train), ("validation", val)):
        writer = tf.summary.create_file_writer(os.path.join(log_dir, run))
        with writer.as_default():
            for name, series in values.items():
                for step, v in enumerate(series):
                    _scalar(f"epoch_{name}", v, step)
                    if extra_batch and run == "train":
                        _scalar(f"batch_{name}", v * 2, step * 10)
            _scalar("evaluation_loss_vs_iterations", 9.0, 0)
        writer.close()


@pytest.fixture(scope="module")
def log_dir(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("tb"))
    _write_log(d, LOSSES, {k: [v + 0.1 for v in vals] for k, vals in LOSSES.items()})
    return d


def test_read_tensorboard_scalars(log_dir):
    series = curves.read_tensorboard_scalars(log_dir)
    assert set(series) == {"train", "validation"}
    assert set(series["train"]) == set(LOSSES)  # batch_* and *_vs_iterations left out
    for name, vals in LOSSES.items():
        steps, got = zip(*series["train"][name])
        assert steps == (0, 1, 2)
        np.testing.assert_allclose(got, vals, rtol=1e-6)  # stored as float32
        np.testing.assert_allclose([v for _, v in series["validation"][name]],
                                   [v + 0.1 for v in vals], rtol=1e-6)
    batch = curves.read_tensorboard_scalars(log_dir, level="batch")
    assert [s for s, _ in batch["train"]["loss"]] == [0, 10, 20]
    np.testing.assert_allclose([v for _, v in batch["train"]["loss"]], [6.0, 4.0, 3.0])


def test_history_to_series():
    hist = dict(LOSSES, val_loss=[3.5, 2.5, 2.0])
    series = curves.history_to_series(hist)
    assert series["train"]["loss"] == [(0, 3.0), (1, 2.0), (2, 1.5)]
    assert series["validation"] == {"loss": [(0, 3.5), (1, 2.5), (2, 2.0)]}

    class History:  # keras.callbacks.History after a resumed fit(initial_epoch=5)
        history = {"loss": [1.0, 0.5]}
        epoch = [5, 6]

    assert curves.history_to_series(History()) == {"train": {"loss": [(5, 1.0), (6, 0.5)]}}
    with pytest.raises(TypeError, match="History or a dict"):
        curves.history_to_series([1, 2])


def test_plot_from_log_and_history_same_numbers(log_dir, tmp_path):
    from_log = tmp_path / "log.png"
    fig = curves.plot_training_curves(log_dir, save_path=str(from_log), title="run")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    # Matterport's losses first, in its order; the rest sorted.
    assert titles == ["loss", "rpn_class_loss", "mrcnn_mask_loss"]
    ax = fig.axes[0]
    assert [l.get_label() for l in ax.lines] == ["train", "validation"]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), LOSSES["loss"], rtol=1e-6)
    assert mpimg.imread(str(from_log)).size > 0

    hist = dict(LOSSES, **{f"val_{k}": [v + 0.1 for v in vals] for k, vals in LOSSES.items()})
    fig2 = curves.plot_training_curves(hist, save_path=str(tmp_path / "hist.png"))
    for a, b in zip(fig.axes, fig2.axes):
        for la, lb in zip(a.lines, b.lines):
            np.testing.assert_allclose(la.get_ydata(), lb.get_ydata(), rtol=1e-6)
    other = dict(hist, loss=[5.0, 1.0, 0.1])
    curves.plot_training_curves(other, save_path=str(tmp_path / "other.png"))
    a, b = mpimg.imread(str(tmp_path / "hist.png")), mpimg.imread(str(tmp_path / "other.png"))
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_plot_selected_names_and_errors(log_dir, tmp_path):
    fig = curves.plot_training_curves(log_dir, names=["rpn_class_loss"], cols=3)
    assert [ax.get_title() for ax in fig.axes] == ["rpn_class_loss"]
    with pytest.raises(ValueError, match=r"metrics \['mrcnn_bbox_loss'\] are not in the logs"):
        curves.plot_training_curves(log_dir, names=["mrcnn_bbox_loss"])
    with pytest.raises(ValueError, match="logs are empty"):
        curves.plot_training_curves({})
    with pytest.raises(FileNotFoundError, match="not found"):
        curves.read_tensorboard_scalars(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        curves.read_tensorboard_scalars(str(tmp_path))
    with pytest.raises(ValueError, match="level"):
        curves.read_tensorboard_scalars(log_dir, level="step")


def test_keras_tensorboard_callback_logs(tmp_path):
    """The real thing: Keras 3's TensorBoard callback, then read back and plotted.

    (Keras writes through tf.summary.scalar, which TF provides only when the
    tensorboard package, a requirement of this project, is installed.)"""
    import keras

    keras.utils.set_random_seed(0)
    x = np.random.rand(32, 4).astype("float32")
    y = x.sum(1, keepdims=True)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    log = str(tmp_path / "logs")
    hist = model.fit(x, y, validation_split=0.25, epochs=3, batch_size=8, verbose=0,
                     callbacks=[keras.callbacks.TensorBoard(log_dir=log)])
    series = curves.read_tensorboard_scalars(log)
    np.testing.assert_allclose([v for _, v in series["train"]["loss"]], hist.history["loss"], rtol=1e-5)
    np.testing.assert_allclose([v for _, v in series["validation"]["loss"]],
                               hist.history["val_loss"], rtol=1e-5)
    fig = curves.plot_training_curves(log, save_path=str(tmp_path / "k.png"))
    assert [ax.get_title() for ax in fig.axes] == ["loss"]
    assert os.path.getsize(tmp_path / "k.png") > 1000
