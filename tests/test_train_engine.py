"""MaskRCNN.train: stage presets, checkpoints, kill-and-resume, NaN stop, tf.distribute."""
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from _train_helpers import REPO, TinyConfig, assert_only_heads_trained, layer_weights, tiny_datasets
import mrcnn.model as modellib
from mrcnn.engine.callbacks import NaNLossError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _weights(model, names):
    return layer_weights(model, names)


def test_heads_preset_trains_only_heads_and_writes_matterport_checkpoint(tmp_path):
    train_ds, val_ds = tiny_datasets()
    model = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path))
    watch = ["tiny_c1", "tiny_c5", "fpn_c5p5", "rpn_model", "mrcnn_class_logits"]
    before = _weights(model, watch)
    model.train(train_ds, val_ds, learning_rate=0.01, epochs=1, layers="heads", seed=0, verbose=0)
    after = _weights(model, watch)
    assert_only_heads_trained(before, after)
    assert model.epoch == 1
    ckpt = os.path.join(model.log_dir, "mask_rcnn_tiny_0001.h5")
    assert os.path.isfile(ckpt)
    assert model.find_last() == ckpt
    assert not [f for f in os.listdir(model.log_dir) if f.startswith(".tmp")]
    # Matterport layout: layer_names at the root, one group per layer.
    import h5py
    with h5py.File(ckpt, "r") as f:
        names = [n.decode() for n in f.attrs["layer_names"]]
    assert "mrcnn_mask" in names and "rpn_model" in names
    # TensorBoard logs for the loss curves
    assert os.path.isdir(os.path.join(model.log_dir, "train"))


@pytest.mark.slow
def test_epochs_are_cumulative_and_resume_restores_the_counter(tmp_path):
    train_ds, val_ds = tiny_datasets()
    model = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path))
    model.train(train_ds, None, learning_rate=0.01, epochs=1, layers="all", seed=0, verbose=0)
    again = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path))
    history = again.train(train_ds, None, learning_rate=0.01, epochs=2, layers="all", seed=0,
                          verbose=0, resume=True)
    assert again.epoch == 2
    assert history.epoch == [1]  # only the second epoch ran
    assert os.path.isfile(os.path.join(again.log_dir, "mask_rcnn_tiny_0002.h5"))
    assert again.log_dir == model.log_dir


class _PoisonWeights:
    """After the given batch, put a NaN into a head weight so the next loss is NaN."""

    def __new__(cls, at_batch):
        import keras

        class Poison(keras.callbacks.Callback):
            def on_train_batch_end(self, batch, logs=None):
                if batch == at_batch:
                    layer = self.model.get_layer("mrcnn_class_logits")
                    inner = getattr(layer, "layer", layer)
                    w = inner.get_weights()
                    w[0][...] = np.nan
                    inner.set_weights(w)
        return Poison()


@pytest.mark.slow
def test_nan_loss_stops_with_step_and_last_good_checkpoint(tmp_path):
    train_ds, _ = tiny_datasets()
    model = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path))
    model.train(train_ds, None, learning_rate=0.01, epochs=1, layers="all", seed=0, verbose=0)
    good = os.path.join(model.log_dir, "mask_rcnn_tiny_0001.h5")
    with pytest.raises(NaNLossError) as err:
        model.train(train_ds, None, learning_rate=0.01, epochs=3, layers="all", seed=0, verbose=0,
                    custom_callbacks=[_PoisonWeights(at_batch=0)])
    msg = str(err.value)
    assert "epoch 2, step 2" in msg and good in msg
    assert not os.path.exists(os.path.join(model.log_dir, "mask_rcnn_tiny_0002.h5"))
    assert model.epoch == 1


KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from _train_helpers import TinyConfig, tiny_datasets
    import keras
    import mrcnn.model as modellib

    class KillMidEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 1 and batch == 0:
                os.kill(os.getpid(), signal.SIGKILL)

    train_ds, _ = tiny_datasets()
    model = modellib.MaskRCNN("training", TinyConfig(), sys.argv[1])
    model.train(train_ds, None, learning_rate=0.01, epochs=3, layers="all", seed=0, verbose=0,
                resume=True, custom_callbacks=[KillMidEpoch()])
    print("EPOCH", model.epoch)
""")


@pytest.mark.slow
def test_sigkill_mid_epoch_resumes_from_last_finished_epoch(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(KILL_SCRIPT.format(tests=os.path.join(REPO, "tests")))
    logs = tmp_path / "logs"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    first = subprocess.run([sys.executable, str(script), str(logs)], env=env, capture_output=True, text=True)
    assert first.returncode == -signal.SIGKILL, first.stderr[-2000:]
    (run_dir,) = os.listdir(logs)
    assert sorted(f for f in os.listdir(logs / run_dir) if f.endswith(".h5")) == ["mask_rcnn_tiny_0001.h5"]

    model = modellib.MaskRCNN("training", TinyConfig(), str(logs))
    train_ds, _ = tiny_datasets()
    history = model.train(train_ds, None, learning_rate=0.01, epochs=3, layers="all", seed=0, verbose=0,
                          resume=True)
    assert history.epoch == [1, 2]
    assert sorted(f for f in os.listdir(logs / run_dir) if f.endswith(".h5")) == [
        "mask_rcnn_tiny_0001.h5", "mask_rcnn_tiny_0002.h5", "mask_rcnn_tiny_0003.h5"]


MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, {tests!r})
    from _train_helpers import TinyConfig, tiny_datasets
    import keras
    import mrcnn.model as modellib

    replicas = int(sys.argv[2])

    class Cfg(TinyConfig):
        GPU_COUNT = replicas
        IMAGES_PER_GPU = 2 // replicas
        ROI_POSITIVE_RATIO = 1.0   # keep every positive ROI and no negatives: no random draw
        TRAIN_ROIS_PER_IMAGE = 64
        STEPS_PER_EPOCH = 1

    keras.utils.set_random_seed(1)
    train_ds, _ = tiny_datasets()
    # Matterport's box and mask losses average over the positives of the whole batch; split
    # over replicas they become a mean of per-replica means (as in Matterport's ParallelModel).
    # With identical images both are the same number, so the comparison is exact.
    for info in train_ds.image_info[1:]:
        info.update(bg_color=train_ds.image_info[0]["bg_color"], shapes=train_ds.image_info[0]["shapes"])
    model = modellib.MaskRCNN("training", Cfg(), sys.argv[1])
    init = sys.argv[3]
    if replicas == 1:
        model.keras_model.save_weights(init)
    else:
        model.keras_model.load_weights(init)
    losses = []
    class Record(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            losses.append({{k: float(v) for k, v in logs.items()}})
    model.train(train_ds, None, learning_rate=0.01, epochs=1, layers="all", seed=3, verbose=0,
                tensorboard=False, custom_callbacks=[Record()])
    w = model.keras_model.get_layer("mrcnn_class_logits").get_weights()[0]
    print("RESULT", json.dumps({{"loss": losses[0], "w": float(np.abs(w).sum())}}))
""")


@pytest.mark.slow
def test_mirrored_strategy_matches_one_replica(tmp_path):
    """2 logical CPU devices under MirroredStrategy vs 1 replica, same weights and data."""
    import json
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT.format(tests=os.path.join(REPO, "tests")))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    init = str(tmp_path / "init.weights.h5")
    results = {}
    for replicas in (1, 2):
        out = subprocess.run([sys.executable, str(script), str(tmp_path / f"logs{replicas}"), str(replicas), init],
                             env=env, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr[-3000:]
        line = [l for l in out.stdout.splitlines() if l.startswith("RESULT")][-1]
        results[replicas] = json.loads(line.split(" ", 1)[1])
    one, two = results[1], results[2]
    for k in ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss", "mrcnn_mask_loss", "loss"):
        assert two["loss"][k] == pytest.approx(one["loss"][k], rel=1e-4, abs=1e-5), k
    assert two["w"] == pytest.approx(one["w"], rel=1e-5)


@pytest.mark.slow
def test_mixed_bfloat16_trains_with_float32_box_math(tmp_path):
    class Cfg(TinyConfig):
        MIXED_PRECISION = "mixed_bfloat16"
        STEPS_PER_EPOCH = 1

    import keras
    train_ds, _ = tiny_datasets()
    model = modellib.MaskRCNN("training", Cfg(), str(tmp_path))
    history = model.train(train_ds, None, learning_rate=0.01, epochs=1, layers="all", seed=0, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    km = model.keras_model
    assert km.get_layer("fpn_c5p5").compute_dtype == "bfloat16"
    assert km.get_layer("ROI").compute_dtype == "float32"
    assert km.get_layer("proposal_targets").compute_dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored after the build
    # the checkpoint holds float32 weights, loadable into a float32 model
    plain = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path))
    report = plain.load_weights(model.find_last(), by_name=True)
    assert report is not None



@pytest.mark.slow
def test_xla_autoclustering_trains_and_restores_the_setting(tmp_path):
    import tensorflow as tf
    train_ds, val_ds = tiny_datasets()
    model = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path))
    assert not tf.config.optimizer.get_jit()
    history = model.train(train_ds, None, learning_rate=0.01, epochs=1, layers="all", seed=0,
                          verbose=0, xla="autoclustering")
    assert model.keras_model.jit_compile is False
    assert np.isfinite(history.history["loss"]).all()
    assert model.epoch == 1 and os.path.isfile(os.path.join(model.log_dir, "mask_rcnn_tiny_0001.h5"))
    assert not tf.config.optimizer.get_jit()  # back to the default for later functions
    assert "--tf_xla_cpu_global_jit" in os.environ["TF_XLA_FLAGS"]


@pytest.mark.slow
def test_xla_true_compiles_the_whole_step_also_in_mixed_precision(tmp_path):
    import tensorflow as tf
    train_ds, _ = tiny_datasets()
    for policy in (None, "mixed_bfloat16"):
        cfg = type("Cfg", (TinyConfig,), {"MIXED_PRECISION": policy})()
        model = modellib.MaskRCNN("training", cfg, str(tmp_path / str(policy)))
        history = model.train(train_ds, None, learning_rate=0.01, epochs=1, layers="all", seed=0,
                              verbose=0, xla=True)
        assert model.keras_model.jit_compile is True
        assert np.isfinite(history.history["loss"]).all()
        assert not tf.config.optimizer.get_jit()  # no auto-clustering turned on
    with pytest.raises(ValueError, match="xla must be"):
        model.train(train_ds, None, learning_rate=0.01, epochs=2, layers="all", xla="yes")
