"""LISC loader on a LISC-layout tree made by shared/tools/make_lisc_layout.py from real WBC data."""
import csv
import os
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from helpers import DATA, SHARED
from mrcnn.data.formats.lisc import LISC_CLASSES, LiscDataset

WBC = os.path.join(DATA, "wbc_zheng2018", "dataset2")
FOLDER = {1: "neut", 2: "lymp", 3: "mono", 4: "eosi", 5: "Baso"}
NAME = {"neut": "neutrophil", "lymp": "lymphocyte", "mono": "monocyte", "eosi": "eosinophil",
        "Baso": "basophil"}


@pytest.fixture(scope="module")
def lisc_root(tmp_path_factory):
    out = tmp_path_factory.mktemp("lisc") / "LISC Database"
    subprocess.run([sys.executable, os.path.join(SHARED, "tools", "make_lisc_layout.py"), str(out)],
                   check=True, capture_output=True)
    return str(out)


@pytest.fixture(scope="module")
def source_map():
    """LISC key "<folder>/<n>" → WBC source image number, numbered as the tool does."""
    with open(os.path.join(WBC, "class_labels.csv"), newline="") as f:
        rows = [(int(r[0]), int(r[1])) for r in list(csv.reader(f))[1:] if r]
    counts, out = Counter(), {}
    for image_id, cls in rows:
        counts[FOLDER[cls]] += 1
        out[f"{FOLDER[cls]}/{counts[FOLDER[cls]]}"] = image_id
    return out


@pytest.fixture(scope="module")
def lisc(lisc_root):
    ds = LiscDataset()
    report = ds.load_lisc(lisc_root)
    ds.prepare()
    return ds, report


def test_counts_and_classes(lisc):
    ds, report = lisc
    assert ds.class_names == ["BG"] + list(LISC_CLASSES)
    assert report.kept["images"] == 100 and report.kept["instances"] == 100
    assert report.ignored["mixt images (class per cell unknown)"] == 4
    counts = Counter(info["class_name"] for info in ds.image_info)
    # SOURCE.md dataset2 class counts 1..5: 33 / 37 / 15 / 12 / 3
    assert counts == {"neutrophil": 33, "lymphocyte": 37, "monocyte": 15, "eosinophil": 12, "basophil": 3}


def test_masks_match_expert_masks(lisc, source_map):
    ds, _ = lisc
    for i in ds.image_ids[::7]:
        info = ds.image_info[i]
        masks, ids = ds.load_mask(i)
        with Image.open(os.path.join(WBC, "masks", f"{source_map[info['id']]:03d}.png")) as im:
            expert = np.asarray(im) > 0
        assert masks.shape == (300, 300, 1) and masks.dtype == bool
        assert ds.class_names[ids[0]] == NAME[info["id"].split("/")[0]]
        assert (masks[..., 0] == expert).sum() >= expert.size - 60  # only specks may differ
        assert ds.load_image(i).shape == (300, 300, 3)


def test_specks_are_dropped_in_034(lisc, source_map, lisc_root):
    ds, report = lisc
    key = next(k for k, v in source_map.items() if v == 34)
    masks, _ = ds.load_mask(ds.image_from_source_map["lisc." + key])
    with Image.open(os.path.join(WBC, "masks", "034.png")) as im:
        expert = np.asarray(im) > 0
    assert masks.shape[2] == 1
    # SOURCE.md: three isolated stray pixels; two of them touch diagonally, so with
    # 8-connectivity they are 2 specks (2 px + 1 px) beside the 8444 px cell
    assert masks[..., 0].sum() == 8444 and expert.sum() - masks[..., 0].sum() == 3
    assert report.ignored["specks < 50 px"] == 2
    raw = LiscDataset()
    raw.load_lisc(lisc_root, min_area=1)
    raw.prepare()
    assert raw.load_mask(raw.image_from_source_map["lisc." + key])[0].shape[2] == 3


def test_mixt_included_as_mixed_class(lisc_root):
    ds = LiscDataset()
    report = ds.load_lisc(lisc_root, include_mixt=True)
    ds.prepare()
    assert ds.class_names[-1] == "mixed" and report.kept["images"] == 104
    i = ds.image_from_source_map["lisc.mixt/1"]
    masks, ids = ds.load_mask(i)
    assert masks.shape[2] == 2 and set(ds.class_names[c] for c in ids) == {"mixed"}
    assert not (masks[..., 0] & masks[..., 1]).any()


def test_nucleus_region_is_inside_cell(lisc):
    ds, _ = lisc
    info = ds.image_info[0]
    nuc = LiscDataset()
    nuc.load_lisc(os.path.dirname(os.path.dirname(os.path.dirname(info["path"]))), region="nucleus",
                  min_area=1)
    nuc.prepare()
    cell = ds.load_mask(0)[0].any(-1)
    nucleus = nuc.load_mask(nuc.image_from_source_map["lisc." + info["id"]])[0].any(-1)
    with Image.open(info["truth_path"]) as im:
        grey = np.asarray(im.convert("L"))
    np.testing.assert_array_equal(nucleus, grey >= 192)
    assert nucleus.sum() > 0 and not (nucleus & ~cell).any()


def test_split_is_stratified_disjoint_and_reproducible(lisc_root):
    parts = {}
    for subset in ("train", "val"):
        ds = LiscDataset()
        ds.load_lisc(lisc_root, subset=subset, val_fraction=0.2, seed=7)
        parts[subset] = {info["id"]: info["class_name"] for info in ds.image_info}
    assert not set(parts["train"]) & set(parts["val"])
    assert len(parts["train"]) + len(parts["val"]) == 100
    val = Counter(parts["val"].values())
    assert val == {"lymphocyte": 7, "neutrophil": 7, "monocyte": 3, "eosinophil": 2, "basophil": 1}
    again = LiscDataset()
    again.load_lisc(lisc_root, subset="val", val_fraction=0.2, seed=7)
    assert {i["id"] for i in again.image_info} == set(parts["val"])


def test_smaller_mask_padded_or_resized_and_missing_truth(tmp_path, lisc_root):
    root = tmp_path / "L"
    for sub in ("Main Dataset/Baso", "Ground Truth Segmentation/Baso/areaforexpert1"):
        shutil.copytree(os.path.join(lisc_root, sub), root / sub)
    truth = root / "Ground Truth Segmentation/Baso/areaforexpert1/1_expert.bmp"
    with Image.open(truth) as im:
        full = np.asarray(im.convert("L"))
    Image.fromarray(full[:-4, :-3]).save(truth)  # a few pixels short, as some LISC masks are
    os.remove(root / "Ground Truth Segmentation/Baso/areaforexpert1/2_expert.bmp")
    ds = LiscDataset()
    report = ds.load_lisc(str(root))
    ds.prepare()
    assert report.kept["images"] == 2 and report.skipped["missing ground truth"] == 1
    assert report.ignored["masks of other size than the image (pad)"] == 1
    masks, _ = ds.load_mask(ds.image_from_source_map["lisc.Baso/1"])
    expected = np.zeros_like(full, dtype=bool)
    expected[:-4, :-3] = full[:-4, :-3] > 0
    np.testing.assert_array_equal(masks[..., 0], expected)
    resized = LiscDataset()
    resized.load_lisc(str(root), size_mismatch="resize")
    resized.prepare()
    m = resized.load_mask(resized.image_from_source_map["lisc.Baso/1"])[0][..., 0]
    assert m.shape == full.shape and abs(int(m.sum()) - int((full > 0).sum())) < 0.05 * (full > 0).sum()


def test_bad_arguments(tmp_path, lisc_root):
    with pytest.raises(FileNotFoundError, match="Main Dataset"):
        LiscDataset().load_lisc(str(tmp_path))
    with pytest.raises(ValueError, match="region"):
        LiscDataset().load_lisc(lisc_root, region="membrane")
    with pytest.raises(ValueError, match="subset"):
        LiscDataset().load_lisc(lisc_root, subset="test")
