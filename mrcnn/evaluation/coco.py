"""COCO evaluation of boxes and masks through pycocotools.

Detections in this package's convention (pixel ``(y1, x1, y2, x2)`` boxes with
exclusive ``y2``/``x2``, ``[H, W, N]`` bool masks, internal class ids) are
turned into COCO result dicts (``[x, y, w, h]`` boxes, RLE masks, source
category ids) and scored with ``COCOeval`` for ``"bbox"`` and ``"segm"``.
Crowd regions need nothing special here: they are ``iscrowd: 1`` in the
ground-truth JSON and ``COCOeval`` ignores detections that fall on them.

``build_coco_results`` keeps the arguments of Matterport's
``samples/coco/coco.py`` helper; ``evaluate_coco`` takes a ground-truth
``COCO`` and a results list; ``evaluate_model_coco`` runs a model.
"""
from __future__ import annotations

import contextlib
import copy
import io
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

import numpy as np

__all__ = [
    "STAT_NAMES", "encode_masks", "boxes_to_xywh", "build_coco_results", "evaluate_coco",
    "evaluate_model_coco", "empty_stats",
]

# Order of COCOeval.stats for the default (non-keypoint) parameters.
STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl",
              "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

CategoryMap = Union[None, Mapping[int, int], Callable[[int], int], Any]


def _mask_api():
    # pycocotools is an optional dependency of the package; import on use.
    try:
        from pycocotools import mask as mask_api
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("COCO evaluation needs pycocotools: pip install pycocotools") from e
    return mask_api


def encode_masks(masks: np.ndarray) -> List[Dict[str, Any]]:
    """RLE-encode instance masks.

    masks: [H, W, N] bool (or 0/1) array. Returns N dicts ``{"size": [H, W],
    "counts": str}``; ``counts`` is decoded to text so the results are JSON-ready.
    """
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [H, W, N], got shape {masks.shape}")
    if masks.shape[-1] == 0:
        return []
    # pycocotools wants column-major uint8 of shape [H, W, N].
    rles = _mask_api().encode(np.asfortranarray((masks > 0.5) if masks.dtype != bool else masks,
                                                dtype=np.uint8))
    for rle in rles:
        rle["counts"] = rle["counts"].decode("ascii")
    return rles


def boxes_to_xywh(boxes: np.ndarray) -> np.ndarray:
    """Pixel ``(y1, x1, y2, x2)`` boxes [N, 4] -> COCO ``(x, y, width, height)`` [N, 4] float."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.stack([boxes[:, 1], boxes[:, 0], boxes[:, 3] - boxes[:, 1],
                     boxes[:, 2] - boxes[:, 0]], axis=1)


def _category_mapper(dataset: CategoryMap, source: str) -> Callable[[int], int]:
    """A function internal class id -> source (COCO) category id."""
    if dataset is None:
        return int
    if hasattr(dataset, "get_source_class_id"):
        return lambda c: int(dataset.get_source_class_id(int(c), source))
    if isinstance(dataset, Mapping):
        def from_map(c: int) -> int:
            try:
                return int(dataset[int(c)])
            except KeyError:
                raise ValueError(f"class id {int(c)} has no COCO category in the mapping") from None
        return from_map
    if callable(dataset):
        return lambda c: int(dataset(int(c)))
    raise TypeError("dataset must be a Dataset (get_source_class_id), a {class_id: category_id} "
                    f"mapping, a callable or None; got {type(dataset).__name__}")


def build_coco_results(dataset: CategoryMap, image_ids: Sequence[int], rois: np.ndarray,
                       class_ids: np.ndarray, scores: np.ndarray,
                       masks: Optional[np.ndarray] = None,
                       source: str = "coco") -> List[Dict[str, Any]]:
    """COCO result dicts for the detections of one image (Matterport's arguments).

    dataset: maps internal class ids to COCO category ids — a ``Dataset``
        (``get_source_class_id(class_id, source)``), a mapping, a callable,
        or None when the ids already are COCO ids.
    image_ids: the COCO image id(s) the detections belong to; as in
        Matterport, every detection is attributed to each id given (pass one).
    rois: [N, (y1, x1, y2, x2)] pixel boxes; class_ids [N]; scores [N];
    masks: [H, W, N] full-image masks, or None for box-only results.

    Returns a list with one dict per detection (``image_id``, ``category_id``,
    ``bbox`` [x, y, w, h], ``score`` and, with masks, ``segmentation`` RLE).
    """
    rois = np.asarray(rois).reshape(-1, 4)
    class_ids, scores = np.asarray(class_ids).reshape(-1), np.asarray(scores).reshape(-1)
    n = rois.shape[0]
    if len(class_ids) != n or len(scores) != n or (masks is not None and np.shape(masks)[-1] != n):
        raise ValueError(
            f"image {list(image_ids)}: {n} rois but {len(class_ids)} class ids, {len(scores)} scores"
            + ("" if masks is None else f", {np.shape(masks)[-1]} masks"))
    to_category = _category_mapper(dataset, source)
    xywh = boxes_to_xywh(rois)
    rles = encode_masks(masks) if masks is not None else [None] * n
    results = []
    for image_id in image_ids:
        for i in range(n):
            entry = {"image_id": int(image_id), "category_id": to_category(class_ids[i]),
                     "bbox": [float(v) for v in xywh[i]], "score": float(scores[i])}
            if rles[i] is not None:
                entry["segmentation"] = dict(rles[i])
            results.append(entry)
    return results


def empty_stats() -> Dict[str, float]:
    """Stats dict with every value -1 (COCO's "no ground truth" marker)."""
    return {k: -1.0 for k in STAT_NAMES}


def _load_results(coco_gt: Any, results: List[Dict[str, Any]], iou_type: str) -> Any:
    """``coco_gt.loadRes`` on a private copy, with a fix for empty result lists."""
    from pycocotools.coco import COCO

    results = copy.deepcopy(results)
    if iou_type == "segm":
        # With a "bbox" present loadRes takes the box area as the instance
        # area, which would bin masks into small/medium/large by their box.
        for r in results:
            r.pop("bbox", None)
            if "segmentation" not in r:
                raise ValueError(f"image {r.get('image_id')}: a result has no 'segmentation'; "
                                 "segm evaluation needs masks")
    else:
        for r in results:
            r.pop("segmentation", None)
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            return coco_gt.loadRes(results)
    # loadRes cannot take an empty list; an empty detection set scores 0.
    empty = COCO()
    empty.dataset = {"images": list(coco_gt.dataset.get("images", [])),
                     "categories": copy.deepcopy(coco_gt.dataset.get("categories", [])),
                     "annotations": []}
    with contextlib.redirect_stdout(io.StringIO()):
        empty.createIndex()
    return empty


def evaluate_coco(coco_gt: Any, results: List[Dict[str, Any]], iou_type: str = "bbox",
                  image_ids: Optional[Iterable[int]] = None,
                  verbose: bool = True) -> Dict[str, float]:
    """Run COCOeval on ``results`` against ``coco_gt``.

    coco_gt: ``pycocotools.coco.COCO`` with the ground truth (crowds as
        ``iscrowd: 1``). results: dicts as from :func:`build_coco_results`
        (not modified). iou_type: ``"bbox"`` or ``"segm"``.
    image_ids: COCO image ids to score; default every image in ``coco_gt``.
        Pass the images you ran detection on, or images you skipped count
        as misses.
    verbose: print COCOeval's summary table.

    Returns ``{"AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10",
    "AR100", "ARs", "ARm", "ARl"}`` as floats (-1 where COCO has no ground truth).
    """
    from pycocotools.cocoeval import COCOeval

    if iou_type not in ("bbox", "segm"):
        raise ValueError(f"iou_type must be 'bbox' or 'segm', got {iou_type!r}")
    if image_ids is None:
        image_ids = coco_gt.getImgIds()
    image_ids = [int(i) for i in image_ids]
    unknown = sorted(set(image_ids) - set(coco_gt.getImgIds()))
    if unknown:
        raise ValueError(f"image ids {unknown[:10]} are not in the ground-truth COCO")
    stray = sorted({int(r["image_id"]) for r in results} - set(coco_gt.getImgIds()))
    if stray:
        raise ValueError(f"results refer to image ids {stray[:10]} that are not in the ground truth")
    coco_dt = _load_results(coco_gt, results, iou_type)
    evaluator = COCOeval(coco_gt, coco_dt, iou_type)
    evaluator.params.imgIds = image_ids
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    if verbose:
        print(f"COCO {iou_type} evaluation on {len(image_ids)} images")
        print("\n".join(l for l in out.getvalue().splitlines() if l.startswith(" Average")))
    return {name: float(v) for name, v in zip(STAT_NAMES, evaluator.stats)}


def evaluate_model_coco(model: Any, dataset: Any, coco: Any,
                        iou_types: Sequence[str] = ("bbox", "segm"), limit: int = 0,
                        image_ids: Optional[Sequence[int]] = None, source: str = "coco",
                        verbose: bool = True) -> Dict[str, Dict[str, float]]:
    """Detect on dataset images and score the detections with COCOeval.

    model: inference ``MaskRCNN`` (``detect([image])`` -> dicts with rois,
        class_ids, scores, masks). dataset: a ``Dataset`` loaded from the
        same COCO json (``image_info[i]["id"]`` is the COCO image id,
        ``get_source_class_id`` maps classes back). coco: the ground-truth COCO.
    limit: evaluate only the first ``limit`` images (0 = all).
    image_ids: internal dataset image ids (default ``dataset.image_ids``).

    Returns ``{"bbox": stats, "segm": stats}`` (one key per ``iou_types`` entry).
    """
    from tqdm.auto import tqdm

    ids = list(dataset.image_ids if image_ids is None else image_ids)
    if limit:
        ids = ids[:limit]
    results: List[Dict[str, Any]] = []
    coco_ids = []
    start = time.time()
    for image_id in tqdm(ids, desc="detect", disable=not verbose):
        coco_id = dataset.image_info[image_id]["id"]
        image = dataset.load_image(image_id)
        r = model.detect([image], verbose=0)[0]
        if r["masks"].shape[:2] != image.shape[:2]:
            raise ValueError(f"image {image_id} (COCO id {coco_id}): masks are "
                             f"{r['masks'].shape[:2]} but the image is {image.shape[:2]}")
        coco_ids.append(coco_id)
        results.extend(build_coco_results(dataset, [coco_id], r["rois"], r["class_ids"],
                                          r["scores"], r["masks"].astype(np.uint8), source=source))
    elapsed = time.time() - start
    if verbose and ids:
        print(f"Prediction time: {elapsed:.1f} s, {elapsed / len(ids):.2f} s per image")
    return {t: evaluate_coco(coco, results, t, image_ids=coco_ids, verbose=verbose)
            for t in iou_types}
