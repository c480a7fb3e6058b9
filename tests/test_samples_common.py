"""samples/common.py: the shared command line, ``--weights`` resolution and detection output.

The COCO weights used here are a stand-in written by our own model (an 81-class model
of the tiny test configuration saved with ``save_weights``), since the real
mask_rcnn_coco.h5 is not available on test machines; see tests/_samples_helpers.py.
"""
from __future__ import annotations

import json
import os
import shutil
import warnings

import h5py
import numpy as np
import pytest

from _samples_helpers import TINY, run_main, serve_folder, write_standin_coco_weights
from helpers import DATA

from samples import common
from samples.common import HEAD_LAYERS, SampleError, parse_overrides

COCO_MINI = os.path.join(DATA, "coco_val2017_mini")


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return write_standin_coco_weights(str(tmp_path_factory.mktemp("w") / "mask_rcnn_coco.h5"))


@pytest.fixture()
def no_local_weights(tmp_path, monkeypatch):
    """A machine without mask_rcnn_coco.h5 anywhere and a dead download URL."""
    monkeypatch.delenv("MRCNN_COCO_WEIGHTS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(common, "ROOT_DIR", str(tmp_path / "repo"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MRCNN_COCO_URL", "http://127.0.0.1:9/mask_rcnn_coco.h5")
    return tmp_path


def tiny_model(num_classes: int, mode: str = "inference", model_dir: str = "/tmp"):
    import mrcnn.model as modellib
    from mrcnn.config import Config
    cfg = type("TinyConfig", (Config,), dict(TINY, NAME="tiny", NUM_CLASSES=num_classes))()
    return modellib.MaskRCNN(mode=mode, config=cfg, model_dir=model_dir)


def file_value(path: str, layer: str) -> np.ndarray:
    with h5py.File(path, "r") as f:
        name = f[layer].attrs["weight_names"][0]
        return f[layer][name.decode() if isinstance(name, bytes) else name][()]


# -- command line -------------------------------------------------------------------------------
def test_parse_overrides_reads_python_literals_and_strings():
    got = parse_overrides(["IMAGE_MAX_DIM=512", "BACKBONE=resnet50", "RPN_ANCHOR_SCALES=(8, 16)",
                           "LEARNING_RATE=1e-3", "NAME='x y'"])
    assert got == {"IMAGE_MAX_DIM": 512, "BACKBONE": "resnet50", "RPN_ANCHOR_SCALES": (8, 16),
                   "LEARNING_RATE": 0.001, "NAME": "x y"}
    assert parse_overrides([]) == {}


@pytest.mark.parametrize("bad", ["IMAGE_MAX_DIM", "image_max_dim=3", "=4"])
def test_parse_overrides_rejects_malformed_items(bad):
    with pytest.raises(SampleError, match="KEY=VALUE"):
        parse_overrides([bad])


def test_make_config_reports_invalid_values_as_sample_errors():
    from samples.coco.coco import CocoConfig
    with pytest.raises(SampleError, match="divisible by 64"):
        common.make_config(CocoConfig, {"IMAGE_MAX_DIM": 100, "IMAGE_MIN_DIM": 100})
    cfg = common.make_config(CocoConfig, {"IMAGE_MAX_DIM": 256, "IMAGE_MIN_DIM": 256}, NUM_CLASSES=5)
    assert (cfg.NUM_CLASSES, cfg.IMAGE_MAX_DIM, cfg.NAME) == (5, 256, "coco")
    inf = common.inference_config(cfg, DETECTION_MIN_CONFIDENCE=0.0)
    assert (inf.BATCH_SIZE, inf.NUM_CLASSES, inf.DETECTION_MIN_CONFIDENCE) == (1, 5, 0.0)


def test_lr_drop_schedule_drops_after_the_fraction_of_the_epochs_run_now():
    fn = common.lr_drop_schedule(0.01, 0, 10, 0.8)
    assert [fn(e, None) for e in range(10)] == [0.01] * 8 + [0.001] * 2
    # Resumed at epoch 20 for 5 more: the drop is counted from there (round(4.0) = 4 epochs).
    fn = common.lr_drop_schedule(0.01, 20, 5, 0.8)
    assert [fn(e, None) for e in range(20, 25)] == [0.01] * 4 + [0.001]
    # At least one epoch at the full rate, and no schedule where nothing would drop.
    assert common.lr_drop_schedule(0.01, 0, 2, 0.1)(0, None) == 0.01
    assert common.lr_drop_schedule(0.01, 0, 10, 1.0) is None
    assert common.lr_drop_schedule(0.01, 0, 1, 0.5) is None
    with pytest.raises(SampleError, match="--lr-drop"):
        common.lr_drop_schedule(0.01, 0, 10, 0.0)


@pytest.mark.parametrize("module", ["samples.coco.coco", "samples.cats.cat", "samples.lisc.lisc",
                                    "samples.custom.custom"])
def test_every_sample_explains_the_shared_flags(module):
    import importlib
    main = importlib.import_module(module).main
    code, out, _ = run_main(main, ["--help"])
    assert code == 0
    for flag in ("{train,evaluate,detect,download}", "--dataset DIR", "--weights", "--logs DIR",
                 "--limit N", "--epochs N", "--steps N", "--set KEY=VALUE"):
        assert flag in out, f"{module} --help lacks {flag}"
    assert "coco" in out and "imagenet" in out and "last" in out


@pytest.mark.parametrize("module", ["samples.coco.coco", "samples.lisc.lisc", "samples.custom.custom"])
def test_missing_dataset_is_a_clear_error(module, tmp_path):
    import importlib
    main = importlib.import_module(module).main
    code, _, err = run_main(main, ["train", "--weights", "none"])
    assert code == 2 and "needs --dataset" in err
    code, _, err = run_main(main, ["evaluate", "--dataset", str(tmp_path / "nope")])
    assert code == 2 and "does not exist" in err


# -- weights ------------------------------------------------------------------------------------
def test_weights_class_count_reads_the_class_logits_layer(standin, tmp_path):
    assert common.weights_class_count(standin) == 81
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5")
    assert common.weights_class_count(str(junk)) is None


def test_coco_weights_with_other_class_count_skip_the_four_heads(standin):
    model = tiny_model(num_classes=3)
    path, report = common.resolve_weights(model, standin, verbose=0)
    assert path == standin
    assert sorted(report.excluded) == sorted(HEAD_LAYERS)
    assert not set(report.loaded) & set(HEAD_LAYERS)
    assert {"conv1", "fpn_c5p5", "rpn_model", "mrcnn_mask_conv1"} <= set(report.loaded)
    np.testing.assert_array_equal(model.keras_model.get_layer("conv1").get_weights()[0],
                                  file_value(standin, "conv1"))


def test_coco_weights_with_81_classes_load_every_layer(standin):
    model = tiny_model(num_classes=81)
    _, report = common.resolve_weights(model, standin, verbose=0)
    # mrcnn_bbox is a weightless Reshape in Matterport's graph: three heads hold weights
    assert report.excluded == []
    assert {"mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_mask"} <= set(report.loaded)
    assert common.heads_to_exclude(model.config, standin) == []


def test_coco_keyword_finds_the_file_named_by_the_environment(standin, monkeypatch):
    monkeypatch.setenv("MRCNN_COCO_WEIGHTS", standin)
    assert common.locate_coco_weights(download=False) == standin
    model = tiny_model(num_classes=2)
    path, report = common.resolve_weights(model, "coco", verbose=0)
    assert path == standin and sorted(report.excluded) == sorted(HEAD_LAYERS)


def test_coco_keyword_finds_the_file_in_the_working_folder(standin, no_local_weights):
    shutil.copy(standin, no_local_weights / "mask_rcnn_coco.h5")
    assert common.locate_coco_weights(download=False) == str(no_local_weights / "mask_rcnn_coco.h5")


def test_environment_naming_a_missing_file_is_an_error(monkeypatch, tmp_path):
    monkeypatch.setenv("MRCNN_COCO_WEIGHTS", str(tmp_path / "missing.h5"))
    with pytest.raises(SampleError, match="MRCNN_COCO_WEIGHTS=.*does not exist"):
        common.locate_coco_weights()


def test_coco_keyword_offline_says_what_to_do(no_local_weights):
    with pytest.raises(SampleError) as info:
        common.locate_coco_weights(verbose=0)
    msg = str(info.value)
    assert "mask_rcnn_coco.h5 is not on this machine" in msg
    assert "127.0.0.1:9" in msg                       # the URL that failed
    assert "--weights /path/to/mask_rcnn_coco.h5" in msg and "MRCNN_COCO_WEIGHTS" in msg
    assert "mask_rcnn_coco.h5.txt" in msg
    assert not os.path.exists(no_local_weights / "home" / ".keras" / "models" / "mask_rcnn_coco.h5")


def test_coco_keyword_downloads_when_a_mirror_is_reachable(standin, no_local_weights, monkeypatch):
    served = no_local_weights / "served"
    served.mkdir()
    shutil.copy(standin, served / "mask_rcnn_coco.h5")
    with serve_folder(str(served)) as url:
        monkeypatch.setenv("MRCNN_COCO_URL", url + "/mask_rcnn_coco.h5")
        path = common.locate_coco_weights(verbose=0)
    assert path == str(no_local_weights / "home" / ".keras" / "models" / "mask_rcnn_coco.h5")
    assert common.weights_class_count(path) == 81


def test_last_without_checkpoint_and_missing_path_are_clear_errors(tmp_path):
    model = tiny_model(num_classes=2, model_dir=str(tmp_path))
    with pytest.raises(SampleError, match="--weights last: no checkpoint of 'tiny'"):
        common.resolve_weights(model, "last", verbose=0)
    with pytest.raises(SampleError, match="no such file"):
        common.resolve_weights(model, str(tmp_path / "nope.h5"), verbose=0)
    assert common.resolve_weights(model, "none") == (None, None)


def test_imagenet_failure_is_a_clear_error(monkeypatch, tmp_path):
    model = tiny_model(num_classes=2, model_dir=str(tmp_path))

    def offline():
        raise Exception("URL fetch failure: no network")
    monkeypatch.setattr(model, "get_imagenet_weights", offline)
    with pytest.raises(SampleError, match="ImageNet weights .*no network.*~/.keras/models"):
        common.resolve_weights(model, "imagenet", verbose=0)


def test_wrong_architecture_file_is_a_clear_error(standin, tmp_path):
    from mrcnn.config import Config
    import mrcnn.model as modellib
    cfg = type("WideConfig", (Config,), dict(TINY, NAME="wide", NUM_CLASSES=81,
                                              TOP_DOWN_PYRAMID_SIZE=128))()
    model = modellib.MaskRCNN(mode="inference", config=cfg, model_dir=str(tmp_path))
    with pytest.raises(SampleError, match="--weights .*does not fit the model"):
        common.resolve_weights(model, standin, verbose=0)


# -- detection output ---------------------------------------------------------------------------
def test_detect_and_save_writes_pictures_and_json(standin, tmp_path):
    from pycocotools import mask as mask_utils
    model = tiny_model(num_classes=81)
    common.resolve_weights(model, standin, verbose=0)
    names = ["000000128372.jpg", "000000343934.jpg"]
    paths = [os.path.join(COCO_MINI, "images", n) for n in names]
    out = tmp_path / "out"
    result = common.detect_and_save(model, common.read_image_files(paths), common.COCO_CLASS_NAMES,
                                    str(out), verbose=0)
    assert [i["file_name"] for i in result["images"]] == paths
    for name, path in zip(names, paths):
        stem = name[:-4]
        assert (out / f"{stem}.png").stat().st_size > 1000
        record = json.loads((out / f"{stem}.json").read_text())
        assert record["image"] == path and (record["height"], record["width"]) in ((427, 640), (480, 640))
        for inst in record["instances"]:
            assert inst["class_name"] == common.COCO_CLASS_NAMES[inst["class_id"]]
            y1, x1, y2, x2 = inst["box"]
            assert 0 <= y1 <= y2 <= record["height"] and 0 <= x1 <= x2 <= record["width"]
            rle = dict(inst["mask_rle"], counts=inst["mask_rle"]["counts"].encode())
            with warnings.catch_warnings():  # pycocotools 2.0.x vs NumPy 2 copy keyword
                warnings.simplefilter("ignore", DeprecationWarning)
                area = int(mask_utils.decode(rle).sum())
            assert area == inst["mask_area"]
    coco = json.loads((out / "coco_results.json").read_text())
    assert len(coco) == sum(i["detections"] for i in result["images"])
    assert {r["image_id"] for r in coco} <= {1, 2}
    index = json.loads((out / "images.json").read_text())
    assert [i["id"] for i in index] == [1, 2]


def test_list_images_errors_name_the_folder(tmp_path):
    with pytest.raises(SampleError, match="is not a folder"):
        common.list_images(str(tmp_path / "nope"))
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(SampleError, match="holds no image"):
        common.list_images(str(tmp_path))
