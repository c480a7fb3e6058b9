"""VOC-style (all-point interpolated) average precision for instance masks.

The per-image functions keep Matterport's ``utils.py`` names, arguments and
results bit for bit (``compute_matches``, ``compute_ap``, ``compute_ap_range``,
``compute_recall``, ``trim_zeros``). On top of them, :func:`evaluate_dataset`
pools detections over many images and reports per-class AP, mAP over a range of
IoU thresholds and precision/recall curves, and :func:`evaluate_model` feeds it
from a model and a dataset. ``trim_zeros`` is re-exported from ``mrcnn.core.boxes``.

Conventions: boxes are pixel ``(y1, x1, y2, x2)`` with ``y2``/``x2`` exclusive;
masks are ``[H, W, N]`` (bool or float, thresholded at 0.5); class ids are the
model's internal ids (0 = background).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from mrcnn.core.boxes import compute_overlaps, trim_zeros
from mrcnn.core.masks import compute_overlaps_masks

__all__ = [
    "trim_zeros", "compute_matches", "compute_ap", "compute_ap_range", "compute_recall",
    "ImageResult", "DatasetEvaluation", "evaluate_dataset", "evaluate_model",
    "DEFAULT_IOU_THRESHOLDS",
]

# Matterport's COCO-style range: 0.50, 0.55, ..., 0.95 (built with arange, so
# the values carry arange's float rounding exactly as the reference does).
DEFAULT_IOU_THRESHOLDS = np.arange(0.5, 1.0, 0.05)


# ---------------------------------------------------------------------------
# Matterport per-image metrics
# ---------------------------------------------------------------------------

def _check_counts(name: str, boxes: np.ndarray, class_ids: np.ndarray, masks: np.ndarray,
                  scores: Optional[np.ndarray] = None) -> None:
    n = boxes.shape[0]
    if boxes.ndim != 2 or boxes.shape[-1] != 4:
        raise ValueError(f"{name}_boxes must be [N, 4] (y1, x1, y2, x2), got shape {boxes.shape}")
    if masks.ndim != 3:
        raise ValueError(f"{name}_masks must be [H, W, N], got shape {masks.shape}")
    if len(class_ids) < n or masks.shape[-1] < n or (scores is not None and len(scores) < n):
        raise ValueError(
            f"{name}: {n} boxes but {len(class_ids)} class ids, {masks.shape[-1]} masks"
            + ("" if scores is None else f", {len(scores)} scores"))


def compute_matches(gt_boxes: np.ndarray, gt_class_ids: np.ndarray, gt_masks: np.ndarray,
                    pred_boxes: np.ndarray, pred_class_ids: np.ndarray, pred_scores: np.ndarray,
                    pred_masks: np.ndarray, iou_threshold: float = 0.5,
                    score_threshold: float = 0.0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Greedily match predictions to ground truth by **mask** IoU.

    gt_boxes [G, 4], gt_class_ids [G], gt_masks [H, W, G]; pred_* likewise with
    pred_scores [P]. All-zero box rows are treated as padding and dropped.
    Predictions are visited from the highest score down; each takes the
    unmatched ground-truth instance of the same class with the highest IoU,
    provided IoU >= ``iou_threshold``. ``score_threshold`` drops candidate
    pairs whose IoU is below it (Matterport's naming).

    Returns ``(gt_match [G], pred_match [P], overlaps [P, G])``: the index of
    the matched partner or -1, and the IoU matrix with predictions in score order.
    """
    gt_boxes, gt_class_ids, gt_masks = map(np.asarray, (gt_boxes, gt_class_ids, gt_masks))
    pred_boxes, pred_class_ids = np.asarray(pred_boxes), np.asarray(pred_class_ids)
    pred_scores, pred_masks = np.asarray(pred_scores), np.asarray(pred_masks)
    _check_counts("gt", gt_boxes, gt_class_ids, gt_masks)
    _check_counts("pred", pred_boxes, pred_class_ids, pred_masks, pred_scores)
    gt_boxes = trim_zeros(gt_boxes)
    gt_masks = gt_masks[..., :gt_boxes.shape[0]]
    pred_boxes = trim_zeros(pred_boxes)
    pred_scores = pred_scores[:pred_boxes.shape[0]]

    # Descending score order; reversing argsort (not a stable sort) keeps
    # Matterport's order among tied scores.
    order = np.argsort(pred_scores)[::-1]
    pred_boxes = pred_boxes[order]
    pred_class_ids = pred_class_ids[order]
    pred_masks = pred_masks[..., order]

    overlaps = compute_overlaps_masks(pred_masks, gt_masks)
    gt_match, pred_match = _greedy_match(overlaps, gt_class_ids, pred_class_ids,
                                         iou_threshold, score_threshold)
    return gt_match, pred_match, overlaps


def _greedy_match(overlaps: np.ndarray, gt_class_ids: np.ndarray, pred_class_ids: np.ndarray,
                  iou_threshold: float, score_threshold: float = 0.0) -> Tuple[np.ndarray, np.ndarray]:
    """Matching on a precomputed IoU matrix [P, G] whose rows are in score order.

    Split from :func:`compute_matches` so several thresholds can reuse one
    (costly) mask-overlap computation.
    """
    pred_match = -1 * np.ones([overlaps.shape[0]])
    gt_match = -1 * np.ones([overlaps.shape[1]])
    for i in range(overlaps.shape[0]):
        j = _best_partner(overlaps[i], gt_match, gt_class_ids, pred_class_ids[i],
                          iou_threshold, score_threshold)
        if j is not None:
            gt_match[j] = i
            pred_match[i] = j
    return gt_match, pred_match


def _best_partner(ious: np.ndarray, gt_match: np.ndarray, gt_class_ids: np.ndarray,
                  class_id: int, iou_threshold: float, score_threshold: float) -> Optional[int]:
    """Index of the ground truth one prediction matches, or None.

    Candidates are walked in descending IoU; the walk stops at the first
    unmatched candidate below ``iou_threshold`` even if its class differs,
    which is how Matterport's loop behaves.
    """
    candidates = np.argsort(ious)[::-1]
    too_low = np.where(ious[candidates] < score_threshold)[0]
    if too_low.size:
        candidates = candidates[:too_low[0]]
    for j in candidates:
        if gt_match[j] > -1:
            continue
        if ious[j] < iou_threshold:
            return None
        if class_id == gt_class_ids[j]:
            return int(j)
    return None


def _ap_from_matches(pred_match: np.ndarray, num_gt: int) -> Tuple[float, np.ndarray, np.ndarray]:
    """All-point interpolated AP from score-ordered match flags.

    Returns ``(ap, precisions, recalls)`` padded with the sentinels
    (precision 0 at both ends, recall 0 at the start and 1 at the end).
    """
    hits = np.cumsum(pred_match > -1)
    precisions = hits / (np.arange(len(pred_match)) + 1)
    # float32 here mirrors Matterport, so AP values agree to the last bit.
    recalls = hits.astype(np.float32) / num_gt
    precisions = np.concatenate([[0], precisions, [0]])
    recalls = np.concatenate([[0], recalls, [1]])
    # Precision envelope: the best precision at any higher recall.
    precisions = np.maximum.accumulate(precisions[::-1])[::-1]
    steps = np.where(recalls[:-1] != recalls[1:])[0] + 1
    ap = np.sum((recalls[steps] - recalls[steps - 1]) * precisions[steps])
    return ap, precisions, recalls


def compute_ap(gt_boxes: np.ndarray, gt_class_ids: np.ndarray, gt_masks: np.ndarray,
               pred_boxes: np.ndarray, pred_class_ids: np.ndarray, pred_scores: np.ndarray,
               pred_masks: np.ndarray,
               iou_threshold: float = 0.5) -> Tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Average precision of one image at one mask-IoU threshold (Pascal VOC, all points).

    Arguments as :func:`compute_matches`. Returns ``(mAP, precisions, recalls,
    overlaps)``; precisions/recalls have ``P + 2`` entries (sentinels included),
    overlaps is [P, G] in score order. With no ground truth the recall divides
    by zero as in Matterport (NaN/inf, with a numpy warning).
    """
    gt_match, pred_match, overlaps = compute_matches(
        gt_boxes, gt_class_ids, gt_masks, pred_boxes, pred_class_ids, pred_scores, pred_masks,
        iou_threshold)
    ap, precisions, recalls = _ap_from_matches(pred_match, len(gt_match))
    return ap, precisions, recalls, overlaps


def compute_ap_range(gt_box: np.ndarray, gt_class_id: np.ndarray, gt_mask: np.ndarray,
                     pred_box: np.ndarray, pred_class_id: np.ndarray, pred_score: np.ndarray,
                     pred_mask: np.ndarray, iou_thresholds: Optional[Sequence[float]] = None,
                     verbose: int = 1) -> float:
    """Mean of :func:`compute_ap` over IoU thresholds (default 0.50:0.95:0.05).

    Unlike Matterport, a NumPy array of thresholds is accepted.
    """
    if iou_thresholds is None:
        iou_thresholds = DEFAULT_IOU_THRESHOLDS
    iou_thresholds = list(iou_thresholds)
    if not iou_thresholds:
        raise ValueError("iou_thresholds is empty")
    aps = []
    for t in iou_thresholds:
        ap = compute_ap(gt_box, gt_class_id, gt_mask, pred_box, pred_class_id, pred_score,
                        pred_mask, iou_threshold=t)[0]
        if verbose:
            print(f"AP @{t:.2f}:\t {ap:.3f}")
        aps.append(ap)
    mean_ap = np.array(aps).mean()
    if verbose:
        print(f"AP @{iou_thresholds[0]:.2f}-{iou_thresholds[-1]:.2f}:\t {mean_ap:.3f}")
    return mean_ap


def compute_recall(pred_boxes: np.ndarray, gt_boxes: np.ndarray,
                   iou: float) -> Tuple[float, np.ndarray]:
    """Fraction of ground-truth boxes covered by some prediction with **box** IoU >= ``iou``.

    pred_boxes [P, 4], gt_boxes [G, 4], pixel (y1, x1, y2, x2). Returns
    ``(recall, positive_ids)`` where positive_ids are the predictions whose
    best IoU reaches the threshold. Each prediction counts only for its best
    ground truth.
    """
    pred_boxes, gt_boxes = np.asarray(pred_boxes), np.asarray(gt_boxes)
    if gt_boxes.shape[0] == 0:
        raise ValueError("compute_recall: no ground-truth boxes, recall is undefined")
    if pred_boxes.shape[0] == 0:
        return 0.0, np.zeros((0,), dtype=np.int64)
    overlaps = compute_overlaps(pred_boxes, gt_boxes)
    best_iou = np.max(overlaps, axis=1)
    best_gt = np.argmax(overlaps, axis=1)
    positive_ids = np.where(best_iou >= iou)[0]
    recall = len(set(best_gt[positive_ids])) / gt_boxes.shape[0]
    return recall, positive_ids


# ---------------------------------------------------------------------------
# Dataset-level evaluation
# ---------------------------------------------------------------------------

@dataclass
class ImageResult:
    """Ground truth and detections of one image (pixel boxes, [H, W, N] masks).

    Ground truth with ``gt_class_ids`` <= 0 is removed before matching
    (Matterport marks COCO crowds with negative ids), so a detection on a crowd
    region counts as a false positive here; use the COCO evaluator for crowd-aware
    scores. ``image_id`` is only used in error messages and reports.
    """
    gt_boxes: np.ndarray
    gt_class_ids: np.ndarray
    gt_masks: np.ndarray
    pred_boxes: np.ndarray
    pred_class_ids: np.ndarray
    pred_scores: np.ndarray
    pred_masks: np.ndarray
    image_id: Any = None

    @classmethod
    def from_any(cls, item: Any, index: int) -> "ImageResult":
        """Accept an ImageResult, a mapping with the field names, or a ``(gt, pred)`` pair.

        In a pair, ``gt`` is ``(boxes, class_ids, masks)`` or a mapping with
        ``boxes``/``class_ids``/``masks`` and ``pred`` is ``(rois, class_ids,
        scores, masks)`` or ``model.detect``'s dict (``rois``, ``class_ids``,
        ``scores``, ``masks``).
        """
        if isinstance(item, ImageResult):
            return item
        if isinstance(item, Mapping):
            return cls(**item)
        if isinstance(item, (tuple, list)) and len(item) in (2, 3):
            gt, pred = item[0], item[1]
            image_id = item[2] if len(item) == 3 else index
            gb, gc, gm = _unpack(gt, ("boxes", "class_ids", "masks"), "ground truth", image_id)
            pb, pc, ps, pm = _unpack(pred, ("rois", "class_ids", "scores", "masks"),
                                     "detections", image_id)
            return cls(gb, gc, gm, pb, pc, ps, pm, image_id)
        raise TypeError(f"image {index}: expected ImageResult, mapping or (gt, pred) pair, "
                        f"got {type(item).__name__}")


def _unpack(obj: Any, keys: Tuple[str, ...], what: str, image_id: Any) -> Tuple[np.ndarray, ...]:
    if isinstance(obj, Mapping):
        alt = {"rois": "boxes"}
        try:
            return tuple(np.asarray(obj[k] if k in obj else obj[alt[k]]) for k in keys)
        except KeyError as e:
            raise ValueError(f"image {image_id}: {what} lacks key {e}; need {keys}") from None
    if len(obj) != len(keys):
        raise ValueError(f"image {image_id}: {what} must have {len(keys)} items {keys}, got {len(obj)}")
    return tuple(np.asarray(v) for v in obj)


@dataclass
class DatasetEvaluation:
    """Result of :func:`evaluate_dataset`.

    mAP: mean over images of the per-image AP (Matterport's notebook metric) at
        ``iou_thresholds[0]``.
    mAP_range: that mean averaged over all thresholds (0.50:0.95 by default).
    ap_per_threshold: {threshold: mean per-image AP}.
    class_ap: {class_id: AP} with detections pooled across images at the first
        threshold; ``class_ap_range`` is the same averaged over thresholds.
    curves: {class_id: (precisions, recalls)} pooled at the first threshold,
        plus key ``"all"`` for all classes pooled — ready for
        ``visualize.plot_precision_recall``.
    """
    iou_thresholds: List[float]
    mAP: float
    mAP_range: float
    ap_per_threshold: Dict[float, float]
    image_aps: Dict[Any, float]
    class_ap: Dict[int, float]
    class_ap_range: Dict[int, float]
    curves: Dict[Any, Tuple[np.ndarray, np.ndarray]] = field(repr=False)
    num_images: int = 0
    gt_counts: Dict[int, int] = field(default_factory=dict)
    confusion: Optional[np.ndarray] = field(default=None, repr=False)
    confusion_score: float = 0.5

    def mAP_over_classes(self, min_instances: int = 1) -> float:
        """Mean pooled ``class_ap`` over the classes with at least ``min_instances``
        ground-truth instances (rare classes make a noisy AP)."""
        values = [ap for c, ap in self.class_ap.items()
                  if self.gt_counts.get(c, 0) >= min_instances and not np.isnan(ap)]
        return float(np.mean(values)) if values else float("nan")

    def confusion_table(self, class_names: Optional[Sequence[str]] = None) -> str:
        """:attr:`confusion` as text: rows ground truth, columns predictions.

        Row and column 0 ("none") hold the ground truth no detection matched and the
        detections that matched no ground truth.
        """
        if self.confusion is None:
            return "(no confusion matrix)"
        n = self.confusion.shape[0]
        names = ["none"] + [(class_names[c] if class_names is not None and c < len(class_names)
                             else str(c)) for c in range(1, n)]
        width = max(6, max(len(x) for x in names) + 1)
        corner = "gt \\ pred"
        head = f"{corner:<{width}}" + "".join(f"{x:>{width}}" for x in names)
        rows = [f"{names[i]:<{width}}" + "".join(f"{int(v):>{width}}" for v in self.confusion[i])
                for i in range(n)]
        return "\n".join([f"confusion of detections scored >= {self.confusion_score} "
                          f"(IoU >= {self.iou_thresholds[0]:.2f}, any class)", head] + rows)

    @property
    def class_mAP(self) -> float:
        """Mean of ``class_ap`` over classes that have ground truth (VOC's dataset mAP)."""
        values = [v for v in self.class_ap.values() if not np.isnan(v)]
        return float(np.mean(values)) if values else float("nan")

    def summary(self, class_names: Optional[Sequence[str]] = None) -> str:
        """A printable table of the numbers."""
        t0 = self.iou_thresholds[0]
        lines = [f"images: {self.num_images}",
                 f"mAP@{t0:.2f} (mean of per-image AP): {self.mAP:.4f}",
                 f"mAP@{self.iou_thresholds[0]:.2f}:{self.iou_thresholds[-1]:.2f}: {self.mAP_range:.4f}",
                 f"class mAP@{t0:.2f} (pooled over images): {self.class_mAP:.4f}",
                 f"{'class':<20} AP@{t0:.2f}  AP@range  ground truth"]
        for cid in sorted(self.class_ap):
            name = class_names[cid] if class_names is not None and cid < len(class_names) else str(cid)
            lines.append(f"{name:<20} {self.class_ap[cid]:.4f}   {self.class_ap_range[cid]:.4f}"
                         f"   ({self.gt_counts.get(cid, 0)} instances)")
        if self.confusion is not None:
            lines.append(self.confusion_table(class_names))
        return "\n".join(lines)


def _valid_rows(r: ImageResult) -> ImageResult:
    """Drop zero-padded rows and crowd/background ground truth; check shapes."""
    where = f"image {r.image_id}"
    gb, gc, gm = np.asarray(r.gt_boxes), np.asarray(r.gt_class_ids), np.asarray(r.gt_masks)
    pb, pc = np.asarray(r.pred_boxes), np.asarray(r.pred_class_ids)
    ps, pm = np.asarray(r.pred_scores), np.asarray(r.pred_masks)
    gb = gb.reshape(-1, 4) if gb.size == 0 else gb
    pb = pb.reshape(-1, 4) if pb.size == 0 else pb
    for name, b, c, m in (("gt", gb, gc, gm), ("pred", pb, pc, pm)):
        if b.ndim != 2 or b.shape[1] != 4:
            raise ValueError(f"{where}: {name} boxes must be [N, 4], got {b.shape}")
        if m.ndim != 3:
            raise ValueError(f"{where}: {name} masks must be [H, W, N], got {m.shape}")
        if not (len(c) == b.shape[0] == m.shape[-1]):
            raise ValueError(f"{where}: {name} has {b.shape[0]} boxes, {len(c)} class ids, "
                             f"{m.shape[-1]} masks")
    if len(ps) != pb.shape[0]:
        raise ValueError(f"{where}: {pb.shape[0]} predicted boxes but {len(ps)} scores")
    if gm.shape[:2] != pm.shape[:2] and gm.shape[-1] and pm.shape[-1]:
        raise ValueError(f"{where}: gt masks are {gm.shape[:2]} but predicted masks are {pm.shape[:2]}")
    keep_g = (gc > 0) & np.any(gb != 0, axis=1)
    keep_p = np.any(pb != 0, axis=1)
    return ImageResult(gb[keep_g], gc[keep_g], gm[..., keep_g], pb[keep_p], pc[keep_p],
                       ps[keep_p], pm[..., keep_p], r.image_id)


def _confusion_pairs(overlaps: np.ndarray, order: np.ndarray, gt_class_ids: np.ndarray,
                     pred_class_ids: np.ndarray, scores: np.ndarray, iou_threshold: float,
                     score_threshold: float) -> List[Tuple[int, int]]:
    """(gt class, predicted class) pairs of one image, matched whatever their classes.

    Detections scored at least ``score_threshold`` take, in score order, the unmatched
    ground truth they overlap most (mask IoU >= ``iou_threshold``). Unmatched ground truth
    gives ``(class, 0)``; unmatched detections ``(0, class)``. ``overlaps`` is
    ``[num_pred, num_gt]`` with rows in ``order`` (descending score).
    """
    taken = np.zeros(len(gt_class_ids), bool)
    pairs = []
    for k, i in enumerate(order):
        if scores[i] < score_threshold:
            continue
        ious = np.where(taken, -1.0, overlaps[k]) if len(gt_class_ids) else np.zeros(0)
        j = int(np.argmax(ious)) if len(ious) else -1
        if j >= 0 and ious[j] >= iou_threshold:
            taken[j] = True
            pairs.append((int(gt_class_ids[j]), int(pred_class_ids[i])))
        else:
            pairs.append((0, int(pred_class_ids[i])))
    pairs.extend((int(c), 0) for c in gt_class_ids[~taken])
    return pairs


def _pooled_ap(records: List[Tuple[float, bool]], num_gt: int) -> Tuple[float, np.ndarray, np.ndarray]:
    """AP from (score, is_match) over many images; NaN when there is no ground truth."""
    if num_gt == 0:
        return float("nan"), np.zeros(0), np.zeros(0)
    records = sorted(records, key=lambda r: -r[0])
    flags = np.array([0 if hit else -1 for _, hit in records], dtype=np.float64)
    ap, precisions, recalls = _ap_from_matches(flags, num_gt)
    return float(ap), precisions, recalls


def evaluate_dataset(results: Iterable[Any], iou_thresholds: Optional[Sequence[float]] = None,
                     verbose: int = 0, num_classes: Optional[int] = None,
                     confusion_score: float = 0.5) -> DatasetEvaluation:
    """Mask AP over many images.

    results: iterable of per-image items accepted by :meth:`ImageResult.from_any`
        (``(gt, pred)`` pairs, mappings or ImageResult).
    iou_thresholds: thresholds to evaluate; default 0.50:0.95:0.05. The first
        one is the "headline" threshold (``mAP``, ``class_ap``, ``curves``).

    Two views are reported: Matterport's mean of per-image APs (images without
    ground truth are skipped, as AP is undefined there), and per-class AP with
    detections pooled across images (VOC style), whose mean over classes is a
    dataset-level mAP.

    Also a confusion matrix (:attr:`DatasetEvaluation.confusion`, ``[K, K]`` with ``K``
    ``num_classes`` or the largest class id seen + 1): detections scored at least
    ``confusion_score`` matched to ground truth at the first threshold whatever the class,
    rows ground-truth class, columns predicted class, index 0 for "none".
    """
    thresholds = [float(t) for t in (DEFAULT_IOU_THRESHOLDS if iou_thresholds is None
                                     else iou_thresholds)]
    if not thresholds:
        raise ValueError("iou_thresholds is empty")
    per_thr_image_aps: Dict[float, List[float]] = {t: [] for t in thresholds}
    image_aps: Dict[Any, float] = {}
    pooled: Dict[float, Dict[int, List[Tuple[float, bool]]]] = {t: {} for t in thresholds}
    gt_counts: Dict[int, int] = {}
    pairs: List[Tuple[int, int]] = []
    n_images = 0
    for index, item in enumerate(results):
        r = _valid_rows(ImageResult.from_any(item, index))
        n_images += 1
        for c in r.gt_class_ids:
            gt_counts[int(c)] = gt_counts.get(int(c), 0) + 1
        # Same score order and overlaps as compute_matches, computed once
        # for all thresholds.
        order = np.argsort(r.pred_scores)[::-1]
        overlaps = compute_overlaps_masks(r.pred_masks[..., order], r.gt_masks)
        pairs.extend(_confusion_pairs(overlaps, order, r.gt_class_ids, r.pred_class_ids,
                                      r.pred_scores, thresholds[0], confusion_score))
        for t in thresholds:
            _, pred_match = _greedy_match(overlaps, r.gt_class_ids, r.pred_class_ids[order], t)
            for k, i in enumerate(order):
                pooled[t].setdefault(int(r.pred_class_ids[i]), []).append(
                    (float(r.pred_scores[i]), bool(pred_match[k] > -1)))
            if len(r.gt_class_ids):
                ap = float(_ap_from_matches(pred_match, len(r.gt_class_ids))[0])
                per_thr_image_aps[t].append(ap)
                if t == thresholds[0]:
                    image_aps[r.image_id if r.image_id is not None else index] = ap
        if verbose:
            key = r.image_id if r.image_id is not None else index
            print(f"image {key}: AP@{thresholds[0]:.2f} = {image_aps.get(key, float('nan')):.3f}")

    ap_per_threshold = {t: (float(np.mean(v)) if v else float("nan"))
                        for t, v in per_thr_image_aps.items()}
    classes = sorted(set(gt_counts) | {c for t in thresholds for c in pooled[t]})
    class_ap: Dict[int, float] = {}
    class_ap_range: Dict[int, float] = {}
    curves: Dict[Any, Tuple[np.ndarray, np.ndarray]] = {}
    for c in classes:
        aps = []
        for t in thresholds:
            ap, prec, rec = _pooled_ap(pooled[t].get(c, []), gt_counts.get(c, 0))
            aps.append(ap)
            if t == thresholds[0]:
                curves[c] = (prec, rec)
        class_ap[c] = aps[0]
        class_ap_range[c] = float(np.mean(aps))
    all_records = [rec for recs in pooled[thresholds[0]].values() for rec in recs]
    _, prec, rec = _pooled_ap(all_records, sum(gt_counts.values()))
    curves["all"] = (prec, rec)
    size = max([num_classes or 0] + [max(p) + 1 for p in pairs] + [1])
    confusion = np.zeros((size, size), np.int64)
    for g, p in pairs:
        confusion[g, p] += 1
    return DatasetEvaluation(
        iou_thresholds=thresholds,
        mAP=ap_per_threshold[thresholds[0]],
        mAP_range=float(np.mean(list(ap_per_threshold.values()))),
        ap_per_threshold=ap_per_threshold, image_aps=image_aps,
        class_ap=class_ap, class_ap_range=class_ap_range, curves=curves, num_images=n_images,
        gt_counts=gt_counts, confusion=confusion, confusion_score=float(confusion_score))


def iter_model_results(model: Any, dataset: Any, config: Any,
                       image_ids: Optional[Iterable[int]] = None) -> Iterable[ImageResult]:
    """Yield :class:`ImageResult` for each image: ground truth from
    ``load_image_gt`` (resized like the model input) and ``model.detect`` on that image."""
    from mrcnn.data.loader import load_image_gt  # lazy: pulls in the data pipeline

    ids = dataset.image_ids if image_ids is None else image_ids
    for image_id in ids:
        image, _, gt_class_ids, gt_boxes, gt_masks = load_image_gt(
            dataset, config, image_id, use_mini_mask=False)
        det = model.detect([image], verbose=0)[0]
        yield ImageResult(gt_boxes, gt_class_ids, gt_masks, det["rois"], det["class_ids"],
                          det["scores"], det["masks"], image_id)


def evaluate_model(model: Any, dataset: Any, config: Any,
                   image_ids: Optional[Iterable[int]] = None,
                   iou_thresholds: Optional[Sequence[float]] = None,
                   verbose: int = 0) -> DatasetEvaluation:
    """Run ``model.detect`` over ``dataset`` images and evaluate mask AP.

    model: an inference-mode ``MaskRCNN`` (``BATCH_SIZE`` 1 is enough: images
    are detected one at a time). image_ids: internal dataset ids, default all.
    """
    return evaluate_dataset(iter_model_results(model, dataset, config, image_ids),
                            iou_thresholds=iou_thresholds, verbose=verbose,
                            num_classes=getattr(config, "NUM_CLASSES", None))
