"""Open Images loaders on trees built in tmp from the real COCO mini images and annotations."""
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import DATA
from mrcnn.data.formats.coco import CocoDataset
from mrcnn.data.formats.openimages import OpenImagesDataset, read_class_descriptions

MINI = os.path.join(DATA, "coco_val2017_mini")
PASCAL_XML = """<annotation>
  <folder>images</folder>
  <filename>{id}.jpg</filename>
  <path>{path}</path>
  <source><database>OpenImages</database></source>
  <size><width>{w}</width><height>{h}</height><depth>3</depth></size>
  <segmented>0</segmented>
{objects}</annotation>
"""
OBJECT = """  <object><name>{name}</name><pose>Unspecified</pose>
    <truncated>0</truncated><difficult>0</difficult>
    <bndbox><xmin>{xmin}</xmin><xmax>{xmax}</xmax><ymin>{ymin}</ymin><ymax>{ymax}</ymax></bndbox></object>
"""


def _coco():
    with open(os.path.join(MINI, "annotations.json")) as f:
        data = json.load(f)
    return data, {c["id"]: c["name"] for c in data["categories"]}


def _write_label(root, label, image, anns):
    """What openimages.download writes for one label: 0-based int corners clipped to size-1."""
    os.makedirs(root / label / "images", exist_ok=True)
    os.makedirs(root / label / "pascal", exist_ok=True)
    stem = f"{image['id']:012d}"
    path = root / label / "images" / f"{stem}.jpg"
    shutil.copy(os.path.join(MINI, "images", image["file_name"]), path)
    w, h = image["width"], image["height"]
    objects = "".join(OBJECT.format(name=label, xmin=min(int(x), w - 1), ymin=min(int(y), h - 1),
                                    xmax=min(int(x + bw), w - 1), ymax=min(int(y + bh), h - 1))
                      for x, y, bw, bh in (a["bbox"] for a in anns))
    (root / label / "pascal" / f"{stem}.xml").write_text(
        PASCAL_XML.format(id=stem, path=path, w=w, h=h, objects=objects))


@pytest.fixture(scope="module")
def download_tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("oi")
    data, names = _coco()
    images = {i["id"]: i for i in data["images"]}
    for label, cat in (("person", 1), ("car", 3), ("bus", 6)):
        by_image = {}
        for a in data["annotations"]:
            if a["category_id"] == cat and not a["iscrowd"]:
                by_image.setdefault(a["image_id"], []).append(a)
        for image_id, anns in by_image.items():
            _write_label(root, label, images[image_id], anns)
    return root, data


def test_download_layout_merges_label_folders(download_tree):
    root, data = download_tree
    ds = OpenImagesDataset()
    report = ds.load_openimages(str(root))
    ds.prepare()
    assert ds.class_names == ["BG", "bus", "car", "person"]
    # person in 128372 and 404249; car and bus only in 128372 → 2 images, one merged
    assert report.kept["images"] == 2
    assert report.kept["instances"] == 10 + 1 + 1
    i = ds.image_from_source_map["openimages.000000128372"]
    masks, ids = ds.load_mask(i)
    assert sorted(ds.class_names[c] for c in ids) == ["bus", "car"] + ["person"] * 9
    assert len(ds.image_info[i]["xml_paths"]) == 3
    # filled boxes: rows ymin..ymax and columns xmin..xmax inclusive, 0-based
    car = [a for a in data["annotations"] if a["category_id"] == 3][0]
    x, y, w, h = car["bbox"]
    m = masks[..., list(ids).index(ds.map_source_class_id("openimages.2"))]
    assert m.sum() == (int(x + w) - int(x) + 1) * (int(y + h) - int(y) + 1)
    assert m[int(y), int(x)] and m[int(y + h), int(x + w)] and not m[int(y) - 1, int(x)]
    assert ds.load_image(i).shape == (427, 640, 3)


def test_label_selection_and_errors(download_tree):
    root, _ = download_tree
    ds = OpenImagesDataset()
    report = ds.load_openimages(str(root), labels=["Car"])
    assert [c["name"] for c in ds.class_info] == ["BG", "car"] and report.kept["images"] == 1
    with pytest.raises(FileNotFoundError, match="zebra"):
        OpenImagesDataset().load_openimages(str(root), labels=["zebra"])
    with pytest.raises(FileNotFoundError, match="not found"):
        OpenImagesDataset().load_openimages(str(root / "nothing"))


def test_missing_image_is_skipped(tmp_path, download_tree):
    root, _ = download_tree
    copy = tmp_path / "oi"
    shutil.copytree(root / "bus", copy / "bus")
    for f in os.listdir(copy / "bus" / "images"):
        os.remove(copy / "bus" / "images" / f)
    ds = OpenImagesDataset()
    report = ds.load_openimages(str(copy))
    assert report.kept["images"] == 0 and report.skipped["missing image file"] == 1


@pytest.fixture(scope="module")
def segmentation_tree(tmp_path_factory):
    """Open Images style CSV + half-size mask PNGs made from real COCO polygons of image 404249."""
    root = tmp_path_factory.mktemp("oiseg")
    coco = CocoDataset()
    coco.load_coco(os.path.join(MINI, "annotations.json"), os.path.join(MINI, "images"),
                   image_ids=[404249])
    coco.prepare()
    masks, ids = coco.load_mask(0)
    (root / "images").mkdir()
    (root / "masks" / "train-masks-0").mkdir(parents=True)
    shutil.copy(os.path.join(MINI, "images", "000000404249.jpg"), root / "images" / "404249abc.jpg")
    mids = {"person": "/m/01g317", "skateboard": "/m/06_fw"}
    rows = ["MaskPath,ImageID,LabelName,BoxID,BoxXMin,BoxXMax,BoxYMin,BoxYMax,PredictedIoU,Clicks"]
    for k, c in enumerate(ids):
        name = coco.class_names[c]
        png = f"404249abc_{mids[name][3:]}_{k:08x}.png"
        small = Image.fromarray(masks[..., k].astype(np.uint8) * 255).resize((214, 320), Image.NEAREST)
        small.save(root / "masks" / "train-masks-0" / png)
        rows.append(f"{png},404249abc,{mids[name]},{k:08x},0,1,0,1,0.9,")
    rows.append("404249abc_gone.png,404249abc,/m/01g317,ffffffff,0,1,0,1,0.9,")
    (root / "seg.csv").write_text("\n".join(rows) + "\n")
    (root / "classes.csv").write_text("/m/01g317,Person\n/m/06_fw,Skateboard\n/m/0k4j,Car\n")
    return root, masks, [coco.class_names[c] for c in ids]


def test_segmentation_csv_masks_resized_to_image(segmentation_tree):
    root, coco_masks, coco_names = segmentation_tree
    assert read_class_descriptions(str(root / "classes.csv"))["/m/0k4j"] == "Car"
    ds = OpenImagesDataset()
    report = ds.load_openimages_segmentation(str(root / "seg.csv"), str(root / "images"),
                                             str(root / "masks"), str(root / "classes.csv"))
    ds.prepare()
    assert report.kept["images"] == 1 and report.kept["instances"] == 2
    assert report.skipped["missing mask file"] == 1 and "line 4" in report.messages[0]
    assert ds.class_names == ["BG", "Person", "Skateboard"]
    masks, ids = ds.load_mask(0)
    assert masks.shape == (640, 427, 2)
    assert [ds.class_names[c] for c in ids] == [n.capitalize() for n in coco_names]
    for k in range(2):
        iou = (masks[..., k] & coco_masks[..., k]).sum() / (masks[..., k] | coco_masks[..., k]).sum()
        assert iou > 0.9


def test_segmentation_class_filter_and_bad_csv(segmentation_tree, tmp_path):
    root, _, _ = segmentation_tree
    ds = OpenImagesDataset()
    report = ds.load_openimages_segmentation(str(root / "seg.csv"), str(root / "images"),
                                             str(root / "masks"), str(root / "classes.csv"),
                                             class_names=["person"])
    assert [c["name"] for c in ds.class_info] == ["BG", "person"]
    assert report.kept["instances"] == 1 and report.skipped["unknown class"] == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("ImageID,LabelName\nx,/m/1\n")
    with pytest.raises(ValueError, match="MaskPath"):
        OpenImagesDataset().load_openimages_segmentation(str(bad), str(root), str(root))
