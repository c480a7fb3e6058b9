"""Issue 15, training side: the checkpoint keep policy, bad samples in the tf.data pipeline
(skipped and counted, or SampleError under STRICT_DATA_CHECKS) and in train()."""
import json
import logging
import os
import types

import numpy as np
import pytest

from mrcnn.data.pipeline import InputPipeline
from mrcnn.data.validate import SampleError
from mrcnn.engine.callbacks import MatterportCheckpoint
from test_hardening_data import Cfg, StrictCfg, _Bad, _mask


class _FakeModel:
    """Stands in for MaskRCNN: save_weights writes a small file atomically, as the real one."""

    def save_weights(self, path):
        tmp = path + ".part"
        with open(tmp, "w") as f:
            f.write(os.path.basename(path))
        os.replace(tmp, path)


def _run_epochs(directory, keep, losses, first_epoch=0, key="val_loss"):
    cb = MatterportCheckpoint(_FakeModel(), os.path.join(directory, "mask_rcnn_x_{epoch:04d}.h5"),
                              keep=keep)
    for i, loss in enumerate(losses):
        cb.on_epoch_end(first_epoch + i, {"loss": 100.0, key: loss} if key != "loss" else {"loss": loss})
    return cb


def _epochs_on_disk(directory):
    return sorted(int(f[-7:-3]) for f in os.listdir(directory) if f.endswith(".h5"))


def test_keep_last_n_plus_best_val_loss(tmp_path):
    d = str(tmp_path)
    _run_epochs(d, 2, [5.0, 3.0, 4.0, 6.0, 7.0])
    assert _epochs_on_disk(d) == [2, 4, 5]  # the two newest + epoch 2, the lowest val loss
    with open(os.path.join(d, "checkpoint_losses.json")) as f:
        assert json.load(f) == {"mask_rcnn_x_0002.h5": 3.0, "mask_rcnn_x_0004.h5": 6.0,
                                "mask_rcnn_x_0005.h5": 7.0}
    # a second train() call (or a resumed run) in the same log dir knows the old best
    _run_epochs(d, 2, [8.0], first_epoch=5)
    assert _epochs_on_disk(d) == [2, 5, 6]
    _run_epochs(d, 2, [1.0], first_epoch=6)
    assert _epochs_on_disk(d) == [6, 7]  # epoch 7 is newest and best: only 2 files
    assert not [f for f in os.listdir(d) if f.endswith((".part", ".tmp"))]


def test_keep_without_validation_uses_train_loss_and_skips_nan(tmp_path):
    d = str(tmp_path)
    _run_epochs(d, 1, [2.0, float("nan"), 9.0, 3.0], key="loss")
    assert _epochs_on_disk(d) == [1, 4]
    d2 = str(tmp_path / "b")
    os.makedirs(d2)
    _run_epochs(d2, 1, [None, None, None])  # no loss at all: by age only
    assert _epochs_on_disk(d2) == [3]


def test_keep_none_keeps_all_and_only_this_runs_files_are_touched(tmp_path):
    d = str(tmp_path)
    for name in ("mask_rcnn_other_0001.h5", "notes.txt", "mask_rcnn_x_0001.h5.bak"):
        open(os.path.join(d, name), "w").close()
    _run_epochs(d, None, [3.0, 2.0, 1.0])
    assert _epochs_on_disk(d) == [1, 1, 2, 3]  # "other" run's 0001 + ours
    assert not os.path.exists(os.path.join(d, "checkpoint_losses.json"))
    _run_epochs(d, 1, [0.5], first_epoch=3)
    assert sorted(os.listdir(d)) == ["checkpoint_losses.json", "mask_rcnn_other_0001.h5",
                                     "mask_rcnn_x_0001.h5.bak", "mask_rcnn_x_0004.h5", "notes.txt"]


def test_keep_must_be_positive():
    for keep in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="keep must be None"):
            MatterportCheckpoint(_FakeModel(), "x_{epoch:04d}.h5", keep=keep)


def test_damaged_loss_record_falls_back_to_age(tmp_path):
    d = str(tmp_path)
    _run_epochs(d, 1, [1.0, 2.0])
    with open(os.path.join(d, "checkpoint_losses.json"), "w") as f:
        f.write("{not json")
    _run_epochs(d, 1, [3.0], first_epoch=2)
    assert _epochs_on_disk(d) == [3]


def test_find_last_after_pruning(tmp_path):
    from mrcnn.modeling.maskrcnn import MaskRCNN
    run = tmp_path / "harden20260101T0000"
    run.mkdir()
    _run_epochs(str(run), 1, [1.0, 2.0, 3.0])
    stand_in = types.SimpleNamespace(config=Cfg(), model_dir=str(tmp_path))
    assert MaskRCNN.find_last(stand_in) == str(run / "mask_rcnn_x_0003.h5")


# ---------------------------------------------------------------------------------------------
# the tf.data pipeline
# ---------------------------------------------------------------------------------------------
def _bad_dataset():
    return _Bad({1: (np.zeros((40, 40, 3), np.uint8), _mask(40, 40, 1), [7]),         # class id
                 3: (np.zeros((40, 40, 3), np.uint8), _mask(40, 40, 2), [1]),         # count
                 4: (np.full((40, 40, 3), np.nan, np.float32), _mask(40, 40, 1), [1])})  # NaN


def test_pipeline_skips_logs_and_counts_bad_samples(caplog):
    pipe = InputPipeline(_bad_dataset(), Cfg(), shuffle=False, seed=0)
    with caplog.at_level(logging.ERROR, "mrcnn.data"):
        batches = list(pipe.dataset_fn(batch_size=1, epochs=1, num_parallel_calls=1))
    ids = [int(b[0][1].numpy()[0, 0]) for b in batches]  # image_meta[0] is the image id
    assert ids == [0, 2, 5]
    assert pipe.skips.counts == {"error": 3}
    for image_id, what in ((1, r"class ids \[7\] are out of range"), (3, "2 masks but 1 class ids"),
                           (4, "non-finite")):
        assert any(f"image id {image_id} (/data/img{image_id}.png)" in r.getMessage()
                   and __import__("re").search(what, r.getMessage()) for r in caplog.records), image_id
    for b in batches:  # what reaches the graph is finite and in range
        assert np.isfinite(b[0][0].numpy()).all()
        assert b[0][4].numpy().max() < Cfg.NUM_CLASSES


def test_pipeline_strict_mode_raises_the_sample_error():
    pipe = InputPipeline(_bad_dataset(), StrictCfg(), shuffle=False, seed=0)
    with pytest.raises(Exception, match=r"image id 1 \(/data/img1.png\): class ids \[7\]"):
        list(pipe.dataset_fn(batch_size=1, epochs=1, num_parallel_calls=1))
    assert isinstance(pipe.strict_error, SampleError)


# ---------------------------------------------------------------------------------------------
# train(): end to end (slow)
# ---------------------------------------------------------------------------------------------
def _shapes_with_bad_samples():
    from _train_helpers import tiny_datasets
    train_ds, val_ds = tiny_datasets(n_train=8, n_val=2)
    original = train_ds.load_mask

    def load_mask(image_id):
        mask, ids = original(image_id)
        if image_id in (2, 5):
            ids = ids.copy()
            ids[0] = 9  # >= NUM_CLASSES: Matterport's loss op raised InvalidArgumentError
        return mask, ids
    train_ds.load_mask = load_mask
    return train_ds, val_ds


@pytest.mark.slow
def test_train_skips_bad_class_ids_and_keeps_last_plus_best(tmp_path, caplog):
    import mrcnn.model as modellib
    from _train_helpers import TinyConfig
    train_ds, val_ds = _shapes_with_bad_samples()
    model = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path))
    with caplog.at_level(logging.WARNING):
        model.train(train_ds, val_ds, learning_rate=0.01, epochs=3, layers="heads", seed=0,
                    verbose=0, keep=1, tensorboard=False)
    assert "class ids [9] are out of range" in caplog.text
    assert "train pipeline: " in caplog.text and "samples skipped so far" in caplog.text
    files = sorted(f for f in os.listdir(model.log_dir) if f.endswith(".h5"))
    with open(os.path.join(model.log_dir, "checkpoint_losses.json")) as f:
        losses = json.load(f)
    best = min(losses, key=losses.get)
    assert files == sorted({"mask_rcnn_tiny_0003.h5", best})
    assert model.find_last() == os.path.join(model.log_dir, "mask_rcnn_tiny_0003.h5")
    again = modellib.MaskRCNN("training", TinyConfig(), str(tmp_path))
    again.train(train_ds, val_ds, learning_rate=0.01, epochs=4, layers="heads", seed=0, verbose=0,
                keep=1, resume=True, tensorboard=False)
    assert again.epoch == 4 and again.log_dir == model.log_dir
    assert "mask_rcnn_tiny_0004.h5" in os.listdir(model.log_dir)
    assert "mask_rcnn_tiny_0003.h5" not in os.listdir(model.log_dir) or best == "mask_rcnn_tiny_0003.h5"


@pytest.mark.slow
def test_train_strict_raises_sample_error_naming_the_image(tmp_path):
    import mrcnn.model as modellib
    from _train_helpers import TinyConfig

    class Strict(TinyConfig):
        STRICT_DATA_CHECKS = True
    train_ds, _ = _shapes_with_bad_samples()
    model = modellib.MaskRCNN("training", Strict(), str(tmp_path))
    with pytest.raises(SampleError, match=r"^image id [25] \(.*\): class ids \[9\] are out of range"):
        model.train(train_ds, None, learning_rate=0.01, epochs=1, layers="heads", seed=0, verbose=0,
                    tensorboard=False)


def test_train_refuses_a_dataset_with_another_class_count(tmp_path):
    from mrcnn.engine.train import train
    from _train_helpers import tiny_datasets
    train_ds, _ = tiny_datasets(n_train=2, n_val=1)
    fake = types.SimpleNamespace(mode="training", config=Cfg(), epoch=0)  # 4 classes, so do the shapes

    class Five(Cfg):
        NUM_CLASSES = 5
    fake.config = Five()
    with pytest.raises(ValueError, match=r"train dataset has 4 classes .* config.NUM_CLASSES is 5"):
        train(fake, train_ds, None, learning_rate=0.01, epochs=1, layers="heads")


def test_samples_keep_three_checkpoints_by_default():
    from samples.common import SampleError as CliError
    from samples.common import build_parser, checkpoint_keep
    parser = build_parser("x", "x", "x", {"train": "t"})
    assert checkpoint_keep(parser.parse_args(["train"])) == 3
    assert checkpoint_keep(parser.parse_args(["train", "--keep", "0"])) is None
    assert checkpoint_keep(parser.parse_args(["train", "--keep", "5"])) == 5
    with pytest.raises(CliError, match="--keep must be >= 0"):
        checkpoint_keep(parser.parse_args(["train", "--keep", "-1"]))



def test_demo_has_keep_3(capsys):
    from samples.shapes import demo
    with pytest.raises(SystemExit):
        demo.main(["--help"])
    assert "--keep KEEP" in capsys.readouterr().out
