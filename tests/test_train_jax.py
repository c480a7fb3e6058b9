"""MaskRCNN.train on Keras' JAX backend: presets, checkpoints, cumulative epochs and
resume, seeded determinism, NaN stop, and checkpoints that move between JAX and TF.

Keras fixes its backend at import, so this module runs in the ``KERAS_BACKEND=jax``
pytest invocation of .ci/run and skips under TensorFlow. Each ``train()`` call
compiles its step with XLA (~20-40 s for the tiny model on 2 cores), so the tests
share runs through module fixtures.
"""
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

if keras.backend.backend() != "jax":
    pytest.skip("JAX training checks: run with KERAS_BACKEND=jax (a separate pytest run, "
                "see .ci/run)", allow_module_level=True)

import h5py  # noqa: E402

from _train_helpers import REPO, TinyConfig, assert_only_heads_trained, layer_weights, tiny_datasets  # noqa: E402
import mrcnn.model as modellib  # noqa: E402
from mrcnn.engine.callbacks import NaNLossError  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    """JAX's persistent compilation cache for this module: each ``train()`` traces a new
    step function, and the runs that build the same graph reuse the compiled XLA program."""
    import jax
    names = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
             "jax_persistent_cache_min_entry_size_bytes")
    old = {n: getattr(jax.config, n) for n in names}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("jax_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
    for n, v in old.items():
        jax.config.update(n, v)

WATCH = ["tiny_c1", "tiny_c5", "fpn_c5p5", "rpn_model", "mrcnn_class_logits"]


class _Record(keras.callbacks.Callback):
    """Every batch's logged losses, as floats."""

    def __init__(self):
        super().__init__()
        self.batches = []

    def on_train_batch_end(self, batch, logs=None):
        self.batches.append({k: float(v) for k, v in (logs or {}).items()})


def _weights(model, names):
    return layer_weights(model, names)


def _heads_run(logs):
    """A fresh seeded model trained one epoch on the heads preset."""
    keras.utils.set_random_seed(7)  # same initial weights and ROI-sampling seed each time
    train_ds, val_ds = tiny_datasets()
    model = modellib.MaskRCNN("training", TinyConfig(), str(logs))
    before = _weights(model, WATCH)
    record = _Record()
    history = model.train(train_ds, val_ds, learning_rate=0.01, epochs=1, layers="heads", seed=0,
                          verbose=0, custom_callbacks=[record])
    return model, before, record, history


@pytest.fixture(scope="module")
def heads_run(tmp_path_factory):
    return _heads_run(tmp_path_factory.mktemp("jax_heads") / "logs")


def test_heads_preset_trains_only_heads_and_writes_matterport_checkpoint(heads_run):
    model, before, record, history = heads_run
    assert keras.backend.backend() == "jax"
    after = _weights(model, WATCH)
    assert_only_heads_trained(before, after)
    assert model.epoch == 1
    assert len(record.batches) == TinyConfig.STEPS_PER_EPOCH
    for name in ("loss", "rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss",
                 "mrcnn_mask_loss", "val_loss"):
        assert np.isfinite(history.history[name][0]), name
    ckpt = os.path.join(model.log_dir, "mask_rcnn_tiny_0001.h5")
    assert model.find_last() == ckpt
    assert not [f for f in os.listdir(model.log_dir) if f.startswith(".tmp")]
    with h5py.File(ckpt, "r") as f:  # Matterport layout: layer_names at the root
        names = [n.decode() for n in f.attrs["layer_names"]]
    assert "mrcnn_mask" in names and "rpn_model" in names
    assert os.path.isdir(os.path.join(model.log_dir, "train"))  # TensorBoard logs


def test_same_seed_gives_the_same_losses(heads_run, tmp_path):
    _, _, first, _ = heads_run
    _, _, second, _ = _heads_run(tmp_path / "logs")
    assert len(second.batches) == len(first.batches)
    for a, b in zip(first.batches, second.batches):
        assert a == b


@pytest.fixture(scope="module")
def resumed(heads_run):
    """A new model resuming the heads run's log dir up to epoch 2 on all layers."""
    model = heads_run[0]
    train_ds, _ = tiny_datasets()
    again = modellib.MaskRCNN("training", TinyConfig(), model.model_dir)
    history = again.train(train_ds, None, learning_rate=0.01, epochs=2, layers="all", seed=0,
                          verbose=0, resume=True)
    return again, history


def test_epochs_are_cumulative_and_resume_restores_the_counter(heads_run, resumed):
    model = heads_run[0]
    again, history = resumed
    assert history.epoch == [1]  # only the second epoch ran
    assert again.epoch == 2 and again.log_dir == model.log_dir
    assert os.path.isfile(os.path.join(again.log_dir, "mask_rcnn_tiny_0002.h5"))
    # "all": the backbone trained this time
    assert not np.array_equal(_weights(again, ["tiny_c1"])["tiny_c1"][0],
                              _weights(model, ["tiny_c1"])["tiny_c1"][0])


def test_nan_loss_stops_with_step_and_last_good_checkpoint(resumed):
    model, _ = resumed
    good = os.path.join(model.log_dir, "mask_rcnn_tiny_0002.h5")

    class Poison(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:  # the next step's loss is NaN
                layer = self.model.get_layer("mrcnn_class_logits")
                inner = getattr(layer, "layer", layer)
                inner.set_weights([np.full_like(w, np.nan) for w in inner.get_weights()])

    train_ds, _ = tiny_datasets()
    with pytest.raises(NaNLossError) as err:
        model.train(train_ds, None, learning_rate=0.01, epochs=4, layers="all", seed=0, verbose=0,
                    custom_callbacks=[Poison()])
    msg = str(err.value)
    assert "epoch 3, step 2" in msg and good in msg
    assert not os.path.exists(os.path.join(model.log_dir, "mask_rcnn_tiny_0003.h5"))
    assert model.epoch == 2


def test_strategy_and_several_gpus_need_tensorflow(tmp_path):
    train_ds, _ = tiny_datasets()

    class TwoGPUs(TinyConfig):
        GPU_COUNT = 2
        IMAGES_PER_GPU = 1

    model = modellib.MaskRCNN("training", TwoGPUs(), str(tmp_path))
    with pytest.raises(ValueError, match="GPU_COUNT=2.*TensorFlow backend"):
        model.train(train_ds, None, learning_rate=0.01, epochs=1, layers="all", verbose=0)
    model = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path))
    with pytest.raises(ValueError, match="strategy=.*TensorFlow backend"):
        model.train(train_ds, None, learning_rate=0.01, epochs=1, layers="all", verbose=0,
                    strategy=object())


TF_SIDE = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    import keras
    from _train_helpers import TinyConfig
    import mrcnn.model as modellib

    assert keras.backend.backend() == "tensorflow"
    ckpt, expected, out = sys.argv[1:4]
    model = modellib.MaskRCNN("training", TinyConfig(), sys.argv[4])
    report = model.load_weights(ckpt, by_name=True)
    want = np.load(expected)
    got = model.keras_model.get_weights()
    same = len(got) == len(want.files) and all(
        np.array_equal(g, want[f"w{{i}}"]) for i, g in enumerate(got))
    # Change one layer on TF and write a checkpoint of TF's own for the way back.
    layer = model.keras_model.get_layer("mrcnn_class_logits").layer
    layer.set_weights([w + 0.5 for w in layer.get_weights()])
    model.save_weights(out)
    np.savez(out + ".npz", **{{f"w{{i}}": w for i, w in enumerate(model.keras_model.get_weights())}})
    print("RESULT", json.dumps({{"same": bool(same), "missing": report.missing_in_file,
                                 "unused": report.unused_in_file, "mismatched": report.mismatched}}))
""")


def test_checkpoint_written_on_jax_loads_on_tensorflow_and_back(heads_run, tmp_path):
    model = heads_run[0]
    ckpt = os.path.join(model.log_dir, "mask_rcnn_tiny_0001.h5")
    jax_side = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path / "jax"))
    jax_side.load_weights(ckpt, by_name=True)
    expected = str(tmp_path / "jax_weights.npz")
    np.savez(expected, **{f"w{i}": np.asarray(w) for i, w in enumerate(jax_side.keras_model.get_weights())})
    script = tmp_path / "tf_side.py"
    script.write_text(TF_SIDE.format(tests=os.path.join(REPO, "tests")))
    back = str(tmp_path / "from_tf.h5")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, str(script), ckpt, expected, back, str(tmp_path / "tf")],
                         env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads([l for l in out.stdout.splitlines() if l.startswith("RESULT")][-1].split(" ", 1)[1])
    assert result == {"same": True, "missing": [], "unused": [], "mismatched": []}
    # The way back: TF's checkpoint into the JAX model, every weight as TF had it.
    jax_side.load_weights(back, by_name=True)
    want = np.load(back + ".npz")
    got = jax_side.keras_model.get_weights()
    assert len(got) == len(want.files)
    for i, w in enumerate(got):
        np.testing.assert_array_equal(w, want[f"w{i}"])
    trained = _weights(model, ["mrcnn_class_logits"])["mrcnn_class_logits"]
    changed = _weights(jax_side, ["mrcnn_class_logits"])["mrcnn_class_logits"]
    for a, b in zip(changed, trained):
        np.testing.assert_allclose(a, b + 0.5, rtol=0, atol=1e-6)
