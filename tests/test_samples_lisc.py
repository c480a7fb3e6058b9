"""samples/lisc/lisc.py on real leukocytes written in LISC's layout by
shared/tools/make_lisc_layout.py (4 images per class from wbc_zheng2018 dataset 2,
except 3 basophils, plus 4 'mixt' composites that the loader skips).

Training here is 2 steps from scratch at 128 px: it checks the command runs end to end
and that evaluate reports mask mAP on the held-out images, not accuracy (the accuracy
target is a long run, see the sample's docstring).
"""
from __future__ import annotations

import glob
import os

import pytest

from _samples_helpers import make_lisc_layout, run_main, tiny_set_args

from samples.lisc import lisc

CLASSES = ["BG", "basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"]


@pytest.fixture(scope="module")
def layout(tmp_path_factory):
    return make_lisc_layout(str(tmp_path_factory.mktemp("lisc") / "LISC Database"), per_class=4)


def keys(ds):
    return sorted(info["id"] for info in ds.image_info)


def test_held_out_split_is_stratified_disjoint_and_reproducible(layout):
    train = lisc.load_subset(layout, "train")
    val = lisc.load_subset(layout, "val")
    assert train.class_names == CLASSES == val.class_names
    assert len(keys(train)) + len(keys(val)) == 19  # 4 x 4 + 3 basophils; mixt skipped
    assert not set(keys(train)) & set(keys(val))
    # every class is held out at least once (stratified), rare basophils included
    assert sorted({info["class_name"] for info in val.image_info}) == CLASSES[1:]
    assert keys(lisc.load_subset(layout, "val")) == keys(val)
    assert any(keys(lisc.load_subset(layout, "val", seed=s)) != keys(val) for s in (1, 2, 3))
    masks, class_ids = val.load_mask(0)
    assert masks.shape[-1] == 1 and class_ids[0] == val.class_names.index(val.image_info[0]["class_name"])


def test_download_explains_why_not(tmp_path):
    code, _, err = run_main(lisc.main, ["download", "--dataset", str(tmp_path)])
    assert code == 2 and "forbid redistribution" in err and "make_lisc_layout.py" in err


def test_not_a_lisc_folder_is_a_clear_error(tmp_path):
    code, _, err = run_main(lisc.main, ["evaluate", "--dataset", str(tmp_path), "--weights", "none"])
    assert code == 2 and "is not a LISC folder" in err


@pytest.fixture(scope="module")
def trained(layout, tmp_path_factory):
    """Heads only, to stay quick; the sample's default (all layers) is the slow test below."""
    logs = str(tmp_path_factory.mktemp("logs"))
    result = run_main(lisc.main, ["train", "--dataset", layout, "--weights", "none", "--logs", logs,
                                  "--epochs", "1", "--steps", "2", "--val-steps", "0", "--layers", "heads",
                                  "--verbose", "0", *tiny_set_args()])
    return result, logs


def test_train_from_scratch_writes_a_checkpoint(trained):
    (code, out, err), logs = trained
    assert code == 0, err
    assert "LISC: 14 train / 5 held-out images" in out
    assert len(glob.glob(os.path.join(logs, "lisc*", "mask_rcnn_lisc_0001.h5"))) == 1


def test_evaluate_reports_mask_map_on_the_held_out_images(trained, layout):
    logs = trained[1]
    code, out, err = run_main(lisc.main, ["evaluate", "--dataset", layout, "--weights", "last",
                                          "--logs", logs, "--verbose", "0", *tiny_set_args()])
    assert code == 0, err
    line = next(l for l in out.splitlines() if l.startswith("mask mAP@0.5 = "))
    assert line.endswith("on 5 images")
    assert 0.0 <= float(line.split("=")[1].split()[0]) <= 1.0
    for name in CLASSES[1:]:
        assert any(l.startswith(name) for l in out.splitlines()), f"no AP line for {name}"


@pytest.mark.slow
def test_train_all_layers_with_augmentation_then_resume(layout, tmp_path):
    """The sample's default from scratch (all layers, flips and quarter turns), then one more
    epoch from the checkpoint with --weights last (cumulative epochs)."""
    logs = str(tmp_path / "logs")
    argv = ["train", "--dataset", layout, "--logs", logs, "--epochs", "1", "--steps", "2",
            "--val-steps", "1", "--augment", *tiny_set_args()]
    code, out, err = run_main(lisc.main, argv + ["--weights", "none"])
    assert code == 0, err
    assert "Training 'all' layers" in out
    code, out, err = run_main(lisc.main, argv + ["--weights", "last"])
    assert code == 0, err
    assert len(glob.glob(os.path.join(logs, "lisc*", "mask_rcnn_lisc_0002.h5"))) == 1
