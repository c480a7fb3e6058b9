"""Shared loader pieces: rasterisation, LoadReport, splits, class tables."""
import logging

import numpy as np
import pytest

from mrcnn.data.formats.common import (ClassTable, LoadReport, box_mask, circle_mask, ellipse_mask,
                                       polygon_mask, select_subset, split_ids)


def test_polygon_mask_fills_and_clips():
    m = polygon_mask([2, 6, 6, 2], [1, 1, 4, 4], (8, 10))
    assert m.dtype == bool and m.shape == (8, 10)
    assert m.sum() == 5 * 4 and m[1:5, 2:7].all()
    clipped = polygon_mask([-5, 20, 20, -5], [-5, -5, 3, 3], (8, 10))
    assert clipped.sum() == 4 * 10 and clipped[:4].all()
    assert not polygon_mask([50, 60, 60], [50, 50, 60], (8, 10)).any()


@pytest.mark.parametrize("xs, ys, match", [([1, 2], [1, 2], "at least 3"), ([1, 2, 3], [1, 2], "x and"),
                                           ([1, np.nan, 3], [1, 2, 3], "non-finite")])
def test_polygon_mask_rejects_bad_input(xs, ys, match):
    with pytest.raises(ValueError, match=match):
        polygon_mask(xs, ys, (5, 5))


def test_box_mask_is_exclusive_and_clipped():
    m = box_mask(1, 2, 4, 7, (6, 8))
    assert m.sum() == 3 * 5 and m[1:4, 2:7].all()
    assert box_mask(4, 7, 1, 2, (6, 8)).sum() == 15  # corners in any order
    assert box_mask(-3, -3, 2, 100, (6, 8)).sum() == 2 * 8
    assert not box_mask(10, 10, 20, 20, (6, 8)).any()


def test_circle_and_ellipse():
    disk = circle_mask(10, 10, 5, (21, 21))
    assert abs(disk.sum() - np.pi * 25) < 8 and disk[10, 10] and not disk[10, 16]
    flat = ellipse_mask(10, 10, 8, 2, 0.0, (21, 21))
    ys, xs = np.nonzero(flat)
    assert xs.max() - xs.min() > 3 * (ys.max() - ys.min())
    with pytest.raises(ValueError, match="radius"):
        circle_mask(1, 1, 0, (5, 5))


def test_load_report_counts_and_logs(caplog):
    report = LoadReport("fmt x.json")
    report.keep("images", 2)
    report.keep("instances", 5)
    with caplog.at_level(logging.WARNING, logger="mrcnn.data.formats"):
        for k in range(12):
            report.skip("bad polygon", f"x.json: shape {k} has 2 points")
    report.ignore("line shapes", 3)
    assert report.kept == {"images": 2, "instances": 5} and report.skipped == {"bad polygon": 12}
    assert len(report.messages) == 12
    assert caplog.text.count("has 2 points") == 10  # the rest go to DEBUG
    assert str(report) == ("fmt x.json: kept images 2, instances 5; skipped bad polygon: 12; "
                           "ignored line shapes: 3")


def test_split_ids_reproducible_and_order_free():
    ids = [f"img{k}" for k in range(20)]
    train, val = split_ids(ids, 0.25, seed=1)
    assert len(val) == 5 and len(train) == 15 and not set(train) & set(val)
    assert split_ids(list(reversed(ids)), 0.25, seed=1) == (train, val)
    assert split_ids(ids, 0.25, seed=2) != (train, val)
    assert split_ids(ids, 0.0) == (sorted(ids, key=str), [])
    with pytest.raises(ValueError, match="val_fraction"):
        split_ids(ids, 1.5)


def test_split_ids_stratified():
    groups = {k: ("rare" if k < 2 else "common") for k in range(30)}
    train, val = split_ids(range(30), 0.1, seed=0, groups=groups)
    assert sum(groups[k] == "rare" for k in val) == 1  # a 2-member group still gets one val id
    assert sum(groups[k] == "common" for k in val) == 3
    assert select_subset(range(30), "val", 0.1, 0, groups) == set(val)
    assert select_subset(range(4), None, 0.5, 0) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="subset"):
        select_subset(range(4), "test", 0.5, 0)


def test_class_table():
    fixed = ClassTable(["b", "a", "b"])
    assert fixed.names == ["b", "a"] and fixed.id_of("a") == 2 and fixed.id_of("z") is None
    found = ClassTable()
    for label in ("zebra", "ant", "zebra"):
        found.see(label)
    found.freeze()
    assert found.names == ["ant", "zebra"]


def test_real_quokka_polygon_with_duplicate_vertices():
    import json
    import os

    from helpers import DATA
    with open(os.path.join(DATA, "quokka_imgaug", "quokka_annotations.json")) as f:
        ann = json.load(f)
    pts = ann["polygons"][0]["keypoints"]
    xs = np.array([p["x"] for p in pts])
    ys = np.array([p["y"] for p in pts])
    assert len(pts) == 39
    mask = polygon_mask(xs, ys, (643, 960))
    shoelace = 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))
    assert abs(mask.sum() - shoelace) < 0.01 * shoelace
    rows, cols = np.nonzero(mask)
    # pixel centres on the outline are filled, so the extent is the vertices' extent
    assert (cols.min(), cols.max(), rows.min(), rows.max()) == (xs.min(), xs.max(), ys.min(), ys.max())
