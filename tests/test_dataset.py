"""Tests of mrcnn.data.dataset: Matterport's Dataset API and image reading."""
import logging
import os

import numpy as np
import pytest
from PIL import Image

from helpers import DATA
from mrcnn.data.dataset import Dataset, ImageLoadError, read_image, to_rgb_uint8


def _two_source_dataset():
    ds = Dataset()
    ds.add_class("shapes", 1, "square")
    ds.add_class("shapes", 2, "circle")
    ds.add_class("coco", 1, "person")
    ds.add_class("coco", 3, "car, automobile")
    ds.add_image("shapes", image_id=10, path=None, width=5)
    ds.add_image("coco", image_id=42, path="/x/42.jpg")
    ds.prepare()
    return ds


# -- registration and prepare -----------------------------------------------------------------------

def test_fresh_dataset_has_background_only():
    ds = Dataset(class_map={"ignored": 1})
    assert ds.class_info == [{"source": "", "id": 0, "name": "BG"}]
    assert ds.image_info == [] and len(ds.image_ids) == 0
    ds.prepare()
    assert ds.num_classes == 1 and ds.class_names == ["BG"] and ds.num_images == 0
    assert ds.sources == [""] and ds.source_class_ids == {"": [0]}


def test_prepare_tables_match_matterport():
    ds = _two_source_dataset()
    assert ds.num_classes == 5
    np.testing.assert_array_equal(ds.class_ids, [0, 1, 2, 3, 4])
    # Matterport keeps the text before the first comma
    assert ds.class_names == ["BG", "square", "circle", "person", "car"]
    assert ds.num_images == 2
    np.testing.assert_array_equal(ds.image_ids, [0, 1])
    assert ds.class_from_source_map == {".0": 0, "shapes.1": 1, "shapes.2": 2, "coco.1": 3, "coco.3": 4}
    assert ds.image_from_source_map == {"shapes.10": 0, "coco.42": 1}
    assert sorted(ds.sources) == ["", "coco", "shapes"]
    assert ds.source_class_ids["shapes"] == [0, 1, 2]
    assert ds.source_class_ids["coco"] == [0, 3, 4]
    assert ds.source_class_ids[""] == [0]


def test_add_image_keeps_extra_fields_and_links():
    ds = _two_source_dataset()
    assert ds.image_info[0] == {"id": 10, "source": "shapes", "path": None, "width": 5}
    assert ds.source_image_link(1) == "/x/42.jpg"
    assert ds.image_reference(1) == ""
    assert len(ds) == 2


def test_duplicate_class_is_ignored():
    ds = Dataset()
    ds.add_class("a", 1, "one")
    ds.add_class("a", 1, "one")
    ds.add_class("a", 1, "renamed")
    assert len(ds.class_info) == 2 and ds.class_info[1]["name"] == "one"


def test_source_with_dot_is_rejected():
    with pytest.raises(ValueError, match="dot"):
        Dataset().add_class("my.source", 1, "x")


def test_map_and_get_source_class_id():
    ds = _two_source_dataset()
    assert ds.map_source_class_id("coco.3") == 4
    assert ds.get_source_class_id(4, "coco") == 3
    with pytest.raises(KeyError, match="coco.99"):
        ds.map_source_class_id("coco.99")
    with pytest.raises(ValueError, match="belongs to source 'coco'"):
        ds.get_source_class_id(4, "shapes")


def test_map_before_prepare_is_a_clear_error():
    ds = Dataset()
    ds.add_class("a", 1, "one")
    with pytest.raises(RuntimeError, match="prepare"):
        ds.map_source_class_id("a.1")


def test_base_load_mask_is_empty_with_warning(caplog):
    ds = _two_source_dataset()
    with caplog.at_level(logging.WARNING):
        mask, ids = ds.load_mask(0)
    assert mask.shape == (0, 0, 0) and ids.shape == (0,) and ids.dtype == np.int32
    assert "default load_mask" in caplog.text


# -- image reading ----------------------------------------------------------------------------------

def _dataset_for(path):
    ds = Dataset()
    ds.add_image("t", image_id="img", path=str(path))
    ds.prepare()
    return ds


def test_load_real_jpeg_rgb():
    path = os.path.join(DATA, "coco_val2017_mini", "images", "000000128372.jpg")
    image = _dataset_for(path).load_image(0)
    assert image.dtype == np.uint8 and image.shape == (427, 640, 3)
    with Image.open(path) as im:
        np.testing.assert_array_equal(image, np.asarray(im.convert("RGB")))


def test_load_real_palette_png_goes_through_palette():
    path = os.path.join(DATA, "pascal_voc_sample", "SegmentationObject", "2007_000063.png")
    image = read_image(path)
    assert image.shape == (375, 500, 3) and image.dtype == np.uint8
    with Image.open(path) as im:
        index = np.asarray(im)
        palette = np.asarray(im.getpalette()[:768], dtype=np.uint8).reshape(-1, 3)
    np.testing.assert_array_equal(image, palette[index])
    # the 255 void band is drawn in VOC's cream colour (224, 224, 192)
    assert tuple(image[index == 255][0]) == (224, 224, 192)


def test_load_real_16bit_tiff_is_min_max_stretched():
    path = os.path.join(DATA, "nuclei_dsb2018_stardist", "img2d.tif")
    with Image.open(path) as im:
        raw = np.asarray(im).astype(np.float64)
    assert raw.max() == 235  # a right shift by 8 would make this image black
    image = read_image(path)
    assert image.shape == (512, 512, 3) and image.dtype == np.uint8
    expected = np.round((raw - raw.min()) * 255.0 / (raw.max() - raw.min())).astype(np.uint8)
    for c in range(3):
        np.testing.assert_array_equal(image[..., c], expected)
    assert image.min() == 0 and image.max() == 255


def test_load_real_16bit_label_map():
    path = os.path.join(DATA, "nuclei_dsb2018_stardist", "mask2d.tif")
    image = read_image(path)
    with Image.open(path) as im:
        labels = np.asarray(im)
    assert len(np.unique(labels)) - 1 == 125 and labels.max() == 183
    assert image.shape == (512, 512, 3)
    assert (image[labels == 0] == 0).all() and (image[labels == 183] == 255).all()


def test_generated_grey_rgba_palette_16bit(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.integers(0, 256, (7, 9), dtype=np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    rgba = rng.integers(0, 256, (7, 9, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    pal = Image.fromarray(rng.integers(0, 3, (7, 9), dtype=np.uint8), "P")
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    pal.save(tmp_path / "pal.png")
    g16 = np.array([[0, 1000], [3000, 4095]], dtype=np.uint16)  # 12-bit camera range
    Image.fromarray(g16).save(tmp_path / "g16.png")

    out = read_image(str(tmp_path / "grey.png"))
    np.testing.assert_array_equal(out, np.stack([grey] * 3, -1))
    np.testing.assert_array_equal(read_image(str(tmp_path / "rgba.png")), rgba[..., :3])
    colours = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], np.uint8)
    np.testing.assert_array_equal(read_image(str(tmp_path / "pal.png")), colours[np.asarray(pal)])
    out16 = read_image(str(tmp_path / "g16.png"))
    np.testing.assert_array_equal(out16[..., 0], [[0, 62], [187, 255]])


def test_to_rgb_uint8_edge_cases():
    assert to_rgb_uint8(np.zeros((2, 3), bool)).shape == (2, 3, 3)
    np.testing.assert_array_equal(to_rgb_uint8(np.array([[True, False]]))[..., 1], [[255, 0]])
    np.testing.assert_array_equal(to_rgb_uint8(np.full((2, 2), 7, np.uint16)), np.zeros((2, 2, 3)))
    f = np.array([[0.0, 0.5], [np.nan, 1.0]])
    np.testing.assert_array_equal(to_rgb_uint8(f)[..., 0], [[0, 128], [0, 255]])
    la = np.dstack([np.full((2, 2), 9, np.uint8), np.zeros((2, 2), np.uint8)])
    np.testing.assert_array_equal(to_rgb_uint8(la), np.full((2, 2, 3), 9))
    with pytest.raises(ValueError, match="shape"):
        to_rgb_uint8(np.zeros((2, 2, 5), np.uint8))


def test_missing_file_error_names_id_and_path(tmp_path):
    ds = _dataset_for(tmp_path / "nope.jpg")
    with pytest.raises(ImageLoadError, match=r"image 0 \(t.img\): file not found: '.*nope.jpg'"):
        ds.load_image(0)
    assert issubclass(ImageLoadError, IOError)


def test_truncated_file_error(tmp_path):
    src = os.path.join(DATA, "coco_val2017_mini", "images", "000000194216.jpg")
    data = open(src, "rb").read()
    bad = tmp_path / "cut.jpg"
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(ImageLoadError, match=r"image 0 \(t.img\): cannot read '.*cut.jpg': .*truncated"):
        _dataset_for(bad).load_image(0)


def test_not_an_image_error(tmp_path):
    bad = tmp_path / "text.png"
    bad.write_text("hello")
    with pytest.raises(ImageLoadError, match=r"image 3: not a readable image: '.*text.png'"):
        read_image(str(bad), image_id=3)
