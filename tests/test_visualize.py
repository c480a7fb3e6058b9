"""mrcnn.visualize rendered headless (Agg) to PNG files."""
import contextlib
import io
import json
import os
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from helpers import DATA, REPO, load_cases  # noqa: E402
from mrcnn import visualize as viz  # noqa: E402

NAMES = ["BG", "square", "disc", "triangle"]
VIS_DIR = "/tmp/mrcnn_vis"


@pytest.fixture(autouse=True)
def no_show(monkeypatch):
    """Under Agg nothing may call plt.show(); every test also checks no figure leaks."""
    def fail(*a, **k):
        raise AssertionError("plt.show() called under a non-interactive backend")
    monkeypatch.setattr(plt, "show", fail)
    before = len(plt.get_fignums())
    yield
    assert len(plt.get_fignums()) == before


def _png(path):
    assert os.path.getsize(path) > 1000
    return mpimg.imread(path)


def _differ(a, b):
    return a.shape != b.shape or not np.array_equal(a, b)


def _scene(seed, n=3, shape=(64, 80)):
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 120, shape + (3,)).astype(np.uint8)
    boxes = np.zeros((n, 4), np.int32)
    masks = np.zeros(shape + (n,), bool)
    for i in range(n):
        y1, x1 = rng.randint(0, shape[0] - 20), rng.randint(0, shape[1] - 20)
        h, w = rng.randint(8, 20, size=2)
        boxes[i] = [y1, x1, y1 + h, x1 + w]
        masks[y1:y1 + h, x1:x1 + w, i] = True
    class_ids = rng.randint(1, len(NAMES), n)
    scores = rng.uniform(0.3, 1.0, n)
    return image, boxes, masks, class_ids, scores


# --------------------------------------------------------------------------- pure helpers

def test_import_needs_no_ipython_and_keeps_sys_path():
    code = ("import sys; before = list(sys.path); import mrcnn.visualize; "
            "assert sys.path == before, 'sys.path changed'; "
            "assert 'IPython' not in sys.modules; print('ok')")
    env = dict(os.environ, MPLBACKEND="Agg", PYTHONPATH=REPO)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_random_colors():
    colors = viz.random_colors(6, seed=3)
    assert len(colors) == 6 and len(set(colors)) == 6
    assert all(0 <= c <= 1 for rgb in colors for c in rgb)
    assert colors == viz.random_colors(6, seed=3)
    assert max(max(c) for c in viz.random_colors(4, bright=False)) == pytest.approx(0.7)
    assert viz.random_colors(0) == []


def test_apply_mask_blends_in_place():
    image = np.full((3, 4, 3), 100, np.uint32)
    mask = np.zeros((3, 4), np.uint8)
    mask[1, 2] = 1
    out = viz.apply_mask(image, mask, (1.0, 0.0, 0.5), alpha=0.5)
    assert out is image
    np.testing.assert_array_equal(image[1, 2], [177, 50, 113])  # 100*0.5 + 0.5*c*255, truncated
    assert (image[0] == 100).all()
    with pytest.raises(ValueError, match="image is"):
        viz.apply_mask(image, np.zeros((2, 2)), (1, 1, 1))


def test_draw_box_burns_two_pixel_outline():
    image = np.zeros((20, 20, 3), np.uint8)
    viz.draw_box(image, [2, 3, 12, 15], (255, 0, 0))
    assert (image[2:4, 3:15, 0] == 255).all() and (image[12:14, 3:15, 0] == 255).all()
    assert (image[2:12, 3:5, 0] == 255).all() and (image[2:12, 15:17, 0] == 255).all()
    assert image[7, 9].sum() == 0 and image[..., 1:].sum() == 0


# --------------------------------------------------------------------------- figures

def test_display_instances_renders_and_depends_on_input(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    image, boxes, masks, ids, scores = _scene(0)
    fig = viz.display_instances(image, boxes, masks, ids, NAMES, scores, title="a",
                                figsize=(4, 4), save_path=str(a))
    assert fig.axes[0].get_title() == "a"
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == [f"{NAMES[c]} {s:.3f}" for c, s in zip(ids, scores)]
    # 3 dashed boxes + 3 mask outlines.
    assert len(fig.axes[0].patches) == 6
    image2, boxes2, masks2, ids2, scores2 = _scene(1)
    viz.display_instances(image2, boxes2, masks2, ids2, NAMES, scores2, figsize=(4, 4),
                          save_path=str(b))
    assert _differ(_png(a), _png(b))


def test_display_instances_options(tmp_path):
    image, boxes, masks, ids, scores = _scene(2)
    fig, ax = plt.subplots(1, figsize=(4, 4))
    out = viz.display_instances(image, boxes, masks, ids, NAMES, captions=["x", "y", "z"],
                                show_bbox=False, show_mask=False, colors=[(1, 0, 0)] * 3, ax=ax)
    assert out is fig and [t.get_text() for t in ax.texts] == ["x", "y", "z"]
    assert len(ax.patches) == 3  # outlines only
    plt.close(fig)
    # Zero-padded rows are skipped.
    padded = np.concatenate([boxes, np.zeros((1, 4), int)])
    fig = viz.display_instances(image, padded, np.concatenate([masks, masks[..., :1]], -1),
                                np.append(ids, 1), NAMES, figsize=(3, 3))
    assert len(fig.axes[0].texts) == 3


def test_display_instances_empty_and_bad_input(capsys, tmp_path):
    image = _scene(3)[0]
    viz.display_instances(image, np.zeros((0, 4)), np.zeros(image.shape[:2] + (0,)), np.zeros(0, int),
                          NAMES, figsize=(3, 3), save_path=str(tmp_path / "e.png"))
    assert "*** No instances to display ***" in capsys.readouterr().out
    assert _png(tmp_path / "e.png").size
    _, boxes, masks, ids, scores = _scene(3)
    with pytest.raises(ValueError, match="3 boxes but 2 class_ids"):
        viz.display_instances(image, boxes, masks, ids[:2], NAMES)
    with pytest.raises(ValueError, match="masks are"):
        viz.display_instances(image, boxes, masks[:10], ids, NAMES)
    with pytest.raises(ValueError, match="display_instances: instance 0: class id 9 is outside class_names"):
        viz.display_instances(image, boxes, masks, np.array([9, 1, 1]), NAMES)
    assert plt.get_fignums() == []  # the failed call must not leave a figure behind
    plt.close("all")


def test_display_differences(tmp_path):
    image, boxes, masks, ids, _ = _scene(4)
    # Predictions: the GT moved by 1 px (match), plus one far-off false positive.
    pboxes = np.concatenate([boxes + 1, [[50, 60, 60, 75]]])
    pmasks = np.concatenate([np.roll(np.roll(masks, 1, 0), 1, 1),
                             np.zeros(masks.shape[:2] + (1,), bool)], -1)
    pmasks[50:60, 60:75, -1] = True
    pscores = np.array([0.6, 0.9, 0.8, 0.95])
    pids = np.append(ids, 1)
    fig = viz.display_differences(image, boxes, ids, masks, pboxes, pids, pscores, pmasks, NAMES,
                                  save_path=str(tmp_path / "d.png"))
    captions = [t.get_text() for t in fig.axes[0].texts][3:]
    # Sorted by score: the false positive first with its best IoU (0), then the matches.
    assert captions[0] == "0.95 / 0.00"
    assert sorted(captions[1:]) == sorted(f"{s:.2f} / {iou:.2f}" for s, iou in zip(
        pscores[:3], [_iou(masks[..., k], pmasks[..., k]) for k in range(3)]))
    fig2 = viz.display_differences(image, boxes, ids, masks, pboxes[:1], pids[:1], pscores[:1],
                                   pmasks[..., :1], NAMES, save_path=str(tmp_path / "d2.png"))
    assert len(fig2.axes[0].texts) == 4
    assert _differ(_png(tmp_path / "d.png"), _png(tmp_path / "d2.png"))


def _iou(a, b):
    return (a & b).sum() / (a | b).sum()


def test_draw_rois(tmp_path, capsys):
    image, boxes, _, ids, _ = _scene(5, n=4)
    mini = np.zeros((4, 28, 28), np.float32)
    mini[:, 4:24, 4:24] = 1.0
    class_ids = np.array([ids[0], 0, ids[2], 0])
    np.random.seed(0)
    viz.draw_rois(image, boxes, boxes + 2, mini, class_ids, NAMES, limit=10,
                  save_path=str(tmp_path / "r1.png"))
    out = capsys.readouterr().out
    assert "Positive ROIs:  2" in out and "Negative ROIs:  2" in out and "Positive Ratio: 0.50" in out
    fig = viz.draw_rois(image, boxes, boxes, mini, class_ids, NAMES, limit=2,
                        save_path=str(tmp_path / "r2.png"))
    assert fig.axes[0].get_title() == "Showing 2 random ROIs out of 4"
    assert _differ(_png(tmp_path / "r1.png"), _png(tmp_path / "r2.png"))


def test_display_top_masks(tmp_path):
    image, _, masks, _, _ = _scene(6, n=4)
    fig = viz.display_top_masks(image, masks, np.array([1, 1, 2, 3]), NAMES, limit=3,
                                save_path=str(tmp_path / "t.png"))
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == "H x W=64x80" and len(titles) == 4 and titles[1] == "square"
    assert set(titles[1:]) == {"square", "disc", "triangle"}
    viz.display_top_masks(image, masks, np.array([2, 2, 2, 2]), NAMES, limit=3,
                          save_path=str(tmp_path / "t2.png"))
    assert _differ(_png(tmp_path / "t.png"), _png(tmp_path / "t2.png"))
    with pytest.raises(ValueError, match="4 masks but 2 class ids"):
        viz.display_top_masks(image, masks, np.array([1, 2]), NAMES)


def test_display_images(tmp_path):
    imgs = [_scene(i)[0] for i in range(3)]
    fig = viz.display_images(imgs, titles=["a", "b", "c"], cols=2, save_path=str(tmp_path / "g.png"))
    assert [ax.get_title() for ax in fig.axes] == ["a", "b", "c"]
    viz.display_images(imgs[::-1], cols=2, save_path=str(tmp_path / "g2.png"))
    assert _differ(_png(tmp_path / "g.png"), _png(tmp_path / "g2.png"))
    with pytest.raises(ValueError, match="no images"):
        viz.display_images([])


def test_plot_precision_recall_from_fixture(tmp_path):
    c0, c1 = load_cases("utils_eval", "utils.compute_ap")[:2]
    fig = viz.plot_precision_recall(c0.outputs["mAP"], c0.outputs["precisions"], c0.outputs["recalls"],
                                    save_path=str(tmp_path / "p0.png"))
    assert fig.axes[0].get_title() == f"Precision-Recall Curve. AP@50 = {c0.outputs['mAP']:.3f}"
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_xdata(), c0.outputs["recalls"])
    viz.plot_precision_recall(c1.outputs["mAP"], c1.outputs["precisions"], c1.outputs["recalls"],
                              save_path=str(tmp_path / "p1.png"))
    assert _differ(_png(tmp_path / "p0.png"), _png(tmp_path / "p1.png"))
    with pytest.raises(ValueError, match="3 precisions but 2 recalls"):
        viz.plot_precision_recall(0.5, [0, 1, 0], [0, 1])


def test_plot_overlaps_labels_matches(tmp_path):
    overlaps = np.array([[0.9, 0.1], [0.0, 0.7], [0.6, 0.0]])
    fig = viz.plot_overlaps(np.array([1, 2, 0]), np.array([1, 3, 2]), np.array([0.9, 0.8, 0.5]),
                            overlaps, NAMES, save_path=str(tmp_path / "o.png"))
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["0.900\nmatch", "0.100\n", "0.000\n", "0.700\nwrong", "0.600\nwrong", "0.000\n"]
    viz.plot_overlaps(np.array([1, 2]), np.array([1, 3, 2]), np.array([0.9, 0.8, 0.5]),
                      overlaps[::-1], NAMES, save_path=str(tmp_path / "o2.png"))
    assert _differ(_png(tmp_path / "o.png"), _png(tmp_path / "o2.png"))
    with pytest.raises(ValueError, match=r"overlaps are \(3, 2\) but there are 2 predictions"):
        viz.plot_overlaps(np.array([1, 2]), np.array([1, 3]), np.array([0.9, 0.8]), overlaps, NAMES)


def test_draw_boxes(tmp_path):
    image, boxes, masks, _, _ = _scene(7)
    fig = viz.draw_boxes(image, boxes=boxes, refined_boxes=boxes + 3, masks=masks,
                         captions=["a", "b", "c"], visibilities=[0, 1, 2], title="anchors",
                         save_path=str(tmp_path / "b1.png"))
    ax = fig.axes[0]
    assert ax.get_title() == "anchors" and [t.get_text() for t in ax.texts] == ["a", "b", "c"]
    styles = [p.get_linestyle() for p in ax.patches if p.get_facecolor()[3] == 0][:2]
    assert styles[0] in (":", "dotted")  # visibility 0 is dotted
    viz.draw_boxes(image, refined_boxes=boxes, save_path=str(tmp_path / "b2.png"))
    assert _differ(_png(tmp_path / "b1.png"), _png(tmp_path / "b2.png"))
    with pytest.raises(ValueError, match="give boxes or refined_boxes"):
        viz.draw_boxes(image)
    with pytest.raises(ValueError, match="visibility of box 0 is 5"):
        viz.draw_boxes(image, boxes=boxes, visibilities=[5, 1, 1])
    plt.close("all")


# --------------------------------------------------------------------------- tables

def test_display_table_text_and_html(tmp_path, capsys):
    table = [["NAME", "SHAPE"], ["conv1/kernel<span style='color:red'>*** dead?</span>", "(3, 3)"]]
    text = viz.display_table(table, save_path=str(tmp_path / "t.html"))
    printed = capsys.readouterr().out
    assert printed.strip() == text and "span" not in text and "*** dead?" in text
    assert text.splitlines()[0].startswith("NAME ")
    saved = (tmp_path / "t.html").read_text()
    assert saved.startswith("<table>") and "<td>(3, 3)</td>" in saved
    viz.display_table(table, save_path=str(tmp_path / "t.txt"))
    assert (tmp_path / "t.txt").read_text() == text + "\n"


def test_display_weight_stats_on_keras3_model(capsys):
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv1")(inp)
    x = keras.layers.Conv2D(2, 1, name="dead_conv", kernel_initializer="zeros")(x)
    x = keras.layers.Reshape((1, 36, 2))(x)
    x = keras.layers.TimeDistributed(keras.layers.Dense(3, name="td_dense"), name="mrcnn_td")(x)
    model = keras.Model(inp, x)

    class Wrapper:  # MaskRCNN-like: weights live on .keras_model
        keras_model = model

    rows = viz.display_weight_stats(Wrapper())
    printed = capsys.readouterr().out
    names = [r[0] for r in rows[1:]]
    assert rows[0] == ["WEIGHT NAME", "SHAPE", "MIN", "MAX", "STD"]
    assert len(rows) == 1 + 6  # 3 layers x (kernel, bias)
    assert names[0] == "conv1/kernel" and rows[1][1] == "(3, 3, 3, 4)"
    assert names[2] == "dead_conv/kernel *** dead?" and names[3] == "dead_conv/bias"
    # TimeDistributed layers are opened; the path names wrapper and inner layer.
    assert names[4:] == ["mrcnn_td/td_dense/kernel", "mrcnn_td/td_dense/bias"]
    kernel = model.get_layer("conv1").get_weights()[0]
    assert rows[1][2] == f"{kernel.min():+.4f}" and rows[1][4] == f"{kernel.std():+.4f}"
    assert "dead_conv/kernel" in printed and "*** dead?" in printed


# --------------------------------------------------------------------------- real COCO images

@pytest.fixture(scope="module")
def coco_mini():
    from pycocotools.coco import COCO

    root = os.path.join(DATA, "coco_val2017_mini")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(os.path.join(root, "annotations.json"))
    with open(os.path.join(root, "annotations.json")) as f:
        cats = json.load(f)["categories"]
    names = ["BG"] + [c["name"] for c in sorted(cats, key=lambda c: c["id"])]
    internal = {c["id"]: i + 1 for i, c in enumerate(sorted(cats, key=lambda c: c["id"]))}
    return root, coco, names, internal


@pytest.mark.parametrize("image_id", [128372, 464689])
def test_display_instances_on_coco_images(coco_mini, image_id):
    root, coco, names, internal = coco_mini
    info = coco.imgs[image_id]
    image = mpimg.imread(os.path.join(root, "images", info["file_name"]))
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
    masks = np.stack([coco.annToMask(a).astype(bool) for a in anns], -1)
    boxes = np.array([[a["bbox"][1], a["bbox"][0], a["bbox"][1] + a["bbox"][3],
                       a["bbox"][0] + a["bbox"][2]] for a in anns])
    ids = np.array([internal[a["category_id"]] for a in anns])
    os.makedirs(VIS_DIR, exist_ok=True)
    path = os.path.join(VIS_DIR, f"coco_{image_id}_gt.png")
    fig = viz.display_instances(image, boxes, masks, ids, names, figsize=(10, 8),
                                title=f"COCO {image_id} ground truth", save_path=path)
    assert [t.get_text() for t in fig.axes[0].texts] == [names[i] for i in ids]
    rendered = _png(path)
    plain = os.path.join(VIS_DIR, f"coco_{image_id}_nomask.png")
    viz.display_instances(image, boxes, masks, ids, names, figsize=(10, 8), show_mask=False,
                          show_bbox=False, title=f"COCO {image_id} ground truth", save_path=plain)
    assert _differ(rendered, _png(plain))


def test_plot_precision_recall_from_dataset_evaluation(tmp_path):
    from mrcnn.evaluation import voc

    image, boxes, masks, ids, scores = _scene(8)
    gt = (boxes, ids, masks)
    pred = {"rois": boxes, "class_ids": ids, "scores": scores, "masks": masks}
    miss = {"rois": boxes[:1], "class_ids": ids[:1], "scores": scores[:1], "masks": masks[..., :1]}
    ev = voc.evaluate_dataset([(gt, pred), (gt, miss)], iou_thresholds=[0.5])
    precisions, recalls = ev.curves["all"]
    fig = viz.plot_precision_recall(ev.class_mAP, precisions, recalls, title="pooled",
                                    save_path=str(tmp_path / "pr.png"))
    assert fig.axes[0].get_title() == "pooled"
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_ydata(), precisions)
    assert recalls[-2] == pytest.approx(4 / 6)  # 4 of the 6 GT instances found


def test_display_backend_shows_once_and_returns_none(monkeypatch, tmp_path):
    """With a backend that can display (e.g. Jupyter inline) the functions act like
    Matterport's: show the figures they create, leave a caller's ax alone, return None."""
    shown = []
    monkeypatch.setattr(viz, "_can_show", lambda: True)
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(plt.gcf()))
    image, boxes, masks, ids, scores = _scene(9)
    assert viz.display_instances(image, boxes, masks, ids, NAMES, scores, figsize=(3, 3),
                                 save_path=str(tmp_path / "s.png")) is None
    assert len(shown) == 1 and _png(tmp_path / "s.png").size
    fig, ax = plt.subplots(1)
    assert viz.display_instances(image, boxes, masks, ids, NAMES, ax=ax) is None
    assert len(shown) == 1  # the caller owns that figure
    assert viz.plot_precision_recall(0.5, [1, 0.5], [0.5, 1]) is None and len(shown) == 2
    plt.close("all")
