"""samples/cats/cat.py against a local stand-in for Open Images.

The stand-in: the class list and the three box CSVs are pre-placed in ``<dataset>/csv``
(the ``openimages`` package then reads them instead of fetching them), and the package's
image fetcher ``openimages.download._download_images_by_id`` is replaced by a copy of
real photos from shared/data. Everything else — filtering the CSV rows, writing the
PASCAL XML, our conversion to masks and the split — is the real code. The download runs
in a subprocess because the package forks a process pool for the XML files.

``--weights coco`` is a stand-in mask_rcnn_coco.h5 written by our own 81-class tiny
model (the real file is not available here; see tests/_samples_helpers.py).
"""
from __future__ import annotations

import glob
import json
import os
import sys

import numpy as np
import pytest

from _samples_helpers import ROOT, run_main, run_script, tiny_set_args, write_standin_coco_weights
from helpers import DATA

from samples.cats import cat

CAT, DOG = "/m/01yrx", "/m/0bt9lr"
HEADER = ("ImageID,Source,LabelName,Confidence,XMin,XMax,YMin,YMax,IsOccluded,IsTruncated,"
          "IsGroupOf,IsDepiction,IsInside")
# ImageIDs contain letters: the package parses all-digit ids as integers and then fails.
PHOTOS = {
    "0a1b2c3d4e5f0001": os.path.join(DATA, "coco_val2017_mini", "images", "000000128372.jpg"),
    "0a1b2c3d4e5f0002": os.path.join(DATA, "coco_val2017_mini", "images", "000000194216.jpg"),
    "0a1b2c3d4e5f0003": os.path.join(DATA, "coco_val2017_mini", "images", "000000343934.jpg"),
    "0a1b2c3d4e5f0004": os.path.join(DATA, "coco_val2017_mini", "images", "000000404249.jpg"),
    "0a1b2c3d4e5f0005": os.path.join(DATA, "pascal_voc_sample", "JPEGImages", "2007_000063.jpg"),
    "0a1b2c3d4e5f0006": os.path.join(DATA, "pascal_voc_sample", "JPEGImages", "2011_003353.jpg"),
}
# (split, ImageID, label, xmin, xmax, ymin, ymax, occluded) — at least 2 rows per split CSV
# (pandas >= 3 fails on a one-row group in the package).
ROWS = [
    ("train", "0a1b2c3d4e5f0001", CAT, 0.10, 0.50, 0.20, 0.60, 0),
    ("train", "0a1b2c3d4e5f0001", CAT, 0.55, 0.90, 0.10, 0.40, 0),
    ("train", "0a1b2c3d4e5f0002", CAT, 0.00, 0.30, 0.00, 0.30, 0),
    ("train", "0a1b2c3d4e5f0003", CAT, 0.25, 0.75, 0.25, 0.75, 0),
    ("train", "0a1b2c3d4e5f0003", CAT, 0.30, 0.40, 0.30, 0.40, 1),  # occluded: dropped
    ("train", "0a1b2c3d4e5f0004", DOG, 0.10, 0.20, 0.10, 0.20, 0),  # not a cat
    ("validation", "0a1b2c3d4e5f0004", CAT, 0.40, 0.95, 0.05, 0.95, 0),
    ("validation", "0a1b2c3d4e5f0005", CAT, 0.05, 0.60, 0.10, 0.80, 0),
    ("test", "0a1b2c3d4e5f0006", CAT, 0.20, 0.70, 0.30, 0.90, 0),
    ("test", "0a1b2c3d4e5f0006", DOG, 0.00, 0.10, 0.00, 0.10, 0),
]
CAT_IMAGES = sorted({r[1] for r in ROWS if r[2] == CAT and not r[7]})

RUNNER = """
import json, os, shutil, sys
sys.path.insert(0, {root!r})
import openimages.download as oi
photos = json.loads(os.environ["FAKE_OPENIMAGES_PHOTOS"])

def copy_instead_of_s3(image_ids, section, images_directory):
    for image_id in image_ids:
        shutil.copy(photos[image_id], os.path.join(images_directory, image_id + ".jpg"))

oi._download_images_by_id = copy_instead_of_s3
from samples.cats import cat
sys.exit(cat.main(sys.argv[1:]))
""".format(root=ROOT)


def write_csvs(csv_dir) -> None:
    os.makedirs(csv_dir, exist_ok=True)
    with open(os.path.join(csv_dir, "class-descriptions-boxable.csv"), "w") as f:
        f.write(f"{CAT},Cat\n{DOG},Dog\n")
    for split in ("train", "validation", "test"):
        with open(os.path.join(csv_dir, f"{split}-annotations-bbox.csv"), "w") as f:
            f.write(HEADER + "\n")
            for s, image_id, label, x1, x2, y1, y2, occluded in ROWS:
                if s == split:
                    f.write(f"{image_id},xclick,{label},1,{x1},{x2},{y1},{y2},{occluded},0,0,0,0\n")


def offline_env() -> dict:
    """Any network use fails at once, even on a machine with internet access."""
    dead = "http://127.0.0.1:9"
    return {"HTTP_PROXY": dead, "HTTPS_PROXY": dead, "http_proxy": dead, "https_proxy": dead,
            "NO_PROXY": "", "no_proxy": "", "AWS_EC2_METADATA_DISABLED": "true"}


def fake_download(root, *extra):
    script = os.path.join(os.path.dirname(str(root)), "runner.py")
    os.makedirs(os.path.dirname(script), exist_ok=True)
    with open(script, "w") as f:
        f.write(RUNNER)
    return run_script([script, "download", "--dataset", str(root), *extra],
                      env=dict(offline_env(), FAKE_OPENIMAGES_PHOTOS=json.dumps(PHOTOS)))


def write_layout(root) -> None:
    """What the package writes for ROWS (cat folder, PASCAL XML with 0-based int corners),
    for the tests that do not need the package itself."""
    from PIL import Image
    base = os.path.join(str(root), "openimages", "cat")
    os.makedirs(os.path.join(base, "images"))
    os.makedirs(os.path.join(base, "pascal"))
    for image_id in CAT_IMAGES:
        image = os.path.join(base, "images", image_id + ".jpg")
        with open(PHOTOS[image_id], "rb") as src, open(image, "wb") as dst:
            dst.write(src.read())
        w, h = Image.open(image).size
        objects = ""
        for _, i, label, x1, x2, y1, y2, occluded in ROWS:
            if i == image_id and label == CAT and not occluded:
                xs = [min(int(v * w), w - 1) for v in (x1, x2)]
                ys = [min(int(v * h), h - 1) for v in (y1, y2)]
                objects += (f"<object><name>cat</name><pose>Unspecified</pose><truncated>0</truncated>"
                            f"<difficult>0</difficult><bndbox><xmin>{xs[0]}</xmin><xmax>{xs[1]}</xmax>"
                            f"<ymin>{ys[0]}</ymin><ymax>{ys[1]}</ymax></bndbox></object>")
        with open(os.path.join(base, "pascal", image_id + ".xml"), "w") as f:
            f.write(f"<annotation><folder>images</folder><filename>{image_id}.jpg</filename>"
                    f"<size><width>{w}</width><height>{h}</height><depth>3</depth></size>"
                    f"<segmented>0</segmented>{objects}</annotation>")


@pytest.fixture(scope="module")
def handmade(tmp_path_factory):
    root = tmp_path_factory.mktemp("cats_handmade") / "data"
    write_layout(root)
    return root


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    pytest.importorskip("openimages", reason="the optional 'openimages' extra is not installed")
    root = tmp_path_factory.mktemp("cats") / "data"
    write_csvs(root / "csv")
    result = fake_download(root)
    assert result.returncode == 0, result.stderr[-3000:]
    return root, result


# -- download ------------------------------------------------------------------------------------
def test_download_writes_images_xml_and_a_split(downloaded):
    root, result = downloaded
    base = root / "openimages" / "cat"
    assert sorted(f[:-4] for f in os.listdir(base / "images")) == CAT_IMAGES
    assert sorted(f[:-4] for f in os.listdir(base / "pascal")) == CAT_IMAGES
    split = json.loads((root / "split.json").read_text())
    assert sorted(split["train"] + split["val"]) == CAT_IMAGES
    assert not set(split["train"]) & set(split["val"]) and len(split["val"]) == 1
    assert (split["seed"], split["val_fraction"]) == (0, 0.2)
    assert f"{len(CAT_IMAGES)} cat images: 5 train, 1 val" in result.stdout
    boxes = sum(1 for r in ROWS if r[2] == CAT and not r[7])
    assert f"{boxes} cats; their masks are the filled boxes" in result.stdout


def test_split_is_reproducible(handmade):
    root = handmade
    first = cat.read_split(str(root))  # none yet: written now
    assert json.loads((root / "split.json").read_text()) == first
    assert sorted(first["train"] + first["val"]) == CAT_IMAGES and len(first["val"]) == 1
    assert cat.write_split(str(root), seed=0, verbose=0) == first
    assert any(cat.write_split(str(root), seed=s, verbose=0)["val"] != first["val"] for s in (1, 2, 3))
    cat.write_split(str(root), seed=0, verbose=0)


def test_masks_are_the_filled_boxes(handmade):
    root = handmade
    ds = cat.load_subset(str(root), "all")
    assert ds.class_names == ["BG", "cat"]
    i = next(k for k, info in enumerate(ds.image_info) if info["id"] == "0a1b2c3d4e5f0001")
    masks, class_ids = ds.load_mask(i)
    h, w = masks.shape[:2]
    assert (h, w) == (427, 640) and list(class_ids) == [1, 1]
    # the package writes int(fraction * size) corners, read as inclusive pixels
    expected = np.zeros((h, w), dtype=bool)
    expected[int(0.20 * h):int(0.60 * h) + 1, int(0.10 * w):int(0.50 * w) + 1] = True
    first = masks[..., 0] if masks[..., 0].sum() == expected.sum() else masks[..., 1]
    np.testing.assert_array_equal(first, expected)
    train, val = cat.load_subset(str(root), "train"), cat.load_subset(str(root), "val")
    assert len(train.image_ids) == 5 and len(val.image_ids) == 1


def test_download_offline_without_csvs_says_what_to_do(tmp_path):
    pytest.importorskip("openimages", reason="the optional 'openimages' extra is not installed")
    result = fake_download(tmp_path / "data", "--verbose", "0")
    assert result.returncode == 2, result.stderr[-2000:]
    err = result.stderr
    assert "could not download Open Images cats" in err and "Offline?" in err
    assert "class-descriptions-boxable.csv" in err and "train-annotations-bbox.csv" in err
    assert "Traceback" not in err


def test_download_offline_with_csvs_fails_on_the_images_and_leaves_no_empty_files(tmp_path):
    pytest.importorskip("openimages", reason="the optional 'openimages' extra is not installed")
    root = tmp_path / "data"
    write_csvs(root / "csv")
    script = tmp_path / "plain_runner.py"  # the real image fetcher this time (S3, unreachable)
    script.write_text(f"import sys; sys.path.insert(0, {ROOT!r})\n"
                      "from samples.cats import cat\nsys.exit(cat.main(sys.argv[1:]))\n")
    result = run_script([str(script), "download", "--dataset", str(root), "--verbose", "0"],
                        env=offline_env())
    assert result.returncode == 2, result.stderr[-2000:]
    assert "could not download Open Images cats" in result.stderr
    assert "Missing CSVs in" in result.stderr and ": none." in result.stderr
    images = root / "openimages" / "cat" / "images"
    assert not [f for f in os.listdir(images) if os.path.getsize(images / f) == 0]


def test_missing_openimages_package_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "openimages", None)
    monkeypatch.setitem(sys.modules, "openimages.download", None)
    code, _, err = run_main(cat.main, ["download", "--dataset", str(tmp_path)])
    assert code == 2
    assert "pip install 'mask-rcnn[openimages]'" in err


def test_train_before_download_is_a_clear_error(tmp_path):
    code, _, err = run_main(cat.main, ["train", "--dataset", str(tmp_path), "--weights", "none"])
    assert code == 2 and "run the 'download' command first" in err


# -- train ---------------------------------------------------------------------------------------
def test_train_with_coco_weights_excludes_the_heads(handmade, tmp_path, monkeypatch):
    root = handmade
    weights = write_standin_coco_weights(str(tmp_path / "mask_rcnn_coco.h5"))
    monkeypatch.setenv("MRCNN_COCO_WEIGHTS", weights)
    logs = tmp_path / "logs"
    code, out, err = run_main(cat.main, ["train", "--dataset", str(root), "--weights=coco",
                                         "--logs", str(logs), "--steps", "2", "--val-steps", "0",
                                         *tiny_set_args()])
    assert code == 0, err
    assert "class-specific heads excluded: the file has 81 classes, the model 2" in out
    assert "Training 'heads' layers for 1 epoch(s) on 5 images" in out
    assert glob.glob(str(logs / "cat*" / "mask_rcnn_cat_0001.h5"))
