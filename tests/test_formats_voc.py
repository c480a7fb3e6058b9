"""VOC loader on the real PASCAL VOC sample and the labelme2voc output, plus malformed input."""
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from helpers import DATA
from mrcnn.data.formats.labelme import LabelMeDataset
from mrcnn.data.formats.voc import VocDataset, parse_voc_xml, read_class_names

VOC = os.path.join(DATA, "pascal_voc_sample")
LABELME = os.path.join(DATA, "labelme_instance_seg_example")


def _load(root, **kw):
    ds = VocDataset()
    report = ds.load_voc(root, **kw)
    ds.prepare()
    return ds, report


def test_parse_xml_any_element_order_and_float_box():
    ann = parse_voc_xml(os.path.join(VOC, "Annotations", "2011_003353.xml"))
    assert ann["filename"] == "2011_003353.jpg" and (ann["width"], ann["height"]) == (375, 500)
    assert ann["objects"] == [{"name": "person", "difficult": 0, "truncated": 0,
                               "box": (130.0, 45.70000076293945, 375.0, 470.0)}]


def test_auto_mode_uses_png_where_present():
    ds, report = _load(VOC)
    assert report.kept["images"] == 2 and report.kept["instances"] == 3
    assert report.kept["images with segmentation masks"] == 1
    assert report.kept["images with boxes masks"] == 1
    i = ds.image_from_source_map["voc.2007_000063"]
    masks, ids = ds.load_mask(i)
    assert [ds.class_names[c] for c in ids] == ["dog", "chair"]
    with Image.open(os.path.join(VOC, "SegmentationObject", "2007_000063.png")) as im:
        obj = np.asarray(im)
    np.testing.assert_array_equal(masks[..., 0], obj == 1)
    np.testing.assert_array_equal(masks[..., 1], obj == 2)
    assert masks.sum(axis=(0, 1)).tolist() == [27632, 78930]
    assert not masks[obj == 255].any()  # the void band belongs to no instance


def test_class_from_xml_order_without_class_png(tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(VOC, root)
    os.chmod(root / "SegmentationClass", 0o755)
    shutil.rmtree(root / "SegmentationClass")
    ds, _ = _load(str(root), mask_mode="segmentation")
    masks, ids = ds.load_mask(0)
    assert [ds.class_names[c] for c in ids] == ["dog", "chair"]  # XML objects 1, 2


def test_box_mode_fills_inclusive_one_based_boxes():
    ds, report = _load(VOC, mask_mode="boxes")
    assert report.kept["images with boxes masks"] == 2
    masks, ids = ds.load_mask(ds.image_from_source_map["voc.2007_000063"])
    dog = masks[..., 0]
    # xmin 123..xmax 379, ymin 115..ymax 275 (1-based inclusive) → rows 114..274, cols 122..378
    assert dog.sum() == (379 - 123 + 1) * (275 - 115 + 1)
    assert dog[114, 122] and dog[274, 378] and not dog[113, 122] and not dog[275, 378]
    chair = masks[..., 1]
    assert chair[0:375, 74:428].all() and chair.sum() == 375 * 354
    masks, _ = ds.load_mask(ds.image_from_source_map["voc.2011_003353"])
    # float ymin 45.7 → first row 45 (rounded from 44.7)
    assert masks[..., 0].sum() == (470 - 45) * (375 - 130 + 1)


def test_segmentation_mode_skips_images_without_png():
    ds, report = _load(VOC, mask_mode="segmentation")
    assert report.kept["images"] == 1 and report.skipped["no instance png"] == 1


def test_labelme2voc_pngs_match_labelme_polygons():
    names = read_class_names(os.path.join(LABELME, "data_dataset_voc", "class_names.txt"))
    assert len(names) == 20 and names[0] == "aeroplane"
    voc, report = _load(os.path.join(LABELME, "data_dataset_voc"), class_names=names,
                        image_dir=os.path.join(LABELME, "data_annotated"))
    assert report.kept["instances"] == 12
    lm = LabelMeDataset()
    lm.load_labelme(os.path.join(LABELME, "data_annotated"), class_names=names)
    lm.prepare()
    ious = []
    for i in voc.image_ids:
        masks, ids = voc.load_mask(i)
        j = lm.image_from_source_map["labelme." + voc.image_info[i]["id"]]
        lm_masks, lm_ids = lm.load_mask(j)
        assert [voc.class_names[c] for c in ids] == [lm.class_names[c] for c in lm_ids]
        for k in range(masks.shape[2]):
            ious.append((masks[..., k] & lm_masks[..., k]).sum() / (masks[..., k] | lm_masks[..., k]).sum())
    # PIL (labelme2voc) vs skimage filling, and later shapes overwriting earlier ones in the PNG
    assert len(ious) == 12 and min(ious) > 0.9 and np.mean(ious) > 0.95  # measured 0.908, 0.955


def test_discovered_classes_and_difficult(tmp_path):
    root = tmp_path / "voc"
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    Image.new("RGB", (20, 10)).save(root / "JPEGImages" / "a.jpg")
    (root / "Annotations" / "a.xml").write_text(
        "<annotation><filename>a.jpg</filename><size><width>20</width><height>10</height></size>"
        "<object><name>zebra</name><difficult>1</difficult><bndbox><xmin>1</xmin><ymin>1</ymin>"
        "<xmax>5</xmax><ymax>5</ymax></bndbox></object>"
        "<object><name>ant</name><bndbox><xmin>15</xmin><ymin>8</ymin><xmax>30</xmax><ymax>20</ymax>"
        "</bndbox></object>"
        "<object><name>ant</name><bndbox><xmin>50</xmin><ymin>50</ymin><xmax>60</xmax><ymax>60</ymax>"
        "</bndbox></object>"
        "<object><name>ant</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>2</xmax><ymax>6</ymax>"
        "</bndbox></object>"
        "<object><name>ant</name></object></annotation>")
    ds, report = _load(str(root), class_names=None, skip_difficult=True)
    assert ds.class_names == ["BG", "ant", "zebra"]
    assert report.ignored["difficult objects"] == 1 and report.ignored["boxes clipped to the image"] == 1
    assert report.skipped["box outside the image"] == 1 and report.skipped["empty box"] == 1
    assert report.skipped["missing box"] == 1
    assert any("a.xml: object 2 ('ant')" in m for m in report.messages)
    masks, ids = ds.load_mask(0)
    assert masks.shape == (10, 20, 1) and masks[7:10, 14:20, 0].all() and masks.sum() == 18


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="VOC root"):
        VocDataset().load_voc(str(tmp_path / "none"))
    with pytest.raises(ValueError, match="mask_mode"):
        VocDataset().load_voc(VOC, mask_mode="polygons")
    with pytest.raises(FileNotFoundError, match="image set"):
        VocDataset().load_voc(VOC, image_set="train")
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Annotations" / "x.xml").write_text("<annotation><object>")
    ds, report = _load(str(tmp_path))
    assert report.skipped["bad xml"] == 1 and "x.xml" in report.messages[0]


def test_image_set_file(tmp_path):
    sets = tmp_path / "list.txt"
    sets.write_text("2011_003353\n")
    ds, report = _load(VOC, image_set=str(sets))
    assert [i["id"] for i in ds.image_info] == ["2011_003353"]


def test_unreadable_image_is_skipped(tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(VOC, root)
    os.chmod(root / "JPEGImages", 0o755)
    os.chmod(root / "JPEGImages" / "2011_003353.jpg", 0o644)
    (root / "JPEGImages" / "2011_003353.jpg").write_text("not a jpeg")
    ds, report = _load(str(root))
    assert report.kept["images"] == 1 and report.skipped["unreadable image"] == 1
    assert "2011_003353.jpg" in report.messages[0]
