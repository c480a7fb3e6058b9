"""samples/custom/custom.py: LabelMe polygons and LabelMe→COCO JSON, with classes of their own.

Data: shared/data/labelme_instance_seg_example (3 VOC photos annotated in LabelMe, and
the same annotations converted by labelme2coco). ``--weights coco`` is a stand-in
mask_rcnn_coco.h5 written by our own 81-class tiny model (the real file is not available
here; see tests/_samples_helpers.py): training must skip the four class-specific heads
because these datasets have 6 classes.
"""
from __future__ import annotations

import glob
import json
import os

import pytest

from _samples_helpers import run_main, tiny_set_args, write_standin_coco_weights
from helpers import DATA

from samples.common import SampleError
from samples.custom import custom

EXAMPLE = os.path.join(DATA, "labelme_instance_seg_example")
LABELME = os.path.join(EXAMPLE, "data_annotated")
COCO_DIR = os.path.join(EXAMPLE, "data_dataset_coco")
COCO_JSON = os.path.join(COCO_DIR, "annotations.json")
FOUND = ["BG", "bottle", "bus", "car", "chair", "person", "sofa"]


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return write_standin_coco_weights(str(tmp_path_factory.mktemp("w") / "mask_rcnn_coco.h5"))


def test_format_is_detected(tmp_path):
    assert custom.detect_format(LABELME) == "labelme"
    assert custom.detect_format(COCO_DIR) == "coco"
    assert custom.detect_format(COCO_JSON) == "coco"
    assert custom.detect_format(os.path.join(LABELME, "2011_000003.json")) == "labelme"
    (tmp_path / "x.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(SampleError, match="neither annotations.json .* nor LabelMe"):
        custom.detect_format(str(tmp_path))


@pytest.mark.parametrize("path", [LABELME, COCO_DIR, COCO_JSON])
def test_classes_are_discovered_from_the_annotations(path):
    train = custom.load_subset(path, "auto", "train")
    val = custom.load_subset(path, "auto", "val")
    # labelme2coco lists all 20 VOC labels; only those that occur become classes
    assert train.class_names == FOUND == val.class_names
    assert len(train.image_ids) == 2 and len(val.image_ids) == 1
    names = {os.path.basename(i["path"]) for i in train.image_info + val.image_info}
    assert names == {"2011_000003.jpg", "2011_000006.jpg", "2011_000025.jpg"}


def test_classes_can_be_chosen(tmp_path):
    ds = custom.load_subset(LABELME, "labelme", "all", class_names=["person", "car"])
    assert ds.class_names == ["BG", "person", "car"]
    ids = {int(c) for i in ds.image_ids for c in ds.load_mask(i)[1]}
    assert ids <= {1, 2} and ids
    ds = custom.load_subset(COCO_JSON, "coco", "all", class_names=["person", "car"])
    assert ds.class_names == ["BG", "car", "person"]  # COCO keeps category-id order
    with pytest.raises(SampleError, match="no category named \\['laptop'\\]"):
        custom.load_subset(COCO_JSON, "coco", "all", class_names=["laptop"])


def test_grouped_labelme_shapes_are_one_instance():
    ds = custom.load_subset(LABELME, "labelme", "all")
    i = next(k for k, info in enumerate(ds.image_info) if info["id"] == "2011_000006")
    masks, class_ids = ds.load_mask(i)
    names = [ds.class_names[c] for c in class_ids]
    assert names.count("sofa") == 1  # four polygons sharing a group_id


@pytest.mark.parametrize("dataset,name", [(LABELME, "labelme"), (COCO_JSON, "coco")])
def test_train_with_coco_weights_skips_the_class_heads(dataset, name, standin, tmp_path, monkeypatch):
    monkeypatch.setenv("MRCNN_COCO_WEIGHTS", standin)
    logs = tmp_path / "logs"
    code, out, err = run_main(custom.main, ["train", "--dataset", dataset, "--weights", "coco",
                                            "--logs", str(logs), "--steps", "2", "--val-steps", "0",
                                            *tiny_set_args()])
    assert code == 0, err
    assert "classes: bottle, bus, car, chair, person, sofa" in out
    assert "class-specific heads excluded: the file has 81 classes, the model 7" in out
    assert "excluded (4): mrcnn_class_logits, mrcnn_bbox_fc, mrcnn_bbox, mrcnn_mask" in out
    assert glob.glob(str(logs / "custom*" / "mask_rcnn_custom_0001.h5"))


def test_download_has_nothing_to_fetch(tmp_path):
    code, _, err = run_main(custom.main, ["download", "--dataset", str(tmp_path)])
    assert code == 2 and "nothing to download" in err
