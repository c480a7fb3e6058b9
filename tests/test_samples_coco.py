"""samples/coco/coco.py on the 6-image COCO val2017 extract in shared/data/coco_val2017_mini.

``--weights coco`` is served by a stand-in for mask_rcnn_coco.h5 written by our own
model (81 classes, tiny configuration, random values; see tests/_samples_helpers.py):
the real file is not available here. The training test checks the whole path runs and
writes a checkpoint, not accuracy.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import zipfile

import pytest

from _samples_helpers import run_main, serve_folder, tiny_set_args, write_standin_coco_weights
from helpers import DATA

from samples.coco import coco

MINI = os.path.join(DATA, "coco_val2017_mini")
ANNOTATED = [128372, 194216, 343934, 404249, 464689]  # image 89 has no annotation


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return write_standin_coco_weights(str(tmp_path_factory.mktemp("w") / "mask_rcnn_coco.h5"))


@pytest.fixture()
def official_layout(tmp_path):
    """The mini set rearranged as COCO's own release: annotations/ + val2017/."""
    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    shutil.copy(os.path.join(MINI, "annotations.json"), root / "annotations" / "instances_val2017.json")
    shutil.copytree(os.path.join(MINI, "images"), root / "val2017")
    return root


# -- data ----------------------------------------------------------------------------------------
def test_single_json_folder_is_split_reproducibly():
    train, _ = coco.load_coco_subset(MINI, "train")
    val, gt = coco.load_coco_subset(MINI, "val")
    train_ids = sorted(i["id"] for i in train.image_info)
    val_ids = sorted(i["id"] for i in val.image_info)
    assert len(val_ids) == 1 and len(train_ids) == 4
    assert sorted(train_ids + val_ids) == ANNOTATED
    again = sorted(i["id"] for i in coco.load_coco_subset(MINI, "val")[0].image_info)
    assert again == val_ids
    assert train.num_classes == 81 and train.class_names[1] == "person"
    assert set(gt.getImgIds()) >= set(val_ids)
    other_seed = [sorted(i["id"] for i in coco.load_coco_subset(MINI, "val", seed=s)[0].image_info)
                  for s in range(1, 6)]
    assert any(v != val_ids for v in other_seed)


def test_json_file_and_official_layout_are_found(official_layout):
    path, image_dir, single = coco.coco_files(os.path.join(MINI, "annotations.json"), "val", "2017")
    assert (path, image_dir, single) == (os.path.join(MINI, "annotations.json"),
                                         os.path.join(MINI, "images"), True)
    path, image_dir, single = coco.coco_files(str(official_layout), "val", "2017")
    assert path.endswith("annotations/instances_val2017.json") and image_dir.endswith("val2017")
    assert not single
    ds, _ = coco.load_coco_subset(str(official_layout), "val", "2017")
    assert sorted(i["id"] for i in ds.image_info) == ANNOTATED  # the whole official subset
    masks, class_ids = ds.load_mask(0)
    assert masks.shape[-1] == len(class_ids) > 0


def test_matterport_style_load_coco(official_layout):
    ds = coco.CocoDataset()
    gt = ds.load_coco(str(official_layout), "val", year="2017", return_coco=True)
    ds.prepare()
    assert len(ds.image_ids) == 5 and sorted(gt.getImgIds()) == sorted(ANNOTATED + [89])
    plain = coco.CocoDataset()
    plain.load_coco(os.path.join(MINI, "annotations.json"), image_dir=os.path.join(MINI, "images"))
    plain.prepare()
    assert len(plain.image_ids) == 5
    assert callable(coco.evaluate_coco) and callable(coco.build_coco_results)


def test_not_a_coco_folder_is_a_clear_error(tmp_path):
    code, _, err = run_main(coco.main, ["evaluate", "--dataset", str(tmp_path)])
    assert code == 2
    assert "is not a COCO folder" in err and "instances_val2017.json" in err


# -- download ------------------------------------------------------------------------------------
def _mirror(folder):
    """COCO's download layout (zips/val2017.zip, annotations/annotations_trainval2017.zip)."""
    (folder / "zips").mkdir(parents=True)
    (folder / "annotations").mkdir()
    with zipfile.ZipFile(folder / "zips" / "val2017.zip", "w") as z:
        for f in sorted(glob.glob(os.path.join(MINI, "images", "*.jpg"))):
            z.write(f, "val2017/" + os.path.basename(f))
    with zipfile.ZipFile(folder / "annotations" / "annotations_trainval2017.zip", "w") as z:
        z.write(os.path.join(MINI, "annotations.json"), "annotations/instances_val2017.json")


def test_download_fetches_and_unpacks_archives(tmp_path, monkeypatch):
    _mirror(tmp_path / "mirror")
    target = tmp_path / "coco"
    with serve_folder(str(tmp_path / "mirror")) as url:
        monkeypatch.setenv("MRCNN_COCO_DATA_URL", url)
        code, out, err = run_main(coco.main, ["download", "--dataset", str(target), "--year", "2017",
                                              "--subset", "val"])
    assert code == 0, err
    assert len(os.listdir(target / "val2017")) == 6
    with open(target / "annotations" / "instances_val2017.json") as f:
        assert len(json.load(f)["annotations"]) == 36
    assert os.listdir(target / "downloads") == []  # archives removed once unpacked
    ds, _ = coco.load_coco_subset(str(target), "val", "2017")
    assert len(ds.image_ids) == 5


def test_download_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("MRCNN_COCO_DATA_URL", "http://127.0.0.1:9")
    code, _, err = run_main(coco.main, ["download", "--dataset", str(tmp_path / "coco"),
                                        "--subset", "val", "--verbose", "0"])
    assert code == 2
    assert "could not download COCO val2017 images" in err
    assert "http://127.0.0.1:9/zips/val2017.zip" in err and "Offline" in err
    assert not glob.glob(str(tmp_path / "coco" / "downloads" / "*"))  # no half files


# -- train / evaluate / detect -------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(standin, tmp_path_factory):
    """2 training steps + 1 validation step from the stand-in COCO weights."""
    logs = str(tmp_path_factory.mktemp("logs"))
    mp = pytest.MonkeyPatch()
    mp.setenv("MRCNN_COCO_WEIGHTS", standin)
    try:
        code, out, err = run_main(coco.main, ["train", "--dataset", MINI, "--weights", "coco",
                                              "--logs", logs, "--epochs", "1", "--steps", "2",
                                              "--val-steps", "1", "--verbose", "0", *tiny_set_args()])
    finally:
        mp.undo()
    return code, out, err, logs


def test_train_from_coco_weights_writes_a_checkpoint(trained):
    code, out, err, logs = trained
    assert code == 0, err
    assert "COCO training: 4 train / 1 val images, 81 classes" in out
    assert "heads excluded" not in out  # 81 classes: the heads are loaded too
    checkpoint = glob.glob(os.path.join(logs, "coco*", "mask_rcnn_coco_0001.h5"))
    assert len(checkpoint) == 1
    assert f"Last checkpoint: {checkpoint[0]}" in out


def test_evaluate_prints_box_and_mask_ap(trained):
    logs = trained[3]
    code, out, err = run_main(coco.main, ["evaluate", "--dataset", MINI, "--weights", "last",
                                          "--logs", logs, "--verbose", "0", *tiny_set_args()])
    assert code == 0, err
    for kind in ("bbox", "segm"):
        line = next(l for l in out.splitlines() if l.startswith(f"COCO {kind}: AP="))
        values = dict(part.split("=") for part in line.split(": ", 1)[1].split())
        assert set(values) == {"AP", "AP50", "AP75"}
        assert all(0.0 <= float(v) <= 1.0 for v in values.values())


def test_detect_writes_pictures_of_the_held_out_images(trained, tmp_path):
    logs = trained[3]
    checkpoint = glob.glob(os.path.join(logs, "coco*", "mask_rcnn_coco_0001.h5"))[0]
    out_dir = tmp_path / "pictures"
    code, out, err = run_main(coco.main, ["detect", "--dataset", MINI, "--weights", checkpoint,
                                          "--logs", logs, "--out", str(out_dir), "--verbose", "0",
                                          *tiny_set_args()])
    assert code == 0, err
    assert sorted(os.listdir(out_dir)) == ["000000343934.json", "000000343934.png",
                                           "coco_results.json", "images.json"]
