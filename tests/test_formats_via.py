"""VIA loader: VIA 1.x / 2.x files built from the real LabelMe polygons, plus malformed input."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from helpers import DATA
from mrcnn.data.formats.labelme import LabelMeDataset
from mrcnn.data.formats.via import ViaDataset

ANNOTATED = os.path.join(DATA, "labelme_instance_seg_example", "data_annotated")
STEMS = ("2011_000003", "2011_000006", "2011_000025")


def _labelme_polygons():
    """(stem, [(label, xs, ys)]) for every non-ignored polygon of the real LabelMe files."""
    out = []
    for stem in STEMS:
        with open(os.path.join(ANNOTATED, stem + ".json")) as f:
            shapes = json.load(f)["shapes"]
        out.append((stem, [(s["label"], [p[0] for p in s["points"]], [p[1] for p in s["points"]])
                           for s in shapes if s["label"] != "__ignore__"]))
    return out


def _via_entries(version):
    entries = {}
    for stem, polys in _labelme_polygons():
        size = os.path.getsize(os.path.join(ANNOTATED, stem + ".jpg"))
        regions = [{"shape_attributes": {"name": "polygon", "all_points_x": xs, "all_points_y": ys},
                    "region_attributes": {"name": label}} for label, xs, ys in polys]
        if version == 1:
            regions = {str(k): r for k, r in enumerate(regions)}
        entries[f"{stem}.jpg{size}"] = {"fileref": "", "size": size, "filename": stem + ".jpg",
                                        "base64_img_data": "", "file_attributes": {}, "regions": regions}
    return entries


def _load(path, **kw):
    ds = ViaDataset()
    report = ds.load_via(str(path), **kw)
    ds.prepare()
    return ds, report


@pytest.fixture(scope="module")
def polygon_masks():
    """Per image, the union-free masks of every LabelMe polygon (our LabelMe loader, no grouping)."""
    out = {}
    for stem, polys in _labelme_polygons():
        from mrcnn.data.formats.common import polygon_mask
        with Image.open(os.path.join(ANNOTATED, stem + ".jpg")) as im:
            shape = (im.height, im.width)
        out[stem] = np.stack([polygon_mask(xs, ys, shape) for _, xs, ys in polys], -1)
    return out


@pytest.mark.parametrize("version", [1, 2, "project"])
def test_via_versions_match_polygons(tmp_path, version, polygon_masks):
    entries = _via_entries(1 if version == 1 else 2)
    data = {"_via_settings": {}, "_via_img_metadata": entries} if version == "project" else entries
    path = tmp_path / "via_region_data.json"
    path.write_text(json.dumps(data))
    ds, report = _load(path, image_dir=ANNOTATED)
    # 12 instances of LabelMe = 16 polygons (person 2 + sofa 4 shapes share a group)
    assert report.kept["images"] == 3 and report.kept["instances"] == 16
    assert ds.class_names == ["BG", "bottle", "bus", "car", "chair", "person", "sofa"]
    for i in ds.image_ids:
        stem = ds.image_info[i]["id"][:-4]
        masks, ids = ds.load_mask(i)
        np.testing.assert_array_equal(masks, polygon_masks[stem])
        assert ds.load_image(i).shape[:2] == masks.shape[:2]


def test_via_unions_equal_labelme_instances(tmp_path):
    path = tmp_path / "v.json"
    path.write_text(json.dumps(_via_entries(2)))
    via, _ = _load(path, image_dir=ANNOTATED)
    lm = LabelMeDataset()
    lm.load_labelme(ANNOTATED)
    lm.prepare()
    i = via.image_from_source_map["via.2011_000006.jpg"]
    masks, ids = via.load_mask(i)
    sofa = masks[..., ids == via.map_source_class_id("via.6")].any(-1)
    lm_masks, lm_ids = lm.load_mask(lm.image_from_source_map["labelme.2011_000006"])
    np.testing.assert_array_equal(sofa, lm_masks[..., list(lm_ids).index(lm.class_names.index("sofa"))])


def test_single_class_balloon_style(tmp_path):
    path = tmp_path / "v.json"
    path.write_text(json.dumps(_via_entries(1)))
    ds, report = _load(path, image_dir=ANNOTATED, class_attribute=None, single_class="balloon")
    assert ds.class_names == ["BG", "balloon"] and report.kept["instances"] == 16


def test_rect_circle_ellipse_checkbox_and_malformed(tmp_path):
    Image.new("RGB", (60, 40)).save(tmp_path / "a.png")
    regions = [
        {"shape_attributes": {"name": "rect", "x": 2, "y": 3, "width": 10, "height": 5},
         "region_attributes": {"type": {"cell": True, "blob": False}}},
        {"shape_attributes": {"name": "circle", "cx": 30, "cy": 20, "r": 4},
         "region_attributes": {"type": "blob"}},
        {"shape_attributes": {"name": "ellipse", "cx": 45, "cy": 20, "rx": 8, "ry": 3, "theta": 0.5},
         "region_attributes": {"type": "blob"}},
        {"shape_attributes": {"name": "polygon", "all_points_x": [1, 2], "all_points_y": [1, 2]},
         "region_attributes": {"type": "cell"}},
        {"shape_attributes": {"name": "point", "cx": 3, "cy": 3}, "region_attributes": {"type": "cell"}},
        {"shape_attributes": {"name": "rect", "x": 100, "y": 100, "width": 5, "height": 5},
         "region_attributes": {"type": "cell"}},
        {"shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 2, "height": 2},
         "region_attributes": {}},
        {"shape_attributes": {"name": "rect", "x": 1, "y": 1, "width": 2, "height": 2},
         "region_attributes": {"type": "virus"}},
    ]
    data = {"a.png0": {"filename": "a.png", "size": 0, "regions": regions, "file_attributes": {}},
            "b.png0": {"filename": "b.png", "size": 0, "regions": regions[:1], "file_attributes": {}}}
    path = tmp_path / "v.json"
    path.write_text(json.dumps(data))
    ds, report = _load(path, class_attribute="type", class_names=["cell", "blob"])
    assert report.skipped["polygon with < 3 points"] == 1
    assert report.skipped["shape outside the image"] == 1
    assert report.skipped["missing class"] == 1 and report.skipped["unknown class"] == 1
    assert report.skipped["missing image file"] == 1 and report.ignored["point regions"] == 1
    assert any("a.png region 3" in m for m in report.messages)
    masks, ids = ds.load_mask(0)
    assert [ds.class_names[c] for c in ids] == ["cell", "blob", "blob"]
    assert masks[..., 0].sum() == 50 and masks[3:8, 2:12, 0].all()
    assert abs(masks[..., 1].sum() - np.pi * 16) < 8
    ys, xs = np.nonzero(masks[..., 2])
    assert abs(masks[..., 2].sum() - np.pi * 24) < 10
    assert np.polyfit(xs, ys, 1)[0] > 0  # VIA theta turns +x towards +y (down-right)


def test_not_a_via_file(tmp_path):
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"project": {}, "metadata": {}, "file": {}}))
    with pytest.raises(ValueError, match="VIA 3"):
        ViaDataset().load_via(str(path))
    path.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="not a VIA"):
        ViaDataset().load_via(str(path))
