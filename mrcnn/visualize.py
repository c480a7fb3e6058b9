"""Display and plotting helpers with Matterport's ``mrcnn.visualize`` names and arguments.

Every drawing function works inline in a notebook and headless (Agg), and
takes an optional ``save_path`` that writes a PNG.

* With a backend that can display (Jupyter inline, Qt, Tk...), the functions
  behave as Matterport's: a figure they create is shown with ``plt.show()``,
  one drawn on a given ``ax`` is left to the caller, and they return None
  (returning the figure would make Jupyter draw it a second time).
* Under a non-interactive backend such as Agg nothing can be shown: a figure
  the function created is saved (if asked), released from pyplot, and
  returned as a ``Figure`` for further inspection or saving; with a given
  ``ax`` its figure is returned and left open.

``draw_box`` and ``apply_mask`` return the image array, as in Matterport.

Conventions: images are ``[H, W, 3]`` (any numeric dtype, shown as uint8),
boxes are pixel ``(y1, x1, y2, x2)`` with exclusive ``y2``/``x2``, full-image
masks are ``[H, W, N]``, class ids index ``class_names`` (0 = background).

Importing this module needs neither IPython nor a display, and leaves
``sys.path`` alone.
"""
from __future__ import annotations

import colorsys
import html
import itertools
import random
import re
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import matplotlib
import matplotlib.pyplot as plt
from matplotlib import lines, patches
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure

Color = Tuple[float, ...]

__all__ = [
    "display_images", "random_colors", "apply_mask", "display_instances", "display_differences",
    "draw_rois", "draw_box", "display_top_masks", "plot_precision_recall", "plot_overlaps",
    "draw_boxes", "display_table", "display_weight_stats", "get_ax",
]


# ---------------------------------------------------------------------------
# Figure plumbing
# ---------------------------------------------------------------------------

def _non_interactive_backends() -> set:
    try:  # matplotlib >= 3.9
        from matplotlib.backends import BackendFilter, backend_registry
        names = backend_registry.list_builtin(BackendFilter.NON_INTERACTIVE)
    except ImportError:
        names = matplotlib.rcsetup.non_interactive_bk
    return {b.lower() for b in names}


def _can_show() -> bool:
    """False for file-only backends (Agg, PDF, SVG...), where plt.show() only warns."""
    return matplotlib.get_backend().lower() not in _non_interactive_backends()


def get_ax(rows: int = 1, cols: int = 1, size: float = 16) -> Any:
    """A new ``rows x cols`` grid of axes, ``size`` inches per cell (as in Matterport's notebooks)."""
    _, ax = plt.subplots(rows, cols, figsize=(size * cols, size * rows))
    return ax


def _new_axes(ax: Optional[Any], figsize: Tuple[float, float]) -> Tuple[Any, bool]:
    """Use ``ax`` if given, else make a figure. Returns (axes, created)."""
    if ax is not None:
        return ax, False
    _, ax = plt.subplots(1, figsize=figsize)
    return ax, True


def _finish(fig: Figure, created: bool, save_path: Optional[str]) -> Optional[Figure]:
    """Save if asked; then show (display backends) or hand back the figure (headless)."""
    if save_path:
        fig.savefig(save_path, bbox_inches="tight")
    if _can_show():
        if created:
            plt.show()
        return None
    if created:
        # Release pyplot's reference so long headless loops do not pile up
        # open figures; the Figure object stays usable.
        plt.close(fig)
    return fig


def _check_image(image: np.ndarray, who: str) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim not in (2, 3):
        raise ValueError(f"{who}: image must be [H, W] or [H, W, C], got shape {image.shape}")
    return image


# ---------------------------------------------------------------------------
# Colours and masks
# ---------------------------------------------------------------------------

def random_colors(N: int, bright: bool = True, seed: Optional[int] = None) -> List[Color]:
    """N distinct RGB colours (components in 0..1): evenly spaced hues, shuffled.

    ``seed`` makes the shuffle repeatable (Matterport's is always random).
    """
    brightness = 1.0 if bright else 0.7
    colors = [colorsys.hsv_to_rgb(i / max(N, 1), 1, brightness) for i in range(N)]
    (random.Random(seed) if seed is not None else random).shuffle(colors)
    return colors


def apply_mask(image: np.ndarray, mask: np.ndarray, color: Sequence[float],
               alpha: float = 0.5) -> np.ndarray:
    """Blend ``color`` (RGB in 0..1) into ``image`` [H, W, 3] where ``mask`` [H, W] == 1.

    Modifies ``image`` in place and returns it (Matterport semantics).
    """
    if image.shape[:2] != mask.shape[:2]:
        raise ValueError(f"apply_mask: image is {image.shape[:2]} but mask is {mask.shape[:2]}")
    where = mask == 1
    for c in range(3):
        channel = image[:, :, c]
        channel[where] = channel[where] * (1 - alpha) + alpha * color[c] * 255
    return image


def _contours(mask: np.ndarray) -> List[np.ndarray]:
    """Outline polygons of a binary mask as (x, y) vertex arrays."""
    from skimage.measure import find_contours

    # A one-pixel frame closes contours of masks that touch the border.
    padded = np.zeros((mask.shape[0] + 2, mask.shape[1] + 2), dtype=np.uint8)
    padded[1:-1, 1:-1] = mask
    return [np.fliplr(v) - 1 for v in find_contours(padded, 0.5)]


# ---------------------------------------------------------------------------
# Image grids
# ---------------------------------------------------------------------------

def display_images(images: Sequence[np.ndarray], titles: Optional[Sequence[str]] = None,
                   cols: int = 4, cmap: Any = None, norm: Any = None, interpolation: Any = None,
                   save_path: Optional[str] = None) -> Optional[Figure]:
    """Show images in a grid, ``cols`` per row, each cast to uint8, with optional titles."""
    if len(images) == 0:
        raise ValueError("display_images: no images given")
    titles = list(titles) if titles is not None else [""] * len(images)
    rows = (len(images) + cols - 1) // cols
    fig = plt.figure(figsize=(14, max(14 * rows // cols, 2)))
    for i, (image, title) in enumerate(zip(images, titles), start=1):
        ax = fig.add_subplot(rows, cols, i)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
        ax.imshow(np.asarray(image).astype(np.uint8), cmap=cmap, norm=norm,
                  interpolation=interpolation)
    return _finish(fig, True, save_path)


# ---------------------------------------------------------------------------
# Instances
# ---------------------------------------------------------------------------

def _check_class_ids(class_ids: Sequence[int], class_names: Sequence[str], who: str) -> None:
    ids = np.asarray(class_ids).astype(int)
    bad = np.where((ids < 0) | (ids >= len(class_names)))[0]
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{who}: instance {i}: class id {ids[i]} is outside class_names "
                         f"(0..{len(class_names) - 1})")


def _caption(i: int, class_ids: np.ndarray, class_names: Sequence[str],
             scores: Optional[np.ndarray], captions: Optional[Sequence[str]]) -> str:
    if captions is not None:
        return captions[i]
    label = class_names[int(class_ids[i])]
    score = scores[i] if scores is not None else None
    return f"{label} {score:.3f}" if score else label


def display_instances(image: np.ndarray, boxes: np.ndarray, masks: Optional[np.ndarray],
                      class_ids: np.ndarray, class_names: Sequence[str],
                      scores: Optional[np.ndarray] = None, title: str = "",
                      figsize: Tuple[float, float] = (16, 16), ax: Optional[Any] = None,
                      show_mask: bool = True, show_bbox: bool = True,
                      colors: Optional[Sequence[Color]] = None,
                      captions: Optional[Sequence[str]] = None,
                      save_path: Optional[str] = None) -> Optional[Figure]:
    """Draw instances over an image: dashed boxes, "label score" captions, mask tint and outline.

    image [H, W, 3]; boxes [N, (y1, x1, y2, x2)] pixels; masks [H, W, N] (or
    None); class_ids [N]; scores [N] or None; colors: one RGB per instance
    (default random); captions: one string per instance, replacing the default.
    All-zero boxes are skipped. With no instances it prints Matterport's
    "*** No instances to display ***" and still shows the image.
    """
    image = _check_image(image, "display_instances")
    boxes = np.asarray(boxes).reshape(-1, 4)
    n = boxes.shape[0]
    if n == 0:
        print("\n*** No instances to display *** \n")
    else:
        counts = {"class_ids": len(class_ids)}
        if masks is not None:
            counts["masks"] = np.shape(masks)[-1]
        if scores is not None:
            counts["scores"] = len(scores)
        if captions is not None:
            counts["captions"] = len(captions)
        if colors is not None:
            counts["colors"] = len(colors)
        bad = {k: v for k, v in counts.items() if v != n}
        if bad:
            raise ValueError(f"display_instances: {n} boxes but " +
                             ", ".join(f"{v} {k}" for k, v in bad.items()))
        if masks is not None and np.shape(masks)[:2] != image.shape[:2]:
            raise ValueError(f"display_instances: masks are {np.shape(masks)[:2]} "
                             f"but the image is {image.shape[:2]}")
        if captions is None:
            _check_class_ids(class_ids, class_names, "display_instances")
    ax, created = _new_axes(ax, figsize)
    colors = list(colors) if colors is not None else random_colors(n)
    height, width = image.shape[:2]
    ax.set_ylim(height + 10, -10)
    ax.set_xlim(-10, width + 10)
    ax.axis("off")
    ax.set_title(title)

    canvas = (image if image.ndim == 3 else np.stack([image] * 3, -1)).astype(np.uint32).copy()
    for i in range(n):
        if not np.any(boxes[i]):
            continue  # zero padding (e.g. an instance lost in cropping)
        color = colors[i]
        y1, x1, y2, x2 = boxes[i]
        if show_bbox:
            ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=2, alpha=0.7,
                                           linestyle="dashed", edgecolor=color, facecolor="none"))
        ax.text(x1, y1 + 8, _caption(i, np.asarray(class_ids), class_names, scores, captions),
                color="w", size=11, backgroundcolor="none")
        if masks is None:
            continue
        mask = masks[:, :, i]
        if show_mask:
            canvas = apply_mask(canvas, mask, color)
        for verts in _contours(mask):
            ax.add_patch(patches.Polygon(verts, facecolor="none", edgecolor=color))
    ax.imshow(canvas.astype(np.uint8))
    return _finish(ax.figure, created, save_path)


def display_differences(image: np.ndarray, gt_box: np.ndarray, gt_class_id: np.ndarray,
                        gt_mask: np.ndarray, pred_box: np.ndarray, pred_class_id: np.ndarray,
                        pred_score: np.ndarray, pred_mask: np.ndarray, class_names: Sequence[str],
                        title: str = "", ax: Optional[Any] = None, show_mask: bool = True,
                        show_box: bool = True, iou_threshold: float = 0.5,
                        score_threshold: float = 0.5,
                        save_path: Optional[str] = None) -> Optional[Figure]:
    """Ground truth (green) and detections (red) on one image; detections captioned
    "score / IoU" where IoU is with the matched ground truth (or the best overlap
    if unmatched), using :func:`mrcnn.evaluation.voc.compute_matches`.
    """
    from mrcnn.evaluation.voc import compute_matches

    # compute_matches reorders predictions by score; sort first so every
    # caption sits on the prediction it describes.
    order = np.argsort(pred_score)[::-1]
    pred_box, pred_class_id = np.asarray(pred_box)[order], np.asarray(pred_class_id)[order]
    pred_score, pred_mask = np.asarray(pred_score)[order], np.asarray(pred_mask)[..., order]
    gt_match, pred_match, overlaps = compute_matches(
        gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score, pred_mask,
        iou_threshold=iou_threshold, score_threshold=score_threshold)
    n_gt, n_pred = len(gt_match), len(pred_match)
    colors = [(0, 1, 0, 0.8)] * n_gt + [(1, 0, 0, 1)] * n_pred
    captions = [""] * n_gt
    for i in range(n_pred):
        if pred_match[i] > -1:
            iou = overlaps[i, int(pred_match[i])]
        else:
            iou = overlaps[i].max() if overlaps.shape[1] else 0.0
        captions.append(f"{pred_score[i]:.2f} / {iou:.2f}")
    return display_instances(
        image,
        np.concatenate([np.asarray(gt_box)[:n_gt].reshape(-1, 4), pred_box[:n_pred].reshape(-1, 4)]),
        np.concatenate([np.asarray(gt_mask)[..., :n_gt], pred_mask[..., :n_pred]], axis=-1),
        np.concatenate([np.asarray(gt_class_id)[:n_gt], pred_class_id[:n_pred]]),
        class_names,
        np.concatenate([np.zeros(n_gt), pred_score[:n_pred]]),
        ax=ax, show_bbox=show_box, show_mask=show_mask, colors=colors, captions=captions,
        title=title or "Ground Truth and Detections\n GT=green, pred=red, captions: score/IoU",
        save_path=save_path)


def draw_rois(image: np.ndarray, rois: np.ndarray, refined_rois: np.ndarray, mask: np.ndarray,
              class_ids: np.ndarray, class_names: Sequence[str], limit: int = 10,
              save_path: Optional[str] = None) -> Optional[Figure]:
    """Show up to ``limit`` randomly chosen ROIs: dashed proposal boxes, solid refined
    boxes for positives (joined to the proposal by a line), class label and mask.

    rois, refined_rois: [N, (y1, x1, y2, x2)] pixels; mask: [N, h, w] ROI masks
    (e.g. 28x28 targets), pasted into their ROI; class_ids [N] (0 = negative).
    Prints the positive/negative counts and ratio.
    """
    from mrcnn.core.masks import unmold_mask

    image = _check_image(image, "draw_rois")
    rois = np.asarray(rois).reshape(-1, 4)
    class_ids = np.asarray(class_ids)
    ids = np.arange(rois.shape[0], dtype=np.int32)
    if rois.shape[0] > limit:
        ids = np.random.choice(ids, limit, replace=False)
    fig, ax = plt.subplots(1, figsize=(12, 12))
    if rois.shape[0] > limit:
        ax.set_title(f"Showing {len(ids)} random ROIs out of {rois.shape[0]}")
    else:
        ax.set_title(f"{len(ids)} ROIs")
    ax.set_ylim(image.shape[0] + 20, -20)
    ax.set_xlim(-50, image.shape[1] + 20)
    ax.axis("off")
    canvas = image.copy()
    for roi_id in ids:
        color = np.random.rand(3)
        class_id = int(class_ids[roi_id])
        ry1, rx1, ry2, rx2 = rois[roi_id]
        ax.add_patch(patches.Rectangle((rx1, ry1), rx2 - rx1, ry2 - ry1, linewidth=2,
                                       edgecolor=color if class_id else "gray",
                                       facecolor="none", linestyle="dashed"))
        if not class_id:
            continue
        y1, x1, y2, x2 = refined_rois[roi_id]
        ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=2,
                                       edgecolor=color, facecolor="none"))
        ax.add_line(lines.Line2D([x1, rx1], [y1, ry1], color=color))
        ax.text(rx1, ry1 + 8, class_names[class_id], color="w", size=11, backgroundcolor="none")
        full = unmold_mask(mask[roi_id], rois[roi_id][:4].astype(np.int32), image.shape)
        canvas = apply_mask(canvas, full, color)
    ax.imshow(canvas.astype(np.uint8))
    positives = int(np.sum(class_ids > 0))
    print("Positive ROIs: ", positives)
    print("Negative ROIs: ", int(np.sum(class_ids == 0)))
    print(f"Positive Ratio: {positives / max(len(class_ids), 1):.2f}")
    return _finish(fig, True, save_path)


def draw_box(image: np.ndarray, box: Sequence[int], color: Any) -> np.ndarray:
    """Burn a 2-pixel rectangle outline ``box`` (y1, x1, y2, x2) into ``image`` in place."""
    y1, x1, y2, x2 = (int(v) for v in box)
    image[y1:y1 + 2, x1:x2] = color
    image[y2:y2 + 2, x1:x2] = color
    image[y1:y2, x1:x1 + 2] = color
    image[y1:y2, x2:x2 + 2] = color
    return image


def display_top_masks(image: np.ndarray, mask: np.ndarray, class_ids: np.ndarray,
                      class_names: Sequence[str], limit: int = 4,
                      save_path: Optional[str] = None) -> Optional[Figure]:
    """The image followed by the ``limit`` classes covering the most mask area; each
    panel shows that class's instances (numbered shades) in one map."""
    image = _check_image(image, "display_top_masks")
    class_ids = np.asarray(class_ids)
    if mask.shape[-1] != len(class_ids):
        raise ValueError(f"display_top_masks: {mask.shape[-1]} masks but {len(class_ids)} class ids")
    panels = [image]
    titles = [f"H x W={image.shape[0]}x{image.shape[1]}"]
    unique = np.unique(class_ids)
    areas = [np.sum(mask[:, :, class_ids == c]) for c in unique]
    top = [int(c) for c, a in sorted(zip(unique, areas), key=lambda r: r[1], reverse=True) if a > 0]
    for i in range(limit):
        class_id = top[i] if i < len(top) else -1
        m = mask[:, :, class_ids == class_id]
        # Number the instances 1..k so overlapping ones stay distinguishable.
        panels.append(np.sum(m * np.arange(1, m.shape[-1] + 1), -1))
        titles.append(class_names[class_id] if class_id != -1 else "-")
    return display_images(panels, titles=titles, cols=limit + 1, cmap="Blues_r",
                          save_path=save_path)


# ---------------------------------------------------------------------------
# Evaluation plots
# ---------------------------------------------------------------------------

def plot_precision_recall(AP: float, precisions: np.ndarray, recalls: np.ndarray,
                          ax: Optional[Any] = None, title: Optional[str] = None,
                          save_path: Optional[str] = None) -> Optional[Figure]:
    """Precision-recall curve (as returned by ``compute_ap`` or ``evaluate_dataset``)."""
    if len(precisions) != len(recalls):
        raise ValueError(f"plot_precision_recall: {len(precisions)} precisions but "
                         f"{len(recalls)} recalls")
    ax, created = _new_axes(ax, (6.4, 4.8))
    ax.set_title(title or f"Precision-Recall Curve. AP@50 = {AP:.3f}")
    ax.set_ylim(0, 1.1)
    ax.set_xlim(0, 1.1)
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.plot(recalls, precisions)
    return _finish(ax.figure, created, save_path)


def plot_overlaps(gt_class_ids: np.ndarray, pred_class_ids: np.ndarray, pred_scores: np.ndarray,
                  overlaps: np.ndarray, class_names: Sequence[str], threshold: float = 0.5,
                  save_path: Optional[str] = None) -> Optional[Figure]:
    """Grid of IoUs between predictions (rows) and ground truth (columns), cells above
    ``threshold`` labelled "match" (same class) or "wrong".

    Background ids (0) are dropped from both id lists, as in Matterport.
    """
    gt_class_ids = np.asarray(gt_class_ids)
    pred_class_ids = np.asarray(pred_class_ids)
    gt_class_ids = gt_class_ids[gt_class_ids != 0]
    pred_class_ids = pred_class_ids[pred_class_ids != 0]
    overlaps = np.asarray(overlaps)
    if overlaps.shape != (len(pred_class_ids), len(gt_class_ids)):
        raise ValueError(f"plot_overlaps: overlaps are {overlaps.shape} but there are "
                         f"{len(pred_class_ids)} predictions and {len(gt_class_ids)} GT instances")
    fig = plt.figure(figsize=(12, 10))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(overlaps, interpolation="nearest", cmap=plt.cm.Blues)
    ax.set_yticks(np.arange(len(pred_class_ids)),
                  [f"{class_names[int(c)]} ({pred_scores[i]:.2f})" for i, c in enumerate(pred_class_ids)])
    ax.set_xticks(np.arange(len(gt_class_ids)), [class_names[int(c)] for c in gt_class_ids],
                  rotation=90)
    half = overlaps.max() / 2.0 if overlaps.size else 0.0
    for i, j in itertools.product(range(overlaps.shape[0]), range(overlaps.shape[1])):
        v = overlaps[i, j]
        text = ("match" if gt_class_ids[j] == pred_class_ids[i] else "wrong") if v > threshold else ""
        color = "white" if v > half else "black" if v > 0 else "grey"
        ax.text(j, i, f"{v:.3f}\n{text}", horizontalalignment="center",
                verticalalignment="center", fontsize=9, color=color)
    ax.set_xlabel("Ground Truth")
    ax.set_ylabel("Predictions")
    fig.tight_layout()
    return _finish(fig, True, save_path)


def draw_boxes(image: np.ndarray, boxes: Optional[np.ndarray] = None,
               refined_boxes: Optional[np.ndarray] = None, masks: Optional[np.ndarray] = None,
               captions: Optional[Sequence[str]] = None,
               visibilities: Optional[Sequence[int]] = None, title: str = "",
               ax: Optional[Any] = None, save_path: Optional[str] = None) -> Optional[Figure]:
    """Draw anchors/proposals and their refinements.

    boxes, refined_boxes: [N, (y1, x1, y2, x2)] pixels (either may be None);
    masks [H, W, N]; captions: N strings; visibilities: per box 0 (grey dotted,
    faint), 1 (colour dotted, the default) or 2 (colour solid).
    """
    if boxes is None and refined_boxes is None:
        raise ValueError("draw_boxes: give boxes or refined_boxes")
    image = _check_image(image, "draw_boxes")
    n = (boxes if boxes is not None else refined_boxes).shape[0]
    if visibilities is not None:
        bad = [i for i, v in enumerate(visibilities) if int(v) not in (0, 1, 2)]
        if bad:
            raise ValueError(f"draw_boxes: visibility of box {bad[0]} is {visibilities[bad[0]]}, "
                             "expected 0, 1 or 2")
    ax, created = _new_axes(ax, (12, 12))
    colors = random_colors(n)
    margin = image.shape[0] // 10
    ax.set_ylim(image.shape[0] + margin, -margin)
    ax.set_xlim(-margin, image.shape[1] + margin)
    ax.axis("off")
    ax.set_title(title)
    canvas = (image if image.ndim == 3 else np.stack([image] * 3, -1)).astype(np.uint32).copy()
    styles = {0: ("gray", "dotted", 0.5), 1: (None, "dotted", 1.0), 2: (None, "solid", 1.0)}
    for i in range(n):
        visibility = int(visibilities[i]) if visibilities is not None else 1
        color, style, alpha = styles[visibility]
        color = to_rgb(color or colors[i])
        if boxes is not None:
            if not np.any(boxes[i]):
                continue
            y1, x1, y2, x2 = boxes[i]
            ax.add_patch(patches.Rectangle((x1, y1), x2 - x1, y2 - y1, linewidth=2, alpha=alpha,
                                           linestyle=style, edgecolor=color, facecolor="none"))
        if refined_boxes is not None and visibility > 0:
            ry1, rx1, ry2, rx2 = refined_boxes[i].astype(np.int32)
            ax.add_patch(patches.Rectangle((rx1, ry1), rx2 - rx1, ry2 - ry1, linewidth=2,
                                           edgecolor=color, facecolor="none"))
            if boxes is not None:
                ax.add_line(lines.Line2D([x1, rx1], [y1, ry1], color=color))
        if captions is not None:
            cy, cx = (ry1, rx1) if refined_boxes is not None and visibility > 0 else (y1, x1)
            ax.text(cx, cy, captions[i], size=11, verticalalignment="top", color="w",
                    backgroundcolor="none",
                    bbox={"facecolor": color, "alpha": 0.5, "pad": 2, "edgecolor": "none"})
        if masks is not None:
            canvas = apply_mask(canvas, masks[:, :, i], color)
            for verts in _contours(masks[:, :, i]):
                ax.add_patch(patches.Polygon(verts, facecolor="none", edgecolor=color))
    ax.imshow(canvas.astype(np.uint8))
    return _finish(ax.figure, created, save_path)


# ---------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------

_TAG = re.compile(r"<[^>]+>")


def _table_html(table: Sequence[Sequence[Any]]) -> str:
    rows = []
    for row in table:
        # Cells may carry Matterport's <span> alerts, so they are not escaped.
        cells = "".join(f"<td>{c}</td>" for c in row)
        rows.append(f"<tr>{cells}</tr>")
    return "<table>" + "".join(rows) + "</table>"


def _table_text(table: Sequence[Sequence[Any]]) -> str:
    plain = [[html.unescape(_TAG.sub("", str(c))) for c in row] for row in table]
    if not plain:
        return ""
    widths = [max(len(r[k]) if k < len(r) else 0 for r in plain) for k in range(max(map(len, plain)))]
    return "\n".join("  ".join(c.ljust(widths[k]) for k, c in enumerate(r)).rstrip() for r in plain)


def display_table(table: Sequence[Sequence[Any]], save_path: Optional[str] = None) -> str:
    """Show a list of rows as an HTML table in IPython/Jupyter, else print it as text.

    save_path: also write the table (``.html``/``.htm`` as HTML, anything else as text).
    Returns the text rendering.
    """
    text = _table_text(table)
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
        in_notebook = get_ipython() is not None
    except ImportError:
        in_notebook = False
    if in_notebook:
        display(HTML(_table_html(table)))
    else:
        print(text)
    if save_path:
        with open(save_path, "w", encoding="utf-8") as f:
            f.write(_table_html(table) if save_path.lower().endswith((".html", ".htm")) else text + "\n")
    return text


def _weighted_layers(model: Any) -> List[Any]:
    """Layers owning weights: Matterport's ``get_trainable_layers`` when present,
    else the layers of ``model.keras_model`` (or ``model``) with wrappers opened."""
    if hasattr(model, "get_trainable_layers"):
        return list(model.get_trainable_layers())
    keras_model = getattr(model, "keras_model", model)
    if not hasattr(keras_model, "layers"):
        raise TypeError(f"display_weight_stats: {type(model).__name__} has no Keras layers")
    found: List[Any] = []

    def visit(layer: Any) -> None:
        inner = getattr(layer, "layer", None)  # TimeDistributed and similar wrappers
        if inner is not None and not hasattr(layer, "layers"):
            visit(inner)
        elif hasattr(layer, "layers") and layer is not keras_model:
            for sub in layer.layers:
                visit(sub)
        elif layer.weights:
            found.append(layer)

    for layer in keras_model.layers:
        visit(layer)
    return found


def display_weight_stats(model: Any, save_path: Optional[str] = None) -> List[List[str]]:
    """Table of every weight's name, shape, min, max and std, flagging constant
    tensors ("dead?", biases excepted) and values beyond +-1000 ("Overflow?").

    model: a ``MaskRCNN`` wrapper (``keras_model``) or a Keras model.
    Returns the rows (header first), without the HTML alert markup.
    """
    table = [["WEIGHT NAME", "SHAPE", "MIN", "MAX", "STD"]]
    for layer in _weighted_layers(model):
        for var in layer.weights:
            w = np.asarray(var.numpy() if hasattr(var, "numpy") else var)
            # Keras 3 names are short ("kernel"); the path says which layer.
            name = getattr(var, "path", None) or var.name
            alert = ""
            if w.size and w.min() == w.max() and not name.split("/")[-1].startswith("bias"):
                alert += "<span style='color:red'>*** dead?</span>"
            if w.size and (abs(w.min()) > 1000 or abs(w.max()) > 1000):
                alert += "<span style='color:red'>*** Overflow?</span>"
            stats = (w.min(), w.max(), w.std()) if w.size else (np.nan,) * 3
            table.append([name + alert, str(w.shape), f"{stats[0]:+9.4f}", f"{stats[1]:+10.4f}",
                          f"{stats[2]:+9.4f}"])
    display_table(table, save_path=save_path)
    return [[html.unescape(_TAG.sub(" ", c)).strip() for c in row] for row in table]
