"""LabelMe loader on the real LabelMe example (checked against its labelme2coco output)."""
import base64
import io
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import DATA
from mrcnn.data.dataset import ImageLoadError
from mrcnn.data.formats.coco import CocoDataset
from mrcnn.data.formats.labelme import LabelMeDataset

EXAMPLE = os.path.join(DATA, "labelme_instance_seg_example")
ANNOTATED = os.path.join(EXAMPLE, "data_annotated")


def _load(path, **kw):
    ds = LabelMeDataset()
    report = ds.load_labelme(path, **kw)
    ds.prepare()
    return ds, report


@pytest.fixture(scope="module")
def labelme():
    return _load(ANNOTATED)


@pytest.fixture(scope="module")
def reference():
    ds = CocoDataset()
    ds.load_coco(os.path.join(EXAMPLE, "data_dataset_coco", "annotations.json"))
    ds.prepare()
    return ds


def test_counts_and_discovered_classes(labelme):
    ds, report = labelme
    assert report.kept["images"] == 3 and report.kept["instances"] == 12
    assert report.ignored["__ignore__ shapes"] == 2
    assert ds.class_names == ["BG", "bottle", "bus", "car", "chair", "person", "sofa"]
    assert [info["id"] for info in ds.image_info] == ["2011_000003", "2011_000006", "2011_000025"]


def test_group_id_merges_shapes(labelme):
    ds, _ = labelme
    info = ds.image_info[ds.image_from_source_map["labelme.2011_000006"]]
    sofa = [inst for inst in info["instances"] if inst["label"] == "sofa"]
    assert len(sofa) == 1 and len(sofa[0]["shapes"]) == 4  # SOURCE.md: sofa is 4 polygons
    info = ds.image_info[ds.image_from_source_map["labelme.2011_000003"]]
    assert [len(i["shapes"]) for i in info["instances"]] == [1, 2, 1]


def test_masks_agree_with_labelme2coco(labelme, reference):
    ds, _ = labelme
    by_stem = {os.path.basename(info["path"])[:-4]: i for i, info in enumerate(reference.image_info)}
    for i in ds.image_ids:
        masks, ids = ds.load_mask(i)
        ref_masks, ref_ids = reference.load_mask(by_stem[ds.image_info[i]["id"]])
        assert masks.shape == ref_masks.shape and masks.dtype == bool
        assert [ds.class_names[c] for c in ids] == [reference.class_names[c] for c in ref_ids]
        for k in range(masks.shape[2]):
            inter = (masks[..., k] & ref_masks[..., k]).sum()
            union = (masks[..., k] | ref_masks[..., k]).sum()
            assert inter / union > 0.94  # PIL vs skimage polygon filling differ on the border only


def test_given_class_names_skip_unknown_labels():
    ds, report = _load(ANNOTATED, class_names=["person", "car"])
    assert ds.class_names == ["BG", "person", "car"]
    assert report.kept["instances"] == 2 + 4 + 1
    assert report.skipped["unknown class"] == 5  # bottle, chair, sofa, 2 buses
    assert any("2011_000025.json" in m and "'bus'" in m for m in report.messages)


def test_subset_split_is_disjoint_and_reproducible():
    train, _ = _load(ANNOTATED, subset="train", val_fraction=0.34, seed=3)
    val, _ = _load(ANNOTATED, subset="val", val_fraction=0.34, seed=3)
    again, _ = _load(ANNOTATED, subset="val", val_fraction=0.34, seed=3)
    t = {i["id"] for i in train.image_info}
    v = {i["id"] for i in val.image_info}
    assert len(v) == 1 and len(t) == 2 and not t & v
    assert v == {i["id"] for i in again.image_info}


def test_embedded_image_data_used_when_file_absent(tmp_path):
    with open(os.path.join(ANNOTATED, "2011_000025.json")) as f:
        data = json.load(f)
    with Image.open(os.path.join(ANNOTATED, "2011_000025.jpg")) as im:
        buf = io.BytesIO()
        im.save(buf, format="PNG")
        pixels = np.asarray(im.convert("RGB"))
    data["imageData"] = base64.b64encode(buf.getvalue()).decode()
    data["imagePath"] = "..\\elsewhere\\2011_000025.jpg"  # Windows-style, and absent
    (tmp_path / "x.json").write_text(json.dumps(data))
    ds, report = _load(str(tmp_path))
    assert report.kept["images"] == 1 and ds.image_info[0]["path"] is None
    np.testing.assert_array_equal(ds.load_image(0), pixels)
    assert ds.load_mask(0)[0].shape == (375, 500, 3)


def _shape(label, points, kind="polygon", group=None):
    return {"label": label, "points": points, "group_id": group, "shape_type": kind, "flags": {}}


def test_shape_types_and_malformed_shapes(tmp_path):
    Image.new("RGB", (50, 40)).save(tmp_path / "img.png")
    shapes = [
        _shape("a", [[10, 10], [19, 10], [19, 19], [10, 19]]),         # 0 polygon
        _shape("a", [[1, 1], [5, 5]]),                                 # 1 polygon with 2 points
        _shape("b", [[30, 5], [39, 14]], "rectangle"),                 # 2 rectangle
        _shape("b", [[25, 25], [25, 30]], "circle"),                   # 3 circle r=5
        _shape("a", [[0, 0], [10, 10]], "line"),                       # 4 line: ignored
        _shape("a", [[3, 3]], "point"),                                # 5 point: ignored
        _shape("a", [[100, 100], [120, 100], [120, 120]]),             # 6 entirely outside
        _shape("c", [[40, 30], [60, 30], [60, 50], [40, 50]]),         # 7 clipped
        _shape("__ignore__", [[0, 0], [5, 0], [5, 5]]),                # 8 dropped
        _shape("a", [[0, 0], [1, 0], [1, 1]], "cuboid"),               # 9 unknown type
    ]
    data = {"version": "5.2.1", "shapes": shapes, "imagePath": "img.png", "imageData": None,
            "imageHeight": 40, "imageWidth": 50}
    (tmp_path / "img.json").write_text(json.dumps(data))
    ds, report = _load(str(tmp_path / "img.json"))
    assert report.skipped["polygon with too few points"] == 1
    assert report.skipped["shape outside the image"] == 1
    assert report.skipped["unknown shape type"] == 1
    assert report.ignored["line shapes"] == 1 and report.ignored["point shapes"] == 1
    assert report.ignored["__ignore__ shapes"] == 1 and report.ignored["shapes clipped to the image"] == 1
    assert any("img.json: shape 1 ('a', polygon): 2 point(s)" in m for m in report.messages)
    masks, ids = ds.load_mask(0)
    assert [ds.class_names[c] for c in ids] == ["a", "b", "b", "c"]
    area = masks.sum(axis=(0, 1))
    assert area[0] == 100 and area[1] == 100
    assert abs(area[2] - np.pi * 25) < 10
    assert area[3] == 10 * 10  # x 40..49, y 30..39


def test_missing_image_without_data_is_skipped(tmp_path):
    data = {"shapes": [_shape("a", [[1, 1], [5, 1], [5, 5]])], "imagePath": "none.jpg",
            "imageData": None, "imageHeight": 10, "imageWidth": 10}
    (tmp_path / "n.json").write_text(json.dumps(data))
    (tmp_path / "bad.json").write_text("{oops")
    ds, report = _load(str(tmp_path))
    assert report.kept["images"] == 0
    assert report.skipped["missing image file"] == 1 and report.skipped["unreadable json"] == 1
    assert any("none.jpg" in m for m in report.messages)


def test_load_image_error_names_file(tmp_path):
    shutil.copy(os.path.join(ANNOTATED, "2011_000003.json"), tmp_path)
    shutil.copy(os.path.join(ANNOTATED, "2011_000003.jpg"), tmp_path)
    ds, _ = _load(str(tmp_path))
    os.remove(tmp_path / "2011_000003.jpg")
    with pytest.raises(ImageLoadError, match="2011_000003.jpg"):
        ds.load_image(0)


def test_same_name_in_two_folders_gets_distinct_ids(tmp_path):
    for sub in ("a", "b"):
        os.makedirs(tmp_path / sub)
        shutil.copy(os.path.join(ANNOTATED, "2011_000025.json"), tmp_path / sub)
        shutil.copy(os.path.join(ANNOTATED, "2011_000025.jpg"), tmp_path / sub)
    files = [str(tmp_path / s / "2011_000025.json") for s in ("a", "b")]
    ds, report = _load(files)
    assert report.kept["images"] == 2
    assert len(ds.image_from_source_map) == 2
    assert ds.image_info[0]["id"].endswith(os.path.join("a", "2011_000025"))


def test_corrupt_embedded_image_data(tmp_path):
    data = {"shapes": [_shape("a", [[1, 1], [5, 1], [5, 5]])], "imagePath": "none.jpg",
            "imageData": base64.b64encode(b"not a png").decode(), "imageHeight": 10, "imageWidth": 10}
    (tmp_path / "c.json").write_text(json.dumps(data))
    ds, report = _load(str(tmp_path))
    assert report.kept["images"] == 1
    with pytest.raises(ImageLoadError, match=r"image 0: embedded imageData of .*c.json cannot be decoded"):
        ds.load_image(0)
